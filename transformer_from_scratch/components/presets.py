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

LLAMA: dict[str, Any] = {
    "d_model": 4096,
    "n_layers": 32,
    "n_heads": 32,
    "d_head": 128,
    "d_mlp": 11008,
    "d_vocab": 32000,
    "n_ctx": 4096,
    "final_norm": True,
    "components": {
        "embedding": "embedding",
        "positional": {"name": "rotary", "options": {"base": 10000.0}},
        "attention": "multi_head",
        "attention_kernel": "materialized",
        "mlp": "swiglu",
        "norm": {"name": "rms_norm", "options": {"eps": 1e-5}},
        "block": "pre_norm",
        "unembedding": "untied",
    },
}

MISTRAL: dict[str, Any] = {
    **LLAMA,
    "d_mlp": 14336,
    "n_kv_heads": 8,
    "n_ctx": 32768,
    "components": {
        **LLAMA["components"],
        "attention_kernel": {"name": "materialized", "options": {"window": 4096}},
    },
}

GPT_NEOX: dict[str, Any] = {
    **GPT2_SMALL,
    "d_vocab": 50304,
    "n_ctx": 2048,
    "final_norm": True,
    "components": {
        "embedding": "embedding",
        "positional": {"name": "rotary", "options": {"fraction": 0.25}},
        "attention": {"name": "multi_head", "options": {"bias": True}},
        "attention_kernel": "materialized",
        "mlp": "gelu",
        "norm": "layer_norm",
        "block": "parallel",
        "unembedding": "untied",
    },
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
    "llama": (
        "Llama 2 7B shapes: rotary positions, RMSNorm, SwiGLU, no biases, untied unembedding",
        LLAMA,
    ),
    "mistral": (
        "Mistral 7B shapes: Llama's parts plus grouped-query attention (8 key/value heads) and a "
        "4096-token sliding window",
        MISTRAL,
    ),
    "gpt_neox": (
        "GPT-NeoX / Pythia-160M shapes: parallel attention + MLP, rotary on 25% of each head, "
        "biases, untied unembedding",
        GPT_NEOX,
    ),
    "tiny": ("a GPT-2-shaped toy (2 layers, d_model 32, byte vocabulary) for tests", TINY),
}
