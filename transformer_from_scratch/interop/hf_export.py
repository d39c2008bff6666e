"""This project's decoder -> a Hugging Face ``transformers`` model folder (the reverse of
``interop.huggingface``): ``config.json`` and ``model.safetensors`` for the GPT-2, Llama,
Mistral or GPT-NeoX family, whichever the spec's parts match exactly.

A spec that matches none is refused, naming the first part (or option) that has no equivalent:
a conversion that is only nearly right would load without complaint and compute something else.
Options that change only how weights start (``init``, ``std``) or how a kernel tiles its work
(``tile``) have no effect on what a trained model computes and are let through.
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor

from transformer_from_scratch.core.component import Component
from transformer_from_scratch.core.decoder import Decoder
from transformer_from_scratch.core.errors import TfsError
from transformer_from_scratch.core.files import write_atomically
from transformer_from_scratch.core.spec import DecoderSpec

State = dict[str, Tensor]
HARMLESS = {"init", "std", "tile"}  # start-up or tiling only
EXACT_KERNELS = ("materialized", "flash", "sdpa")


class NoEquivalent(TfsError):
    """The spec has a part the target family does not."""


def _need(spec: DecoderSpec, family: str, kind: str, names: tuple[str, ...],
          options: tuple[str, ...] = ()) -> Component:  # fmt: skip
    """The spec's ``kind`` part, if it is one of ``names`` with only ``options`` set."""
    part: Component = getattr(spec.components, kind)
    if part.name not in names:
        raise NoEquivalent(f"{kind} {part.name!r} has no equivalent in {family} (it has "
                           f"{' or '.join(repr(n) for n in names)})")  # fmt: skip
    extra = sorted(set(part.options) - set(options) - HARMLESS)
    if extra:
        raise NoEquivalent(f"{kind} {part.name!r} option {extra[0]}={part.options[extra[0]]!r} "
                           f"has no equivalent in {family}")  # fmt: skip
    return part


def _common(spec: DecoderSpec, family: str) -> None:
    if spec.layers:
        raise NoEquivalent(f"per-layer parts (layers) have no equivalent in {family}: every "
                           "layer there is the same")  # fmt: skip
    if not spec.final_norm:
        raise NoEquivalent(f"a decoder without a final norm has no equivalent in {family}")
    _need(spec, family, "embedding", ("embedding",))
    _need(spec, family, "attention", ("multi_head",), ("bias",))


def _window(spec: DecoderSpec, family: str, allowed: bool) -> int | None:
    kernel = _need(spec, family, "attention_kernel", EXACT_KERNELS, ("window",) * allowed)
    window: int | None = kernel.options.get("window")
    return window


def _rope(rotary: Component) -> dict[str, Any]:
    """Rotary settings under the names of transformers 4 (flat) and 5 (``rope_parameters``)."""
    base = float(rotary.options.get("base", 10000.0))
    fraction = float(rotary.options.get("fraction", 1.0))
    return {"rope_theta": base, "rotary_emb_base": base, "rotary_pct": fraction,
            "partial_rotary_factor": fraction,
            "rope_parameters": {"rope_type": "default", "rope_theta": base,
                                "partial_rotary_factor": fraction}}  # fmt: skip


def _gpt2_config(spec: DecoderSpec) -> dict[str, Any]:
    family = "GPT-2"
    _common(spec, family)
    _need(spec, family, "positional", ("learned",))
    _need(spec, family, "block", ("pre_norm",))
    _need(spec, family, "unembedding", ("tied",))
    _window(spec, family, allowed=False)
    if not spec.components.attention.options.get("bias", False):
        raise NoEquivalent("attention without biases has no equivalent in GPT-2 (it has biases)")
    if spec.n_kv_heads not in (None, spec.n_heads) or spec.n_heads * spec.d_head != spec.d_model:
        raise NoEquivalent("GPT-2 needs n_heads * d_head = d_model and no grouped key/value heads")
    mlp = _need(spec, family, "mlp", ("gelu",), ("approximate",))
    norm = _need(spec, family, "norm", ("layer_norm",), ("eps",))
    if not mlp.options.get("bias", True) or not norm.options.get("bias", True):
        raise NoEquivalent("GPT-2's MLP and layer norms have biases")
    activation = {"tanh": "gelu_new", "none": "gelu"}[mlp.options.get("approximate", "none")]
    return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
            "vocab_size": spec.d_vocab, "n_positions": spec.n_ctx, "n_embd": spec.d_model,
            "n_layer": spec.n_layers, "n_head": spec.n_heads, "n_inner": spec.d_mlp,
            "activation_function": activation, "layer_norm_epsilon": norm.options.get("eps", 1e-5),
            "tie_word_embeddings": True, "embd_pdrop": spec.dropout, "attn_pdrop": spec.dropout,
            "resid_pdrop": spec.dropout}  # fmt: skip


