"""The built-in plugin: registers every built-in implementation and preset.

It is loaded through the same hook a third-party plugin uses (see ``core.plugins``).
"""

from transformer_from_scratch.components import (
    embedding,
    gelu,
    layer_norm,
    learned,
    materialized,
    multi_head,
    none,
    post_norm,
    pre_norm,
    relu,
    res_post_norm,
    sinusoidal,
    tied,
    untied,
)
from transformer_from_scratch.components.presets import PRESETS
from transformer_from_scratch.core.hookspecs import hookimpl
from transformer_from_scratch.core.registry import Registry


@hookimpl
def register_components(registry: Registry) -> None:
    """Register the from-scratch component set and the built-in presets."""
    reg = registry.register
    reg("embedding", "embedding", embedding.Embedding, validate=embedding.validate)
    reg("positional", "sinusoidal", sinusoidal.Sinusoidal, capabilities=["additive"],
        validate=sinusoidal.validate)  # fmt: skip
    reg("positional", "learned", learned.Learned, capabilities=["additive"])
    reg("positional", "none", none.NoPositions)
    attention_caps = ["kv_cache", "rotary", "score_bias"]
    reg("attention", "multi_head", multi_head.MultiHead, capabilities=attention_caps,
        validate=multi_head.validate)  # fmt: skip
    reg("attention_kernel", "materialized", materialized.Materialized,
        capabilities=["exact", "kv_cache", "score_bias", "sliding_window"])  # fmt: skip
    reg("mlp", "relu", relu.ReLU, validate=relu.validate)
    reg("mlp", "gelu", gelu.GELU, validate=gelu.validate)
    reg("norm", "layer_norm", layer_norm.LayerNorm, validate=layer_norm.validate,
        capabilities=["zero_mean", "unit_rms", "scale_invariant", "shift_invariant"])  # fmt: skip
    reg("block", "pre_norm", pre_norm.PreNorm, capabilities=["identity_path"])
    reg("block", "post_norm", post_norm.PostNorm)
    reg("block", "res_post_norm", res_post_norm.ResPostNorm, capabilities=["identity_path"])
    reg("unembedding", "untied", untied.Untied, validate=untied.validate)
    reg("unembedding", "tied", tied.Tied, capabilities=["tied"])
    for name, (description, spec) in PRESETS.items():
        registry.register_preset(name, spec, description=description)
