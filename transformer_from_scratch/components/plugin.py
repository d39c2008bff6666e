"""The built-in plugin: registers every built-in implementation and preset.

It is loaded through the same hook a third-party plugin uses (see ``core.plugins``).
"""

from transformer_from_scratch.components import (
    alibi,
    attention_only,
    embedding,
    flash,
    geglu,
    gelu,
    layer_norm,
    learned,
    linear,
    materialized,
    multi_head,
    none,
    parallel,
    post_norm,
    pre_norm,
    relu,
    res_post_norm,
    rms_norm,
    rotary,
    sdpa,
    sinusoidal,
    swiglu,
    tied,
    untied,
)
from transformer_from_scratch.components.presets import PRESETS
from transformer_from_scratch.core.hookspecs import hookimpl
from transformer_from_scratch.core.registry import Registry

EXACT_KERNEL = ["exact", "kv_cache", "score_bias", "sliding_window"]
NORM = ["zero_mean", "unit_rms", "scale_invariant", "shift_invariant"]


@hookimpl
def register_components(registry: Registry) -> None:
    """Register the from-scratch component set and the built-in presets."""
    _positional(registry)
    _attention(registry)
    _feed_forward(registry)
    reg = registry.register
    reg("embedding", "embedding", embedding.Embedding, validate=embedding.validate)
    reg("unembedding", "untied", untied.Untied, validate=untied.validate)
    reg("unembedding", "tied", tied.Tied, capabilities=["tied"])
    for name, (description, spec) in PRESETS.items():
        registry.register_preset(name, spec, description=description)


def _positional(registry: Registry) -> None:
    reg = registry.register
    reg("positional", "sinusoidal", sinusoidal.Sinusoidal, capabilities=["additive"],
        validate=sinusoidal.validate)  # fmt: skip
    reg("positional", "learned", learned.Learned, capabilities=["additive"])
    reg("positional", "rotary", rotary.Rotary, capabilities=["rotary"], validate=rotary.validate)
    reg("positional", "alibi", alibi.ALiBi, capabilities=["score_bias"])
    reg("positional", "none", none.NoPositions)


def _attention(registry: Registry) -> None:
    reg = registry.register
    attention = ["kv_cache", "rotary", "score_bias"]
    reg("attention", "multi_head", multi_head.MultiHead, capabilities=attention,
        validate=multi_head.validate)  # fmt: skip
    # A block of 4 queries makes every check's short sequences span several blocks.
    reg("attention_kernel", "materialized", materialized.Materialized, capabilities=EXACT_KERNEL,
        check_options=[{"block": 4}])  # fmt: skip
    # A tile of 4 makes every check's short sequences span several tiles, ragged ends included.
    reg("attention_kernel", "flash", flash.Flash, capabilities=EXACT_KERNEL,
        validate=flash.validate, check_options=[{"tile": 4}])  # fmt: skip
    reg("attention_kernel", "sdpa", sdpa.SDPA, capabilities=EXACT_KERNEL)
    reg("attention_kernel", "linear", linear.Linear, capabilities=["kv_cache"],
        validate=linear.validate)  # fmt: skip


def _feed_forward(registry: Registry) -> None:
    reg = registry.register
    reg("mlp", "relu", relu.ReLU, validate=relu.validate)
    reg("mlp", "gelu", gelu.GELU, validate=gelu.validate)
    reg("mlp", "swiglu", swiglu.SwiGLU)
    reg("mlp", "geglu", geglu.GeGLU, validate=geglu.validate)
    reg("norm", "layer_norm", layer_norm.LayerNorm, capabilities=NORM, validate=layer_norm.validate)
    reg("norm", "rms_norm", rms_norm.RMSNorm, capabilities=["unit_rms", "scale_invariant"],
        validate=rms_norm.validate)  # fmt: skip
    reg("block", "pre_norm", pre_norm.PreNorm, capabilities=["identity_path", "resid_mid"])
    reg("block", "post_norm", post_norm.PostNorm, capabilities=["resid_mid"])
    reg("block", "res_post_norm", res_post_norm.ResPostNorm,
        capabilities=["identity_path", "resid_mid"])  # fmt: skip
    reg("block", "parallel", parallel.Parallel, capabilities=["identity_path"])
    reg("block", "attention_only", attention_only.AttentionOnly,
        capabilities=["identity_path", "attention_only"])  # fmt: skip