def _llama_config(spec: DecoderSpec) -> dict[str, Any]:
    family = "Llama or Mistral"
    _common(spec, family)
    rotary = _need(spec, family, "positional", ("rotary",), ("base", "fraction"))
    if rotary.options.get("fraction", 1.0) != 1.0:
        raise NoEquivalent(f"rotary on part of each head has no equivalent in {family}")
    _need(spec, family, "mlp", ("swiglu",))
    norm = _need(spec, family, "norm", ("rms_norm",), ("eps",))
    _need(spec, family, "block", ("pre_norm",))
    tied = _need(spec, family, "unembedding", ("tied", "untied")).name == "tied"
    window = _window(spec, family, allowed=True)
    bias = bool(spec.components.attention.options.get("bias", False))
    config = {"model_type": "mistral" if window else "llama",
              "architectures": ["MistralForCausalLM" if window else "LlamaForCausalLM"],
              "vocab_size": spec.d_vocab, "hidden_size": spec.d_model,
              "intermediate_size": spec.d_mlp, "num_hidden_layers": spec.n_layers,
              "num_attention_heads": spec.n_heads, "num_key_value_heads": spec.n_kv_heads or
              spec.n_heads, "head_dim": spec.d_head, "max_position_embeddings": spec.n_ctx,
              "rms_norm_eps": norm.options.get("eps", 1e-6), "hidden_act": "silu",
              **_rope(rotary), "mlp_bias": False, "tie_word_embeddings": tied,
              "attention_dropout": spec.dropout,
              "attention_bias": bias}  # fmt: skip
    if window:
        config["sliding_window"] = window
    return config


def _neox_config(spec: DecoderSpec) -> dict[str, Any]:
    family = "GPT-NeoX"
    _common(spec, family)
    rotary = _need(spec, family, "positional", ("rotary",), ("base", "fraction"))
    mlp = _need(spec, family, "mlp", ("gelu",), ("approximate",))
    norm = _need(spec, family, "norm", ("layer_norm",), ("eps",))
    block = _need(spec, family, "block", ("parallel", "pre_norm"))
    tied = _need(spec, family, "unembedding", ("tied", "untied")).name == "tied"
    _window(spec, family, allowed=False)
    if spec.n_kv_heads not in (None, spec.n_heads) or spec.n_heads * spec.d_head != spec.d_model:
        raise NoEquivalent("GPT-NeoX needs n_heads * d_head = d_model and no grouped key/value "
                           "heads")  # fmt: skip
    activation = {"tanh": "gelu_new", "none": "gelu"}[mlp.options.get("approximate", "none")]
    bias = bool(spec.components.attention.options.get("bias", False))
    if not mlp.options.get("bias", True) or not norm.options.get("bias", True):
        raise NoEquivalent("GPT-NeoX's MLP and layer norms have biases")
    return {"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"],
            "vocab_size": spec.d_vocab, "hidden_size": spec.d_model,
            "intermediate_size": spec.d_mlp, "num_hidden_layers": spec.n_layers,
            "num_attention_heads": spec.n_heads, "max_position_embeddings": spec.n_ctx,
            "hidden_act": activation, "layer_norm_eps": norm.options.get("eps", 1e-5),
            "use_parallel_residual": block.name == "parallel", "attention_bias": bias,
            **_rope(rotary), "tie_word_embeddings": tied, "attention_dropout": spec.dropout,
            "hidden_dropout": spec.dropout}  # fmt: skip


