"""A dry run of a freshly built decoder: two tokens through it, every part's output checked.

A factory whose module returns the wrong shape (or crashes) is caught here, at build time, and
named — not in the middle of training, as a broadcasting error deep inside another part.
"""

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from transformer_from_scratch.core.decoder import Decoder
from transformer_from_scratch.core.errors import ComponentError, TfsError
from transformer_from_scratch.core.registry import Entry

Expect = Callable[[Decoder, tuple[Any, ...]], tuple[int, ...]]

# The output shape each kind's contract promises, from the inputs it was called with.
EXPECTED: dict[str, Expect] = {
    "embedding": lambda d, a: (*a[0].shape, d.spec.d_model),
    "attention": lambda d, a: tuple(a[0].shape),
    "attention_kernel": lambda d, a: tuple(a[0].shape),
    "mlp": lambda d, a: tuple(a[0].shape),
    "norm": lambda d, a: tuple(a[0].shape),
    "block": lambda d, a: tuple(a[0].shape),
    "unembedding": lambda d, a: (*a[0].shape[:-1], d.spec.d_vocab),
}


def _who(entry: Entry) -> str:
    return f"{entry.id} (from {entry.provider})"


class _Watch:
    """Hooks on every part: a stack of the parts running, and a shape check on each output."""

    def __init__(self, decoder: Decoder) -> None:
        self.decoder, self.running, self.handles = decoder, [], []  # type: ignore[var-annotated]
        for entry, module in decoder.parts:
            if entry.kind in EXPECTED:
                self.handles.append(module.register_forward_pre_hook(self._enter(entry)))
                self.handles.append(module.register_forward_hook(self._leave(entry)))

    def _enter(self, entry: Entry) -> Callable[..., None]:
        return lambda module, args: self.running.append(entry)

    def _leave(self, entry: Entry) -> Callable[..., None]:
        def check(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            self.running.pop()
            expected = EXPECTED[entry.kind](self.decoder, args)
            shape = tuple(output.shape) if isinstance(output, Tensor) else None
            if shape != expected:
                raise ComponentError(
                    f"{_who(entry)} returned {shape if shape is not None else type(output)} "
                    f"where the {entry.kind} contract promises {expected} (dry run of a freshly "
                    "built decoder on two tokens); see `tfs list` for the contract"
                )

        return check

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def dry_run(decoder: Decoder) -> None:
    """Run two tokens through ``decoder``; raise :class:`ComponentError` naming a broken part."""
    parameter = next(iter(decoder.parameters()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    if device.type == "meta":
        return  # built without memory (to be sharded or loaded later): nothing can run yet
    tokens = torch.zeros(1, min(2, decoder.spec.n_ctx), dtype=torch.long, device=device)
    watch, training = _Watch(decoder), decoder.training
    try:
        with torch.no_grad():
            decoder.eval()(tokens)
    except TfsError:
        raise
    except Exception as exc:
        where = _who(watch.running[-1]) if watch.running else "the decoder"
        raise ComponentError(
            f"a dry run of the freshly built decoder on two tokens failed in {where}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    finally:
        watch.remove()
        decoder.train(training)
