"""materialized: the textbook formula, checked against hand-computed values."""

import math

import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.components.materialized import Materialized
from transformer_from_scratch.core.functional import causal_mask


def test_matches_a_hand_computed_example(dims: tfs.Dims) -> None:
    q = torch.tensor([[[[1.0, 0.0], [0.0, 2.0]]]])
    k = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    v = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    out = Materialized(dims)(
        q, k, v, query_positions=torch.arange(2), key_positions=torch.arange(2)
    )
    # Query 0 sees key 0 only. Query 1: scores (0, 2)/sqrt(2), softmax -> weights (w0, w1).
    w1 = 1 / (1 + math.exp(-2 / math.sqrt(2)))
    expected = torch.tensor([[[[1.0, 2.0], [(1 - w1) * 1 + w1 * 3, (1 - w1) * 2 + w1 * 4]]]])
    torch.testing.assert_close(out, expected)


def test_the_mask_hides_later_keys_only() -> None:
    mask = causal_mask(torch.arange(3), torch.arange(3))
    assert mask.tolist() == [[False, True, True], [False, False, True], [False, False, False]]


def test_the_mask_follows_positions_when_keys_reach_further_back() -> None:
    mask = causal_mask(torch.tensor([4]), torch.arange(6))
    assert mask.tolist() == [[False, False, False, False, False, True]]


def test_a_window_hides_keys_too_far_back(dims: tfs.Dims) -> None:
    mask = causal_mask(torch.arange(4), torch.arange(4), window=2)
    assert mask.tolist() == [
        [False, True, True, True],
        [False, False, True, True],
        [True, False, False, True],
        [True, True, False, False],
    ]
    v = torch.eye(4)[None, None]
    q = k = torch.zeros(1, 1, 4, 4)
    out = Materialized(dims, window=2)(
        q, k, v, query_positions=torch.arange(4), key_positions=torch.arange(4)
    )
    torch.testing.assert_close(out[0, 0, 3], torch.tensor([0.0, 0.0, 0.5, 0.5]))


def test_a_score_bias_is_added_before_the_softmax(dims: tfs.Dims) -> None:
    q = k = torch.zeros(1, 1, 2, 2)
    v = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    bias = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])
    out = Materialized(dims)(
        q, k, v, query_positions=torch.arange(2), key_positions=torch.arange(2), score_bias=bias
    )
    torch.testing.assert_close(out[0, 0, 1], torch.tensor([0.75, 0.25]))
