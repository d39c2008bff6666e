"""``tfs bench attention``: every attention kernel, across lengths, on time, FLOP/s and memory.

Each case is one kernel at one length, forward only or forward + backward. On CUDA cases run in
this process and memory is the allocator's peak; on the CPU each case runs in its own process
(``python -m transformer_from_scratch.bench.attention CASE_JSON``) so its resident-memory peak is
its own. A case that runs out of memory is reported as ``OOM``, not dropped.
"""

import json
import subprocess
import sys
from typing import Any

import attrs
import torch

from transformer_from_scratch.bench.flops import attention_flops
from transformer_from_scratch.bench.memory import cpu_method, peak_bytes
from transformer_from_scratch.bench.timing import Timing, measure
from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.plugins import default_registry
from transformer_from_scratch.core.registry import Registry

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _pairs(options: Any) -> tuple[tuple[str, Any], ...]:
    """Kernel options as sorted ``(name, value)`` pairs (hashable, JSON-able as lists)."""
    return tuple(sorted((str(k), v) for k, v in options))


@attrs.frozen
class Case:
    """One measurement: a kernel at a length, in a dtype on a device."""

    kernel: str
    length: int
    batch: int = 1
    heads: int = 8
    d_head: int = 64
    dtype: str = "float32"
    device: str = "cpu"
    backward: bool = False
    options: tuple[tuple[str, Any], ...] = attrs.field(default=(), converter=_pairs)

    @property
    def mode(self) -> str:
        """``fwd`` or ``fwd+bwd``."""
        return "fwd+bwd" if self.backward else "fwd"


@attrs.frozen
class Result:
    """A case's outcome: ``ok`` with numbers, ``OOM``, or ``error`` with the message."""

    case: Case
    status: str
    timing: Timing | None = None
    peak_bytes: int | None = None
    message: str = ""

    @property
    def tflops(self) -> float | None:
        """Achieved TFLOP/s (causal FLOPs, see ``bench.flops``)."""
        if self.timing is None:
            return None
        c = self.case
        return (
            attention_flops(c.batch, c.heads, c.length, c.d_head, c.backward)
            / self.timing.median
            / 1e12
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        data = {
            **attrs.asdict(self.case),
            "mode": self.case.mode,
            "status": self.status,
            "message": self.message,
            "peak_bytes": self.peak_bytes,
            "tflops": self.tflops,
        }
        if self.timing is not None:
            data |= {
                "median_s": self.timing.median,
                "q1_s": self.timing.low,
                "q3_s": self.timing.high,
                "repeats": self.timing.repeats,
            }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Result":
        """The inverse of :meth:`to_dict` (for re-plotting recorded results)."""
        fields = {f.name for f in attrs.fields(Case)}
        case = Case(**{k: v for k, v in data.items() if k in fields})
        timing = None
        if data.get("median_s") is not None:
            timing = Timing(data["median_s"], data["q1_s"], data["q3_s"], data["repeats"])
        return cls(case, data["status"], timing, data.get("peak_bytes"), data.get("message", ""))


def default_kernels(registry: Registry, device: str) -> list[str]:
    """Every kernel, less those declaring ``gpu`` (emulated, slow) when the device is no GPU."""
    return [
        entry.name
        for entry in registry.entries("attention_kernel")
        if device.startswith("cuda") or "gpu" not in entry.capabilities
    ]


def _inputs(case: Case) -> list[torch.Tensor]:
    device, dtype = torch.device(case.device), DTYPES[case.dtype]
    shape = (case.batch, case.heads, case.length, case.d_head)
    generator = torch.Generator(device=device).manual_seed(0)
    return [
        torch.randn(
            shape, device=device, dtype=dtype, generator=generator, requires_grad=case.backward
        )
        for _ in range(3)
    ]


def _call(case: Case) -> Any:
    dims = Dims(
        d_model=case.heads * case.d_head,
        n_layers=1,
        n_heads=case.heads,
        d_head=case.d_head,
        d_mlp=1,
        d_vocab=1,
        n_ctx=case.length,
        n_kv_heads=case.heads,
    )
    factory = default_registry().get("attention_kernel", case.kernel).factory
    kernel = factory(dims, **dict(case.options)).to(case.device)
    q, k, v = _inputs(case)
    positions = torch.arange(case.length, device=case.device)
    grad = torch.randn_like(q) if case.backward else None

    def run() -> None:
        out = kernel(q, k, v, query_positions=positions, key_positions=positions)
        if grad is not None:
            out.backward(grad)
            for x in (q, k, v):
                x.grad = None

    return run


def run_case(case: Case, repeats: int = 5, budget: float = 10.0) -> Result:
    """Measure ``case`` in this process."""
    device = torch.device(case.device)
    try:
        run = _call(case)
        memory = peak_bytes(run, device)
        timing = measure(run, device, warmup=1, repeats=repeats, budget=budget)
    except (torch.cuda.OutOfMemoryError, MemoryError) as err:
        return Result(case, "OOM", message=str(err).splitlines()[0])
    except RuntimeError as err:
        status = (
            "OOM"
            if "out of memory" in str(err).lower() or "can't allocate" in str(err)
            else "error"
        )
        return Result(case, status, message=str(err).splitlines()[0])
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return Result(case, "ok", timing, memory)


def run_isolated(
    case: Case, repeats: int = 5, budget: float = 10.0, timeout: float = 600
) -> Result:
    """Measure ``case`` in a fresh process (the CPU memory peak is then its own)."""
    payload = json.dumps({"case": attrs.asdict(case), "repeats": repeats, "budget": budget})
    try:
        done = subprocess.run(
            [sys.executable, "-m", "transformer_from_scratch.bench.attention", payload],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return Result(case, "error", message=f"took longer than {timeout:.0f} s")
    if done.returncode in (-9, 137):
        return Result(case, "OOM", message="the process was killed (out of memory)")
    if done.returncode != 0:
        return Result(case, "error", message=(done.stderr.strip().splitlines() or ["?"])[-1])
    return result_from_dict(json.loads(done.stdout.strip().splitlines()[-1]))


def result_from_dict(data: dict[str, Any]) -> Result:
    """Rebuild a :class:`Result` from :meth:`Result.to_dict`."""
    case = Case(**{f.name: data[f.name] for f in attrs.fields(Case)})
    timing = None
    if "median_s" in data:
        timing = Timing(data["median_s"], data["q1_s"], data["q3_s"], data["repeats"])
    return Result(case, data["status"], timing, data["peak_bytes"], data["message"])


def memory_method(device: str) -> str:
    """How peak memory is measured on ``device``."""
    return (
        "CUDA allocator peak (max_memory_allocated)" if device.startswith("cuda") else cpu_method()
    )


def main() -> None:
    """Entry point for one isolated case: prints its result as one JSON line."""
    payload = json.loads(sys.argv[1])
    case = Case(**payload["case"])
    torch.set_num_threads(torch.get_num_threads())
    print(json.dumps(run_case(case, payload["repeats"], payload["budget"]).to_dict()))


if __name__ == "__main__":
    main()
