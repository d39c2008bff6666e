"""Progress on the terminal, and the JSON-lines log (plus TensorBoard / W&B when asked)."""

import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from transformer_from_scratch.core.errors import TfsError
from transformer_from_scratch.core.files import write_atomically


class Throughput:
    """Training tokens per second, with evaluation, checkpoints and samples left out.

    ``recent`` covers the steps since the last :meth:`logged` (what the progress bar shows and
    what the log records at that step, so the two always agree); ``overall`` the whole run.
    """

    def __init__(self) -> None:
        self.window_tokens, self.window_seconds = 0, 0.0
        self.total_tokens, self.total_seconds = 0, 0.0

    def add(self, tokens: int, seconds: float) -> None:
        """One training step's tokens and the seconds it took."""
        self.window_tokens += tokens
        self.window_seconds += seconds
        self.total_tokens += tokens
        self.total_seconds += seconds

    @property
    def recent(self) -> float:
        """Tokens per second since the last log record."""
        return self.window_tokens / max(self.window_seconds, 1e-9)

    @property
    def overall(self) -> float:
        """Tokens per second over every step of this process's run."""
        return self.total_tokens / max(self.total_seconds, 1e-9)

    def logged(self) -> None:
        """Start a new window (after a log record took ``recent``)."""
        self.window_tokens, self.window_seconds = 0, 0.0


class Progress:
    """A one-line progress bar on a terminal; plain periodic lines elsewhere (CI logs)."""

    def __init__(
        self, total: int, start: int = 0, stream: io.TextIOBase | None = None, quiet: bool = False
    ) -> None:
        self.total, self.start = total, start
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.began = time.perf_counter()
        self.tty = self.stream.isatty()
        self.last_line = -1.0

    def update(self, step: int, loss: float, tokens_per_s: float) -> None:
        """Show step, loss, speed and time left."""
        if self.quiet:
            return
        done = step - self.start
        elapsed = time.perf_counter() - self.began
        eta = elapsed / max(done, 1) * (self.total - step)
        width = 24
        filled = int(width * step / self.total)
        bar = "#" * filled + "." * (width - filled)
        line = (
            f"[{bar}] step {step}/{self.total}  loss {loss:.4f}  "
            f"{tokens_per_s / 1000:.1f}k tok/s  ETA {_duration(eta)}"
        )
        if self.tty:
            self.stream.write("\r" + line)
        elif elapsed - self.last_line >= 10 or step == self.total:
            self.stream.write(line + "\n")
            self.last_line = elapsed
        self.stream.flush()

    def message(self, text: str) -> None:
        """A line that stays (validation results and the like)."""
        if self.quiet:
            return
        self.stream.write(("\r\033[K" if self.tty else "") + text + "\n")
        self.stream.flush()

    def warn(self, text: str) -> None:
        """A line that must be seen, even with ``--quiet`` (a spike, a recovered checkpoint)."""
        self.stream.write(("\r\033[K" if self.tty and not self.quiet else "") + text + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class RunLog:
    """Appends JSON records to ``log.jsonl``; mirrors scalars to TensorBoard / W&B if asked."""

    def __init__(
        self, path: Path, *, tensorboard: bool = False, wandb: bool = False, enabled: bool = True
    ) -> None:
        self.path = path
        self.enabled = enabled
        self.sinks: list[Any] = []
        if enabled and tensorboard:
            self.sinks.append(_tensorboard(path.parent))
        if enabled and wandb:
            self.sinks.append(_wandb(path.parent))

    def trim(self, last_step: int) -> int:
        """Drop records after ``last_step`` (a resumed run redoes them); how many were dropped."""
        if not self.enabled or not self.path.exists():
            return 0
        lines = self.path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if _step(line) <= last_step]
        if len(kept) < len(lines):
            write_atomically(self.path, "".join(f"{line}\n" for line in kept).encode())
        return len(lines) - len(kept)

    def write(self, record: dict[str, Any]) -> None:
        """Log one record (it must hold ``step``)."""
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        scalars = {k: v for k, v in record.items() if isinstance(v, int | float) and k != "step"}
        for sink in self.sinks:
            sink(record["step"], scalars)


def _step(line: str) -> float:
    try:
        return float(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return math.inf  # a torn last line from a killed run: dropped with what follows it


def _tensorboard(folder: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TfsError(
            "--tensorboard needs the tensorboard package: pip install tensorboard"
        ) from None
    writer = SummaryWriter(str(folder / "tensorboard"))

    def sink(step: int, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            writer.add_scalar(key, value, step)
        writer.flush()

    return sink


def _wandb(folder: Path) -> Any:
    try:
        import wandb
    except ImportError:
        raise TfsError("--wandb needs the wandb package: pip install wandb") from None
    run = wandb.init(project="transformer-from-scratch", dir=str(folder))

    def sink(step: int, scalars: dict[str, float]) -> None:
        run.log(scalars, step=step)

    return sink
