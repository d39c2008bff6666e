"""Hugging Face ``transformers`` models -> this project's decoder, family by family.

Each family has a spec builder (its config -> a :class:`DecoderSpec` naming registered parts)
and a weight mapper (its ``state_dict`` -> ours). Layout notes, because they are where
conversions go wrong:

- ``nn.Linear`` stores ``[out, in]`` and computes ``x W^T``; GPT-2's ``Conv1D`` stores
  ``[in, out]`` and computes ``x W``; this project stores per-head ``[head, d_model, d_head]``
  and computes ``x W``.
- GPT-2 packs Q, K, V side by side in one ``[d_model, 3 d_model]`` matrix; GPT-NeoX packs them
  per head (``[head, (q k v), d_head]`` along the output axis).
"""

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from transformer_from_scratch.core.builder import build_decoder
from transformer_from_scratch.core.decoder import Decoder
from transformer_from_scratch.core.errors import TfsError
from transformer_from_scratch.core.spec import DecoderSpec

State = dict[str, Tensor]


def _get(config: Any, name: str, default: Any = None) -> Any:
    return getattr(config, name, default)


def _rope(config: Any) -> dict[str, Any]:
    params = _get(config, "rope_parameters") or {}
    theta = params.get(
        "rope_theta", _get(config, "rope_theta", _get(config, "rotary_emb_base", 10000.0))
    )
    fraction = params.get("partial_rotary_factor", _get(config, "rotary_pct", 1.0))
    return {"base": float(theta), "fraction": float(fraction)}


def _bias(config: Any, default: bool) -> bool:
    return bool(_get(config, "attention_bias", default))


# --- specs ---------------------------------------------------------------------------------
def _gpt2_spec(config: Any) -> dict[str, Any]:
    d = config.n_embd
    gelu = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}[
        config.activation_function
    ]
    return {
        "d_model": d,
        "n_layers": config.n_layer,
        "n_heads": config.n_head,
        "d_head": d // config.n_head,
        "d_mlp": config.n_inner or 4 * d,
        "d_vocab": config.vocab_size,
        "n_ctx": config.n_positions,
        "final_norm": True,
        "components": {
            "positional": "learned",
            "attention": {"name": "multi_head", "options": {"bias": True}},
            "mlp": {"name": "gelu", "options": {"approximate": gelu}},
            "norm": {"name": "layer_norm", "options": {"eps": config.layer_norm_epsilon}},
            "block": "pre_norm",
            "unembedding": "tied",
        },
    }


def _llama_spec(config: Any) -> dict[str, Any]:
    if _get(config, "mlp_bias", False) or config.hidden_act != "silu":
        raise TfsError("only Llama-style models with a bias-free SiLU (SwiGLU) MLP convert")
    heads = config.num_attention_heads
    head_dim = _get(config, "head_dim") or config.hidden_size // heads
    rope = _rope(config)
    kernel: Any = "materialized"
    if _get(config, "sliding_window"):
        kernel = {"name": "materialized", "options": {"window": config.sliding_window}}
    return {
        "d_model": config.hidden_size,
        "n_layers": config.num_hidden_layers,
        "n_heads": heads,
        "n_kv_heads": config.num_key_value_heads,
        "d_head": head_dim,
        "d_mlp": config.intermediate_size,
        "d_vocab": config.vocab_size,
        "n_ctx": config.max_position_embeddings,
        "final_norm": True,
        "components": {
            "positional": {"name": "rotary", "options": {"base": rope["base"]}},
            "attention": {"name": "multi_head", "options": {"bias": _bias(config, False)}},
            "attention_kernel": kernel,
            "mlp": "swiglu",
            "norm": {"name": "rms_norm", "options": {"eps": config.rms_norm_eps}},
            "block": "pre_norm",
            "unembedding": "tied" if config.tie_word_embeddings else "untied",
        },
    }


def _neox_spec(config: Any) -> dict[str, Any]:
    heads = config.num_attention_heads
    gelu = {"gelu": "none", "gelu_new": "tanh", "gelu_fast": "tanh"}[config.hidden_act]
    return {
        "d_model": config.hidden_size,
        "n_layers": config.num_hidden_layers,
        "n_heads": heads,
        "d_head": config.hidden_size // heads,
        "d_mlp": config.intermediate_size,
        "d_vocab": config.vocab_size,
        "n_ctx": config.max_position_embeddings,
        "final_norm": True,
        "components": {
            "positional": {"name": "rotary", "options": _rope(config)},
            "attention": {"name": "multi_head", "options": {"bias": _bias(config, True)}},
            "mlp": {"name": "gelu", "options": {"approximate": gelu}},
            "norm": {"name": "layer_norm", "options": {"eps": config.layer_norm_eps}},
            "block": "parallel" if config.use_parallel_residual else "pre_norm",
            "unembedding": "tied" if config.tie_word_embeddings else "untied",
        },
    }


