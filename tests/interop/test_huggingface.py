"""Exact equivalence with Hugging Face's implementations, on small random models (no downloads).

Every weight of the reference model is randomised (not only the ones its init touches), so a
mis-mapped bias or norm cannot hide behind a zero or a one.
"""

from collections.abc import Callable
from typing import Any

import pytest
import torch
import transformers

import transformer_from_scratch as tfs
from transformer_from_scratch.generation.generate import GenerationConfig, generate
from transformer_from_scratch.interop import from_hf

VOCAB = 61


def _gpt2(layers: int, heads: int) -> Any:
    return transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=8 * heads, n_layer=layers, n_head=heads, n_positions=48
    )


def _llama(layers: int, heads: int, kv_heads: int) -> Any:
    return transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=8 * heads, intermediate_size=40, num_hidden_layers=layers,
                                    num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=48,
                                    rms_norm_eps=1e-5)  # fmt: skip


def _mistral(layers: int, heads: int, kv_heads: int) -> Any:
    return transformers.MistralConfig(vocab_size=VOCAB, hidden_size=8 * heads, intermediate_size=40, num_hidden_layers=layers,
                                      num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=48,
                                      sliding_window=5)  # fmt: skip


def _neox(layers: int, heads: int, parallel: bool = True) -> Any:
    return transformers.GPTNeoXConfig(vocab_size=VOCAB, hidden_size=8 * heads, intermediate_size=48, num_hidden_layers=layers,
                                      num_attention_heads=heads, max_position_embeddings=48, use_parallel_residual=parallel,
                                      rope_parameters={"rope_theta": 10000.0, "partial_rotary_factor": 0.5, "rope_type": "default"})  # fmt: skip


CONFIGS: dict[str, Callable[[], Any]] = {
    "gpt2-1layer-1head": lambda: _gpt2(1, 1),
    "gpt2-3layers-4heads": lambda: _gpt2(3, 4),
    "llama-mha": lambda: _llama(2, 4, 4),
    "llama-gqa": lambda: _llama(2, 4, 2),
    "llama-mqa": lambda: _llama(1, 4, 1),
    "mistral-gqa-window": lambda: _mistral(2, 4, 2),
    "gpt_neox-parallel": lambda: _neox(2, 4),
    "gpt_neox-sequential": lambda: _neox(3, 2, parallel=False),
}


def reference(name: str) -> Any:
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(
        CONFIGS[name](), attn_implementation="eager"
    ).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.3 if param.dim() == 1 else 0.1)
    return model


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_equal_the_reference(name: str) -> None:
    model = reference(name)
    ours = from_hf(model)
    tokens = torch.randint(0, VOCAB, (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(tokens).logits
    torch.testing.assert_close(ours(tokens), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "name", ["gpt2-3layers-4heads", "llama-gqa", "mistral-gqa-window", "gpt_neox-parallel"]
)
def test_greedy_continuations_are_identical(name: str) -> None:
    model = reference(name)
    ours = from_hf(model)
    prompt = [5, 17, 3]
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(20):
            tokens.append(int(model(torch.tensor([tokens])).logits[0, -1].argmax()))
    mine = list(generate(ours, prompt, GenerationConfig(max_new_tokens=20, temperature=0)))
    assert mine == tokens[len(prompt) :]


def test_the_converted_spec_names_the_family_parts() -> None:
    spec = from_hf(reference("mistral-gqa-window")).spec
    assert (spec.n_heads, spec.n_kv_heads) == (4, 2)
    assert spec.components.attention_kernel == tfs.Component("materialized", {"window": 5})
    assert (
        spec.components.mlp.name,
        spec.components.norm.name,
        spec.components.positional.name,
    ) == ("swiglu", "rms_norm", "rotary")


def test_an_unsupported_family_is_named() -> None:
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    model = transformers.BertForMaskedLM(config)
    with pytest.raises(
        tfs.TfsError,
        match=r"no converter for Hugging Face model_type 'bert'; converters exist for gpt2, gpt_neox, llama, mistral",
    ):
        from_hf(model)
