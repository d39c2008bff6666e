"""FLOP counting and the reference model's shapes."""

import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.bench.flops import (
    attention_flops,
    matmul_parameters,
    training_flops_per_token,
)
from transformer_from_scratch.bench.reference import ReferenceGPT


def test_causal_attention_flops() -> None:
    assert attention_flops(2, 3, 10, 4, backward=False) == 2 * 2 * 3 * 10 * 10 * 4
    assert attention_flops(2, 3, 10, 4, backward=True) == 3.5 * 2 * 2 * 3 * 10 * 10 * 4


def test_gpt2_flops_per_token_follow_6n_plus_12lhqt() -> None:
    with torch.device("meta"):
        decoder = tfs.build_decoder("gpt2")
    # Every parameter multiplies activations except the learned position table.
    assert matmul_parameters(decoder) == 124_439_808 - 1024 * 768
    expected = 6 * (124_439_808 - 1024 * 768) + 12 * 12 * 12 * 64 * 1024
    assert training_flops_per_token(decoder, 1024) == expected


def test_an_untied_lookup_table_does_not_count() -> None:
    with torch.device("meta"):
        decoder = tfs.build_decoder("llama")
    assert matmul_parameters(decoder) == 6_738_415_616 - 32000 * 4096


def test_the_reference_gpt_has_the_decoders_shapes() -> None:
    spec = tfs.DecoderSpec.preset("small")
    decoder, reference = tfs.build_decoder(spec), ReferenceGPT(spec)
    ours = sum(decoder.parameter_counts().values())
    assert sum(p.numel() for p in reference.parameters()) == ours
    tokens = torch.randint(0, spec.d_vocab, (2, 9))
    assert reference(tokens).shape == decoder(tokens).shape
