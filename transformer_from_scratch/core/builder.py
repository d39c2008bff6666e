"""The builder: the only place that turns names into modules.

``build_decoder(spec)`` checks the whole spec against the registry first (names, options,
capabilities), so an impossible combination is refused before any weight is allocated; then it
calls each factory as ``factory(dims, **injected, **options)`` (see ``core.kinds``).
"""

import functools
from collections.abc import Iterator
from typing import Any

import attrs
import torch
from torch import nn

from transformer_from_scratch.core import memory
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
    """Build the :class:`Decoder` a spec (or a preset's name) describes.

    Refused before anything is allocated when the spec is wrong or its weights cannot fit in
    the memory available; a dry run on two tokens then checks every part keeps its contract.
    """
    registry = registry or default_registry()
    if isinstance(spec, str):
        spec = DecoderSpec.preset(spec, registry)
    check_spec(spec, registry)
    _require_buildable(spec, registry)
    parts = _Parts(registry)
    made = dict(_make_all(parts, spec))
    decoder = Decoder(
        spec,
        embedding=made["embedding"],
        positional=made["positional"],  # type: ignore[arg-type]
        blocks=[made[f"blocks.{i}"] for i in range(spec.n_layers)],
        final_norm=made["final_norm"],
        unembedding=made["unembedding"],
        parts=parts.made,
    )
    dry_run(decoder)
    return decoder


def each_part(
    spec: DecoderSpec, registry: Registry | None = None
) -> Iterator[tuple[str, nn.Module]]:
    """The decoder's top-level parts, made one at a time in :func:`build_decoder`'s order (so
    after the same seed they hold the same weights), each under its name in the decoder."""
    registry = registry or default_registry()
    check_spec(spec, registry)
    yield from _make_all(_Parts(registry), spec)


def _make_all(parts: _Parts, spec: DecoderSpec) -> Iterator[tuple[str, nn.Module]]:
    comps, dims = spec.components, spec.dims
    embedding = parts.make("embedding", comps.embedding, dims)
    yield "embedding", embedding
    positional = parts.make("positional", comps.positional, dims)
    _require_positional(positional, parts.registry.get("positional", comps.positional.name))
    yield "positional", positional
    for i in range(spec.n_layers):
        yield f"blocks.{i}", _block(parts, spec, dims.at_layer(i))
    yield "final_norm", parts.make("norm", comps.norm, dims) if spec.final_norm else nn.Identity()
    yield "unembedding", parts.make("unembedding", comps.unembedding, dims, embedding=embedding)


# Beyond any machine, and beyond what Python can build module by module even on ``meta``.
MAX_PARAMETERS, MAX_LAYERS = 10**15, 100_000


# A spec whose rough size is this many times smaller than free memory is not counted exactly:
# counting on ``meta`` costs about a second the first time in a process (PyTorch's lazy imports).
HEADROOM = 64


def rough_parameters(spec: DecoderSpec) -> int:
    """A GPT-2-like parameter count from the sizes alone (see :func:`count_parameters`)."""
    d = spec.dims
    per_layer = 4 * d.d_model * d.n_heads * d.d_head + 3 * d.d_model * d.d_mlp + 8 * d.d_model
    return spec.n_layers * per_layer + 2 * d.d_vocab * d.d_model + d.n_ctx * d.d_model


def _require_buildable(spec: DecoderSpec, registry: Registry) -> None:
    """Refuse, before allocating, weights that cannot fit (or, on ``meta``, cannot be built)."""
    free = memory.available()
    small = free is not None and rough_parameters(spec) * 4 * HEADROOM < free
    if small and spec.n_layers <= MAX_LAYERS:
        return
    count = count_parameters(spec, registry)
    if count is not None and count.total <= MAX_PARAMETERS and spec.n_layers <= MAX_LAYERS:
        if torch.get_default_device().type != "meta":
            memory.require_fits(memory.estimate(spec, count.total), "this spec's weights",
                                per_layer=4 * count.per_layer, layers=spec.n_layers)  # fmt: skip
        return
    if count is None and spec.n_layers <= MAX_LAYERS:
        return  # a part that cannot be counted on meta: built as asked
    size = f"{count.total:.3g} parameters" if count else "its size"
    raise TfsError(
        f"this spec cannot be built: n_layers = {spec.n_layers:,} and {size} are beyond any "
        f"machine (at most {MAX_LAYERS:,} blocks and {MAX_PARAMETERS:.0e} parameters); check "
        "n_layers, d_model, d_mlp and d_vocab"
    )


@attrs.frozen
class ParameterCount:
    """Parameters of a spec: in all, and in an average block."""

    total: int
    per_layer: int


def count_parameters(spec: DecoderSpec, registry: Registry | None = None) -> ParameterCount | None:
    """Count a spec's parameters without allocating them (parts built on ``meta``).

    ``None`` when a part cannot be built there (a factory that reads tensor values).
    """
    registry = registry or default_registry()
    try:
        with torch.device("meta"):
            outer = _unique_numel(_outer_parts(_Parts(registry), spec))
            per_layer = _layer_average(registry, spec)
    except Exception:  # a factory that needs real data: no estimate, no refusal
        return None
    return ParameterCount(outer + round(per_layer * spec.n_layers), round(per_layer))


def _outer_parts(parts: _Parts, spec: DecoderSpec) -> list[nn.Module]:
    comps, dims = spec.components, spec.dims
    embedding = parts.make("embedding", comps.embedding, dims)
    made = [embedding, parts.make("positional", comps.positional, dims)]
    made.append(parts.make("unembedding", comps.unembedding, dims, embedding=embedding))
    if spec.final_norm:
        made.append(parts.make("norm", comps.norm, dims))
    return made


def _layer_average(registry: Registry, spec: DecoderSpec, sample: int = 64) -> float:
    """Mean parameters per block over the layouts the layers use (sampled for huge depths)."""
    step = max(1, spec.n_layers // sample)
    layers = range(0, spec.n_layers, step)
    seen: dict[str, int] = {}
    counts = []
    for layer in layers if spec.layers else range(min(1, spec.n_layers)):
        key = repr(spec.components_for(layer))
        if key not in seen:
            seen[key] = _unique_numel([_block(_Parts(registry), spec, spec.dims.at_layer(layer))])
        counts.append(seen[key])
    return sum(counts) / len(counts) if counts else 0.0


def _unique_numel(modules: list[nn.Module]) -> int:
    unique = {id(p): p.numel() for m in modules for p in m.parameters()}
    return sum(unique.values())


def _block(parts: _Parts, spec: DecoderSpec, dims: Dims) -> nn.Module:
    assert dims.layer is not None
    comps = spec.components_for(dims.layer)
    kernel = parts.make("attention_kernel", comps.attention_kernel, dims)
    attention = parts.make("attention", comps.attention, dims, kernel=kernel)
    attention_only = "attention_only" in parts.registry.get("block", comps.block.name).capabilities
    mlp = None if attention_only else parts.make("mlp", comps.mlp, dims)
    make_norm = functools.partial(parts.make, "norm", comps.norm, dims)
    return parts.make("block", comps.block, dims, attention=attention, mlp=mlp, make_norm=make_norm)


def _require_positional(module: nn.Module, entry: Entry) -> None:
    if not isinstance(module, PositionalEncoding):
        raise TfsError(
            f"{entry.id} (from {entry.provider}) returned {type(module).__name__}; a positional "
            "implementation must subclass transformer_from_scratch.PositionalEncoding"
        )