# --- weights -------------------------------------------------------------------------------
def _linear_in(weight: Tensor) -> Tensor:
    """``[head, d_model, d_head]`` -> ``nn.Linear``'s ``[head*d_head, d_model]``."""
    return weight.permute(1, 0, 2).reshape(weight.shape[1], -1).T


def _linear_out(weight: Tensor) -> Tensor:
    """``[head, d_head, d_model]`` -> ``nn.Linear``'s ``[d_model, head*d_head]``."""
    return weight.reshape(-1, weight.shape[-1]).T


def _norm(ours: State, src: str, dst: str) -> State:
    out = {f"{dst}.weight": ours[f"{src}.weight"]}
    if f"{src}.bias" in ours:
        out[f"{dst}.bias"] = ours[f"{src}.bias"]
    return out


def _gpt2_weights(ours: State, spec: DecoderSpec) -> State:
    out = {"transformer.wte.weight": ours["embedding.weight"],
           "transformer.wpe.weight": ours["positional.weight"],
           **_norm(ours, "final_norm", "transformer.ln_f")}  # fmt: skip
    for i in range(spec.n_layers):
        src, dst = f"blocks.{i}", f"transformer.h.{i}"
        attn = f"{src}.attention"
        qkv = [ours[f"{attn}.W_{n}"].permute(1, 0, 2).reshape(spec.d_model, -1) for n in "QKV"]
        out[f"{dst}.attn.c_attn.weight"] = torch.cat(qkv, dim=1)
        out[f"{dst}.attn.c_attn.bias"] = torch.cat([ours[f"{attn}.b_{n}"].flatten() for n in "QKV"])
        out[f"{dst}.attn.c_proj.weight"] = ours[f"{attn}.W_O"].reshape(-1, spec.d_model)
        out[f"{dst}.attn.c_proj.bias"] = ours[f"{attn}.b_O"]
        out[f"{dst}.mlp.c_fc.weight"], out[f"{dst}.mlp.c_fc.bias"] = (
            ours[f"{src}.mlp.W_in"], ours[f"{src}.mlp.b_in"])  # fmt: skip
        out[f"{dst}.mlp.c_proj.weight"], out[f"{dst}.mlp.c_proj.bias"] = (
            ours[f"{src}.mlp.W_out"], ours[f"{src}.mlp.b_out"])  # fmt: skip
        out |= _norm(ours, f"{src}.norm_attention", f"{dst}.ln_1")
        out |= _norm(ours, f"{src}.norm_mlp", f"{dst}.ln_2")
    return out


def _llama_weights(ours: State, spec: DecoderSpec) -> State:
    out = {"model.embed_tokens.weight": ours["embedding.weight"],
           **_norm(ours, "final_norm", "model.norm")}  # fmt: skip
    for i in range(spec.n_layers):
        src, dst = f"blocks.{i}", f"model.layers.{i}"
        attn = f"{src}.attention"
        for name, proj in (("Q", "q_proj"), ("K", "k_proj"), ("V", "v_proj")):
            out[f"{dst}.self_attn.{proj}.weight"] = _linear_in(ours[f"{attn}.W_{name}"])
            if f"{attn}.b_{name}" in ours:
                out[f"{dst}.self_attn.{proj}.bias"] = ours[f"{attn}.b_{name}"].flatten()
        out[f"{dst}.self_attn.o_proj.weight"] = _linear_out(ours[f"{attn}.W_O"])
        if f"{attn}.b_O" in ours:
            out[f"{dst}.self_attn.o_proj.bias"] = ours[f"{attn}.b_O"]
        for mine, theirs in (("W_gate", "gate_proj"), ("W_up", "up_proj"), ("W_down", "down_proj")):
            out[f"{dst}.mlp.{theirs}.weight"] = ours[f"{src}.mlp.{mine}"].T
        out |= _norm(ours, f"{src}.norm_attention", f"{dst}.input_layernorm")
        out |= _norm(ours, f"{src}.norm_mlp", f"{dst}.post_attention_layernorm")
    if spec.components.unembedding.name == "untied":
        out["lm_head.weight"] = ours["unembedding.weight"].T
    return out


