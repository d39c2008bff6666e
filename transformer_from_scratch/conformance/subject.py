"""The implementation under test, and the tiny decoder it is checked inside."""

from collections.abc import Mapping
from typing import Any

import attrs
import torch
from torch import nn

from transformer_from_scratch.core.builder import build_decoder
from transformer_from_scratch.core.decoder import Decoder
from transformer_from_scratch.core.registry import Entry, Registry
from transformer_from_scratch.core.spec import DecoderSpec

# Small enough that every check runs in milliseconds, big enough to have two heads and odd sizes.
TINY_SIZES: dict[str, Any] = {
    "d_model": 16,
    "n_layers": 1,
    "n_heads": 2,
    "d_head": 8,
    "d_mlp": 32,
    "d_vocab": 13,
    "n_ctx": 24,
}

# Other sizes, for checking that nothing is sized by hand: every size differs from the tiny
# one and from every other, none is a power of two but the head counts, the heads together are
# wider than d_model (4 x 6 = 24 against 20: n_heads * d_head need not be d_model, and
# d_model // n_heads is not d_head), two query heads share each key/value head (grouped-query
# attention, which the attention contract asks for through n_kv_heads), and there are two
# layers (so nothing a layer keeps can be shared by another).
OTHER_SIZES: dict[str, Any] = {
    **TINY_SIZES,
    "d_model": 20,
    "n_layers": 2,
    "n_heads": 4,
    "n_kv_heads": 2,
    "d_head": 6,
    "d_mlp": 36,
    "d_vocab": 17,
    "n_ctx": 40,
}


def move_off_init(module: nn.Module, seed: int) -> None:
    """Add 0.1 N(0, 1) (seeded) to every floating-point parameter of ``module``, in place."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in filter(torch.is_floating_point, module.parameters()):
            param.add_(0.1 * torch.randn(param.shape, generator=generator).to(param))


@attrs.frozen
class Subject:
    """One registered implementation, with the registry it lives in and the options to test.

    Every check builds a tiny decoder whose other slots hold the GPT-2 defaults and whose
    ``entry.kind`` slot holds this implementation; the module under test is taken from it, so
    injected parts (a kernel, an embedding, sublayers) are real.
    """

    entry: Entry
    registry: Registry = attrs.field(eq=False)
    options: Mapping[str, Any] = attrs.field(factory=dict, eq=False)
    seed: int = attrs.field(default=0, eq=False)
    sizes: Mapping[str, Any] = attrs.field(factory=lambda: dict(TINY_SIZES), eq=False)

    @property
    def id(self) -> str:
        """``kind/name``, then ``[option=value,...]`` when checked with non-default options."""
        if not self.options:
            return self.entry.id
        shown = ",".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"
                         for k, v in sorted(self.options.items()))  # fmt: skip
        return f"{self.entry.id}[{shown}]"

    @property
    def is_variant(self) -> bool:
        """Whether it is checked with options other than its factory's defaults."""
        return bool(self.options)

    @property
    def kind(self) -> str:
        """The kind under test."""
        return self.entry.kind

    def has(self, capability: str) -> bool:
        """Whether the implementation declares ``capability``."""
        return capability in self.entry.capabilities

    def default_entry(self) -> Entry:
        """The built-in implementation that fills this kind's slot in the tiny spec by default."""
        name = getattr(DecoderSpec.from_dict(TINY_SIZES).components, self.kind).name
        return self.registry.get(self.kind, name)

    def spec(self, **changes: Any) -> DecoderSpec:
        """The tiny spec with this implementation in its slot (``changes`` override)."""
        mine = {"name": self.entry.name, "options": dict(self.options)}
        spec = DecoderSpec.from_dict({**self.sizes, "components": {self.kind: mine}})
        return spec.evolve(**changes) if changes else spec

    @property
    def is_resized(self) -> bool:
        """Whether it is checked at sizes other than the tiny ones."""
        return dict(self.sizes) != TINY_SIZES

    def resized(self, sizes: Mapping[str, Any]) -> "Subject":
        """The same implementation and options, checked inside decoders of other ``sizes``."""
        return attrs.evolve(self, sizes=dict(sizes))

    def decoder(self, seed: int = 0, **changes: Any) -> Decoder:
        """A freshly initialised tiny decoder holding this implementation.

        Seeded by ``self.seed + seed``, so a whole run can be repeated under other seeds.
        """
        torch.manual_seed(self.seed * 1000 + seed)
        return build_decoder(self.spec(**changes), self.registry)

    def moved_decoder(self, seed: int = 0, **changes: Any) -> Decoder:
        """A decoder as :meth:`decoder` makes it, with every parameter moved off its initial
        value: a trained model's biases are not zero nor its gains one, and a bias left out on
        some path (a cache, a fast path) shows only then."""
        decoder = self.decoder(seed, **changes)
        move_off_init(decoder, self.seed * 1000 + seed + 7)
        return decoder

    def module(self, decoder: Decoder) -> nn.Module:
        """The first module in ``decoder`` that this implementation made."""
        for entry, module in decoder.parts:
            if entry.kind == self.kind and entry.name == self.entry.name:
                return module
        raise LookupError(f"{self.id} made no part of the decoder")
