"""Presets: the families they stand for, their sizes, and how they differ."""

import pytest
import torch

import transformer_from_scratch as tfs

PARAMETERS = {
    "gpt2": 124_439_808,  # GPT-2 small
    "llama": 6_738_415_616,  # Llama 2 7B
    "mistral": 7_241_732_096,  # Mistral 7B
    "gpt_neox": 162_322_944,  # Pythia-160M
}


@pytest.mark.parametrize(("preset", "count"), PARAMETERS.items())
def test_parameter_counts_match_the_published_models(preset: str, count: int) -> None:
    with torch.device("meta"):
        decoder = tfs.build_decoder(preset)
    assert sum(decoder.parameter_counts().values()) == count


def test_mistral_is_llama_with_grouped_queries_and_a_window() -> None:
    rows = {
        row[0]: row[1:]
        for row in tfs.DecoderSpec.preset("llama").differences(tfs.DecoderSpec.preset("mistral"))
    }
    assert rows["n_kv_heads"] == ("-", "8")
    assert rows["components.attention_kernel.options"] == ("-", "{'window': 4096}")
    assert set(rows) == {"n_kv_heads", "components.attention_kernel.options", "d_mlp", "n_ctx"}


@pytest.mark.parametrize("preset", ["llama", "mistral", "gpt_neox"])
def test_small_versions_of_each_family_decode_with_a_cache(preset: str) -> None:
    big = tfs.DecoderSpec.preset(preset)
    kv_heads = 2 if big.n_kv_heads else None
    spec = big.evolve(
        d_model=32,
        n_layers=2,
        n_heads=4,
        d_head=8,
        d_mlp=64,
        d_vocab=50,
        n_ctx=16,
        n_kv_heads=kv_heads,
    )
    decoder = tfs.build_decoder(spec).eval()
    tokens = torch.randint(0, 50, (1, 10))
    cache = decoder.new_cache()
    steps = torch.cat([decoder(tokens[:, i : i + 1], cache=cache) for i in range(10)], dim=1)
    torch.testing.assert_close(steps, decoder(tokens), atol=1e-5, rtol=1e-4)
