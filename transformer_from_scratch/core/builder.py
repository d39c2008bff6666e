"""The builder: the only place that turns names into modules.

``build_decoder(spec)`` checks the whole spec against the registry first (names, options,
capabilities), so an impossible combination is refused before any weight is allocated; then it
calls each factory as ``factory(dims, **injected, **options)`` (see ``core.kinds``).
"""

import functools
from typing import Any

from torch import nn

from transformer_from_scratch.core.component import Component
from transformer_from_scratch.core.decoder import Decoder
from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.dryrun import dry_run
from transformer_from_scratch.core.errors import TfsError
from transformer_from_scratch.core.kinds import PositionalEncoding
from transformer_from_scratch.core.plugins import default_registry
from transformer_from_scratch.core.registry import Entry, Registry
from transformer_from_scratch.core.spec import DecoderSpec
from transformer_from_scratch.core.validate import check_spec


class _Parts:
    """Makes each part from the registry and remembers which entry made it."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.made: list[tuple[Entry, nn.Module]] = []

    def make(self, kind: str, component: Component, dims: Dims, **injected: Any) -> nn.Module:
        entry = self.registry.get(kind, component.name)
        module = entry.factory(dims, **injected, **component.options)
        if not isinstance(module, nn.Module):
            raise TfsError(
                f"{entry.id} (from {entry.provider}) returned {type(module).__name__}, not an "
                "nn.Module; a factory must return a torch.nn.Module"
            )
        self.made.append((entry, module))
        return module


def build_decoder(spec: DecoderSpec | str, registry: Registry | None = None) -> Decoder:
    """Build the :class:`Decoder` a spec (or a preset's name) describes."""
    registry = registry or default_registry()
    if isinstance(spec, str):
        spec = DecoderSpec.preset(spec, registry)
    check_spec(spec, registry)
    parts = _Parts(registry)
    comps, dims = spec.components, spec.dims
    embedding = parts.make("embedding", comps.embedding, dims)
    positional = parts.make("positional", comps.positional, dims)
    _require_positional(positional, registry.get("positional", comps.positional.name))
    blocks = [_block(parts, spec, dims.at_layer(i)) for i in range(spec.n_layers)]
    final_norm = parts.make("norm", comps.norm, dims) if spec.final_norm else nn.Identity()
    unembedding = parts.make("unembedding", comps.unembedding, dims, embedding=embedding)
    decoder = Decoder(
        spec,
        embedding=embedding,
        positional=positional,  # type: ignore[arg-type]
        blocks=blocks,
        final_norm=final_norm,
        unembedding=unembedding,
        parts=parts.made,
    )
    dry_run(decoder)
    return decoder


def _block(parts: _Parts, spec: DecoderSpec, dims: Dims) -> nn.Module:
    assert dims.layer is not None
    comps = spec.components_for(dims.layer)
    kernel = parts.make("attention_kernel", comps.attention_kernel, dims)
    attention = parts.make("attention", comps.attention, dims, kernel=kernel)
    mlp = parts.make("mlp", comps.mlp, dims)
    make_norm = functools.partial(parts.make, "norm", comps.norm, dims)
    return parts.make("block", comps.block, dims, attention=attention, mlp=mlp, make_norm=make_norm)


def _require_positional(module: nn.Module, entry: Entry) -> None:
    if not isinstance(module, PositionalEncoding):
        raise TfsError(
            f"{entry.id} (from {entry.provider}) returned {type(module).__name__}; a positional "
            "implementation must subclass transformer_from_scratch.PositionalEncoding"
        )