def _neox_weights(ours: State, spec: DecoderSpec) -> State:
    out = {"gpt_neox.embed_in.weight": ours["embedding.weight"],
           **_norm(ours, "final_norm", "gpt_neox.final_layer_norm")}  # fmt: skip
    for i in range(spec.n_layers):
        src, dst = f"blocks.{i}", f"gpt_neox.layers.{i}"
        attn = f"{src}.attention"
        qkv = torch.stack([ours[f"{attn}.W_{n}"].transpose(-1, -2) for n in "QKV"], dim=1)
        out[f"{dst}.attention.query_key_value.weight"] = qkv.reshape(-1, spec.d_model)
        if f"{attn}.b_Q" in ours:
            bias = torch.stack([ours[f"{attn}.b_{n}"] for n in "QKV"], dim=1)
            out[f"{dst}.attention.query_key_value.bias"] = bias.reshape(-1)
        out[f"{dst}.attention.dense.weight"] = _linear_out(ours[f"{attn}.W_O"])
        if f"{attn}.b_O" in ours:
            out[f"{dst}.attention.dense.bias"] = ours[f"{attn}.b_O"]
        out[f"{dst}.mlp.dense_h_to_4h.weight"] = ours[f"{src}.mlp.W_in"].T
        out[f"{dst}.mlp.dense_h_to_4h.bias"] = ours[f"{src}.mlp.b_in"]
        out[f"{dst}.mlp.dense_4h_to_h.weight"] = ours[f"{src}.mlp.W_out"].T
        out[f"{dst}.mlp.dense_4h_to_h.bias"] = ours[f"{src}.mlp.b_out"]
        out |= _norm(ours, f"{src}.norm_attention", f"{dst}.input_layernorm")
        out |= _norm(ours, f"{src}.norm_mlp", f"{dst}.post_attention_layernorm")
    if spec.components.unembedding.name == "untied":
        out["embed_out.weight"] = ours["unembedding.weight"].T
    return out


Family = tuple[Callable[[DecoderSpec], dict[str, Any]], Callable[[State, DecoderSpec], State]]
FAMILIES: dict[str, Family] = {
    "GPT-2": (_gpt2_config, _gpt2_weights),
    "Llama/Mistral": (_llama_config, _llama_weights),
    "GPT-NeoX": (_neox_config, _neox_weights),
}


def _family(spec: DecoderSpec) -> tuple[dict[str, Any], Callable[[State, DecoderSpec], State]]:
    reasons = []
    for name, (config, weights) in FAMILIES.items():
        try:
            return config(spec), weights
        except NoEquivalent as why:
            reasons.append(f"{name}: {why}")
    raise TfsError("this spec matches no Hugging Face family this project exports to, so it is "
                   "not exported (" + "; ".join(reasons) + ")")  # fmt: skip


def to_hf(decoder: Decoder) -> tuple[dict[str, Any], State]:
    """The Hugging Face ``config.json`` fields and ``state_dict`` for ``decoder``."""
    config, weights = _family(decoder.spec)
    ours = {k: v.detach().float().cpu() for k, v in decoder.state_dict().items()}
    state = {k: v.contiguous().clone() for k, v in weights(ours, decoder.spec).items()}
    return {**config, "torch_dtype": "float32"}, state


def save_hf(decoder: Decoder, folder: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` that ``transformers`` loads offline
    (``AutoModelForCausalLM.from_pretrained(folder)``); refuses a folder that is not empty."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise TfsError(f"{folder} is not empty; nothing was written. Choose a new folder")
    config, state = to_hf(decoder)
    blob = safetensors.torch.save(state, metadata={"format": "pt"})
    write_atomically(folder / "model.safetensors", blob)
    write_atomically(folder / "config.json", json.dumps(config, indent=2).encode())
    return folder
