"""none: every part of the positional contract is neutral."""

import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.components.none import NoPositions


def test_is_neutral_everywhere(dims: tfs.Dims) -> None:
    positional = NoPositions(dims)
    x = torch.randn(1, 2, 3, 8)
    assert positional.embed(torch.arange(3)) is None
    assert positional.rotate(x, torch.arange(3)) is x
    assert positional.score_bias(torch.arange(3), torch.arange(3)) is None
    assert list(positional.parameters()) == []


def test_without_positions_a_decoder_cannot_copy_the_token_two_back() -> None:
    # The control for the suite's check_position_reaches_model: the same task, no positions.
    from transformer_from_scratch.conformance.subject import TINY_SIZES
    from transformer_from_scratch.conformance.tasks import copy_back_accuracy

    spec = tfs.DecoderSpec.from_dict(TINY_SIZES).evolve(positional="none")
    assert copy_back_accuracy(tfs.build_decoder(spec), spec.d_vocab) < 0.5
