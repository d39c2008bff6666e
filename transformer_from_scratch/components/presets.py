"""The built-in presets, as spec dicts (what a TOML spec file holds)."""

from typing import Any

GPT2_SMALL = {
    "d_model": 768,
    "n_layers": 12,
    "n_heads": 12,
    "d_head": 64,
    "d_mlp": 3072,
    "d_vocab": 50257,
    "n_ctx": 1024,
}

SEED: dict[str, Any] = {
    **GPT2_SMALL,
    "final_norm": False,
    "components": {
        "embedding": {"name": "embedding", "options": {"init": "seed"}},
        "positional": "sinusoidal",
        "attention": {"name": "multi_head", "options": {"init": "seed"}},
        "attention_kernel": "materialized",
        "mlp": {"name": "relu", "options": {"init": "seed"}},
        "norm": "layer_norm",
        "block": "res_post_norm",
        "unembedding": {"name": "untied", "options": {"init": "seed"}},
    },
}

GPT2: dict[str, Any] = {
    **GPT2_SMALL,
    "final_norm": True,
    "components": {
        "embedding": "embedding",
        "positional": "learned",
        "attention": {"name": "multi_head", "options": {"bias": True}},
        "attention_kernel": "materialized",
        "mlp": {"name": "gelu", "options": {"approximate": "tanh"}},
        "norm": "layer_norm",
        "block": "pre_norm",
        "unembedding": "tied",
    },
}

TINY: dict[str, Any] = {
    **GPT2,
    "d_model": 32,
    "n_layers": 2,
    "n_heads": 4,
    "d_head": 8,
    "d_mlp": 128,
    "d_vocab": 256,
    "n_ctx": 64,
}

SMALL: dict[str, Any] = {
    **GPT2,
    "d_model": 128,
    "n_layers": 4,
    "n_heads": 4,
    "d_head": 32,
    "d_mlp": 512,
    "d_vocab": 257,
    "n_ctx": 128,
}

PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "seed": (
        "the original transformer-from-scratch: sinusoidal positions, ReLU MLP, norm on each "
        "sublayer's output, separate embed/unembed, no final norm (GPT-2 small sizes)",
        SEED,
    ),
    "gpt2": (
        "GPT-2 small (124M): learned positions, GELU (tanh), pre-norm, tied unembedding",
        GPT2,
    ),
    "small": (
        "a GPT-2-shaped small model (4 layers, d_model 128, context 128, byte vocabulary): "
        "what `tfs train` trains by default in a few CPU minutes",
        SMALL,
    ),
    "tiny": ("a GPT-2-shaped toy (2 layers, d_model 32, byte vocabulary) for tests", TINY),
}
