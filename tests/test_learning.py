"""Whole decoders learn: memorising a tiny dataset, and reversal (the causal-mask check)."""

import pytest

import transformer_from_scratch as tfs
from tests.conftest import TINY
from transformer_from_scratch.conformance.tasks import memorise_loss, reverse_accuracy


@pytest.mark.parametrize("block", ["pre_norm", "post_norm", "res_post_norm"])
def test_a_small_decoder_memorises_a_tiny_dataset(block: str) -> None:
    decoder = tfs.build_decoder(tfs.DecoderSpec.from_dict(TINY).evolve(block=block))
    assert memorise_loss(decoder, 11) < 0.01


def test_the_seed_architecture_memorises_a_tiny_dataset() -> None:
    spec = tfs.DecoderSpec.preset("seed").evolve(**TINY)
    assert memorise_loss(tfs.build_decoder(spec), 11) < 0.01


def test_reversal_second_half_near_perfect_first_half_at_chance() -> None:
    spec = tfs.DecoderSpec.from_dict(
        {**TINY, "d_model": 32, "d_head": 16, "d_mlp": 64, "d_vocab": 8}
    )
    first_half, second_half = reverse_accuracy(tfs.build_decoder(spec), 8)
    assert second_half > 0.95
    chance = 1 / 8
    assert abs(first_half - chance) < 0.05, (
        "above chance on random tokens: the model sees the future"
    )
