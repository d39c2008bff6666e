"""How to feed each kind: random inputs of the contract's shapes, and the call that runs it.

A :class:`Probe` runs the module under test on a dict of inputs. Each input and the output
say which dimension is the batch (always 0) and which is position, so generic checks can
perturb one sample or one position and watch what changes.
"""

from collections.abc import Callable

import attrs
import torch
from torch import Tensor, nn

from transformer_from_scratch.conformance.compare import require_finite
from transformer_from_scratch.conformance.subject import Subject
from transformer_from_scratch.core.decoder import Decoder

Inputs = dict[str, Tensor]
Call = Callable[[Inputs], Tensor]
Shape = Callable[[int, int], tuple[int, ...]]


@attrs.frozen
class Probe:
    """The module under test (``owner``), what to run, and the layout of inputs and output."""

    decoder: Decoder
    owner: nn.Module
    call: Callable[[Inputs], Tensor]
    input_pos_dims: dict[str, int]
    output_pos_dim: int
    output_shape: Callable[[int, int], tuple[int, ...]]

    def inputs(self, batch: int, length: int, seed: int = 0) -> Inputs:
        """Seeded random inputs of ``batch`` samples and ``length`` positions."""
        generator = torch.Generator().manual_seed(seed)
        dims = self.decoder.spec.dims
        dtype = _dtype(self.decoder)
        made: Inputs = {}
        for name in self.input_pos_dims:
            if name == "tokens":
                made[name] = torch.randint(0, dims.d_vocab, (batch, length), generator=generator)
            elif name == "residual":
                made[name] = torch.randn(batch, length, dims.d_model, generator=generator)
            else:  # queries, keys, values
                made[name] = torch.randn(
                    batch, dims.n_heads, length, dims.d_head, generator=generator
                )
        device = _device(self.decoder)
        return {k: v.to(device) if k == "tokens" else v.to(device, dtype) for k, v in made.items()}

    def run(self, inputs: Inputs) -> Tensor:
        """Run the module under test; a non-finite output stops the check (see check_finite)."""
        return require_finite(self.call(inputs))


def _dtype(decoder: nn.Module) -> torch.dtype:
    for tensor in [*decoder.parameters(), *decoder.buffers()]:
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()


def _device(decoder: nn.Module) -> torch.device:
    for tensor in [*decoder.parameters(), *decoder.buffers()]:
        return tensor.device
    return torch.device("cpu")


def probe(subject: Subject, decoder: Decoder) -> Probe:
    """The probe for ``subject``'s kind, around the module it made inside ``decoder``."""
    module = subject.module(decoder)
    dims = decoder.spec.dims
    residual = {"residual": 1}
    stream = lambda b, p: (b, p, dims.d_model)  # noqa: E731
    logits = lambda b, p: (b, p, dims.d_vocab)  # noqa: E731

    def positions(x: Tensor, dim: int = 1) -> Tensor:
        return torch.arange(x.shape[dim], device=x.device)

    def sublayer(i: Inputs) -> Tensor:
        x = i["residual"]
        return module(x, positional=decoder.positional, positions=positions(x))  # type: ignore[no-any-return]

    def kernel(i: Inputs) -> Tensor:
        pos = positions(i["queries"], 2)
        return module(i["queries"], i["keys"], i["values"], query_positions=pos, key_positions=pos)  # type: ignore[no-any-return]

    table: dict[str, tuple[Call, dict[str, int], int, Shape]] = {
        "embedding": (lambda i: module(i["tokens"]), {"tokens": 1}, 1, stream),
        "positional": (lambda i: decoder(i["tokens"]), {"tokens": 1}, 1, logits),
        "attention": (sublayer, residual, 1, stream),
        "block": (sublayer, residual, 1, stream),
        "attention_kernel": (kernel, {"queries": 2, "keys": 2, "values": 2}, 2,
                             lambda b, p: (b, dims.n_heads, p, dims.d_head)),
        "mlp": (lambda i: module(i["residual"]), residual, 1, stream),
        "norm": (lambda i: module(i["residual"]), residual, 1, stream),
        "unembedding": (lambda i: module(i["residual"]), residual, 1, logits),
    }  # fmt: skip
    call, input_dims, output_dim, shape = table[subject.kind]
    return Probe(decoder, module, call, input_dims, output_dim, shape)