# --- weights -------------------------------------------------------------------------------
def _heads_in(weight: Tensor, heads: int) -> Tensor:
    """``nn.Linear`` weight ``[heads*d_head, d_model]`` -> ``[head, d_model, d_head]``."""
    return weight.T.reshape(weight.shape[1], heads, -1).permute(1, 0, 2)


def _heads_out(weight: Tensor, heads: int) -> Tensor:
    """``nn.Linear`` weight ``[d_model, heads*d_head]`` -> ``[head, d_head, d_model]``."""
    return weight.T.reshape(heads, -1, weight.shape[0])


def _norm(state: State, ours: str, theirs: str) -> State:
    out = {f"{ours}.weight": state[f"{theirs}.weight"]}
    if f"{theirs}.bias" in state:
        out[f"{ours}.bias"] = state[f"{theirs}.bias"]
    return out


def _mlp(state: State, dst: str, into: str, back: str, *, transpose: bool) -> State:
    """A two-layer MLP's weights (``transpose`` for ``nn.Linear``'s ``[out, in]`` layout)."""
    w_in, w_out = state[f"{into}.weight"], state[f"{back}.weight"]
    return {
        f"{dst}.mlp.W_in": w_in.T if transpose else w_in,
        f"{dst}.mlp.b_in": state[f"{into}.bias"],
        f"{dst}.mlp.W_out": w_out.T if transpose else w_out,
        f"{dst}.mlp.b_out": state[f"{back}.bias"],
    }


def _gpt2_weights(state: State, spec: DecoderSpec) -> State:
    h, d = spec.n_heads, spec.d_model
    out = {
        "embedding.weight": state["transformer.wte.weight"],
        "positional.weight": state["transformer.wpe.weight"],
        **_norm(state, "final_norm", "transformer.ln_f"),
    }
    for i in range(spec.n_layers):
        src, dst = f"transformer.h.{i}", f"blocks.{i}"
        qkv, qkv_bias = state[f"{src}.attn.c_attn.weight"], state[f"{src}.attn.c_attn.bias"]
        for name, part, bias in zip("QKV", qkv.split(d, dim=1), qkv_bias.split(d), strict=True):
            out[f"{dst}.attention.W_{name}"] = part.reshape(d, h, -1).permute(1, 0, 2)
            out[f"{dst}.attention.b_{name}"] = bias.reshape(h, -1)
        out[f"{dst}.attention.W_O"] = state[f"{src}.attn.c_proj.weight"].reshape(h, -1, d)
        out[f"{dst}.attention.b_O"] = state[f"{src}.attn.c_proj.bias"]
        out |= _mlp(state, dst, f"{src}.mlp.c_fc", f"{src}.mlp.c_proj", transpose=False)
        out |= _norm(state, f"{dst}.norm_attention", f"{src}.ln_1") | _norm(
            state, f"{dst}.norm_mlp", f"{src}.ln_2"
        )
    out["unembedding.weight"] = out["embedding.weight"]
    return out


def _llama_weights(state: State, spec: DecoderSpec) -> State:
    kv = spec.n_kv_heads or spec.n_heads
    out = {
        "embedding.weight": state["model.embed_tokens.weight"],
        **_norm(state, "final_norm", "model.norm"),
    }
    for i in range(spec.n_layers):
        src, dst = f"model.layers.{i}", f"blocks.{i}"
        attn = f"{src}.self_attn"
        for name, proj, heads in (
            ("Q", "q_proj", spec.n_heads),
            ("K", "k_proj", kv),
            ("V", "v_proj", kv),
        ):
            out[f"{dst}.attention.W_{name}"] = _heads_in(state[f"{attn}.{proj}.weight"], heads)
            if f"{attn}.{proj}.bias" in state:
                out[f"{dst}.attention.b_{name}"] = state[f"{attn}.{proj}.bias"].reshape(heads, -1)
        out[f"{dst}.attention.W_O"] = _heads_out(state[f"{attn}.o_proj.weight"], spec.n_heads)
        if f"{attn}.o_proj.bias" in state:
            out[f"{dst}.attention.b_O"] = state[f"{attn}.o_proj.bias"]
        for ours, theirs in (("W_gate", "gate_proj"), ("W_up", "up_proj"), ("W_down", "down_proj")):
            out[f"{dst}.mlp.{ours}"] = state[f"{src}.mlp.{theirs}.weight"].T
        out |= _norm(state, f"{dst}.norm_attention", f"{src}.input_layernorm")
        out |= _norm(state, f"{dst}.norm_mlp", f"{src}.post_attention_layernorm")
    out["unembedding.weight"] = state.get("lm_head.weight", out["embedding.weight"]).T
    if spec.components.unembedding.name == "tied":
        out["unembedding.weight"] = out["embedding.weight"]
    return out


