"""transformer-from-scratch: a decoder-only transformer as a registry of swappable components.

The public face; everything here is re-exported from the private modules::

    import transformer_from_scratch as tfs

    decoder = tfs.build_decoder(tfs.DecoderSpec.preset("gpt2"))
    spec = tfs.load_spec("my_spec.toml")
"""

from transformer_from_scratch.core.activations import ActivationCache
from transformer_from_scratch.core.builder import build_decoder
from transformer_from_scratch.core.cache import KVCache, LayerCache
from transformer_from_scratch.core.checkpoint import (
    Checkpoint,
    load_checkpoint,
    load_decoder,
    save_decoder,
)
from transformer_from_scratch.core.component import Component, Components
from transformer_from_scratch.core.decoder import Decoder
from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.errors import (
    CheckpointError,
    ComponentError,
    DuplicateComponentError,
    IncompatibleComponentsError,
    Interrupted,
    PluginError,
    SpecError,
    TfsError,
    UnknownComponentError,
)
from transformer_from_scratch.core.hooks import HookPoint
from transformer_from_scratch.core.hookspecs import hookimpl
from transformer_from_scratch.core.kinds import KINDS, PositionalEncoding
from transformer_from_scratch.core.plugins import default_registry, load_registry
from transformer_from_scratch.core.registry import Entry, PluginFailure, Provider, Registry
from transformer_from_scratch.core.spec import DecoderSpec
from transformer_from_scratch.core.validate import check_spec, load_spec

__all__ = [
    "KINDS",
    "ActivationCache",
    "Checkpoint",
    "CheckpointError",
    "Component",
    "ComponentError",
    "Components",
    "Decoder",
    "DecoderSpec",
    "Dims",
    "DuplicateComponentError",
    "Entry",
    "HookPoint",
    "IncompatibleComponentsError",
    "Interrupted",
    "KVCache",
    "LayerCache",
    "PluginError",
    "PluginFailure",
    "PositionalEncoding",
    "Provider",
    "Registry",
    "SpecError",
    "TfsError",
    "UnknownComponentError",
    "build_decoder",
    "check_spec",
    "default_registry",
    "hookimpl",
    "load_checkpoint",
    "load_decoder",
    "load_registry",
    "load_spec",
    "save_decoder",
]