def _neox_weights(state: State, spec: DecoderSpec) -> State:
    h, d = spec.n_heads, spec.d_model
    out = {
        "embedding.weight": state["gpt_neox.embed_in.weight"],
        **_norm(state, "final_norm", "gpt_neox.final_layer_norm"),
    }
    for i in range(spec.n_layers):
        src, dst = f"gpt_neox.layers.{i}", f"blocks.{i}"
        qkv = state[f"{src}.attention.query_key_value.weight"].reshape(h, 3, -1, d)
        qkv_bias = state.get(f"{src}.attention.query_key_value.bias")
        for index, name in enumerate("QKV"):
            out[f"{dst}.attention.W_{name}"] = qkv[:, index].transpose(-1, -2)
            if qkv_bias is not None:
                out[f"{dst}.attention.b_{name}"] = qkv_bias.reshape(h, 3, -1)[:, index]
        out[f"{dst}.attention.W_O"] = _heads_out(state[f"{src}.attention.dense.weight"], h)
        if f"{src}.attention.dense.bias" in state:
            out[f"{dst}.attention.b_O"] = state[f"{src}.attention.dense.bias"]
        out |= _mlp(
            state, dst, f"{src}.mlp.dense_h_to_4h", f"{src}.mlp.dense_4h_to_h", transpose=True
        )
        out |= _norm(state, f"{dst}.norm_attention", f"{src}.input_layernorm")
        out |= _norm(state, f"{dst}.norm_mlp", f"{src}.post_attention_layernorm")
    head = state.get("embed_out.weight", state.get("lm_head.weight"))  # older / newer name
    if spec.components.unembedding.name == "tied" or head is None:
        out["unembedding.weight"] = out["embedding.weight"]
    else:
        out["unembedding.weight"] = head.T
    return out


Family = tuple[Callable[[Any], dict[str, Any]], Callable[[State, DecoderSpec], State]]
SUPPORTED: dict[str, Family] = {
    "gpt2": (_gpt2_spec, _gpt2_weights),
    "llama": (_llama_spec, _llama_weights),
    "mistral": (_llama_spec, _llama_weights),
    "gpt_neox": (_neox_spec, _neox_weights),
}


def _family(config: Any) -> Family:
    model_type = _get(config, "model_type", "<no model_type>")
    try:
        return SUPPORTED[model_type]
    except KeyError:
        raise TfsError(
            f"no converter for Hugging Face model_type {model_type!r}; converters exist for "
            f"{', '.join(sorted(SUPPORTED))}. A new family needs a spec builder and a weight "
            "mapper in transformer_from_scratch/interop/huggingface.py"
        ) from None


def spec_from_hf_config(config: Any) -> DecoderSpec:
    """The spec that reproduces a Hugging Face config's architecture."""
    return DecoderSpec.from_dict(_family(config)[0](config), source=f"{config.model_type} config")


def from_hf(model: Any) -> Decoder:
    """This project's decoder with ``model``'s architecture and weights (float32, eval mode)."""
    spec = spec_from_hf_config(model.config)
    state = {k: v.detach().float() for k, v in model.state_dict().items()}
    ours = _family(model.config)[1](state, spec)
    decoder = build_decoder(spec)
    _load(decoder, ours)
    return decoder.eval()


def _load(decoder: Decoder, state: Mapping[str, Tensor]) -> None:
    expected = set(decoder.state_dict())
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:
        raise TfsError(f"conversion left out {missing[:5]} and produced unknown {extra[:5]}")
    with torch.no_grad():
        for name, tensor in decoder.state_dict(keep_vars=True).items():
            got, want = tuple(state[name].shape), tuple(tensor.shape)
            if got != want:
                raise TfsError(f"{name}: the conversion made shape {got}, the model needs {want}")
            tensor.copy_(state[name])
