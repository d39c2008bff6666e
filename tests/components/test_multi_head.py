"""multi_head: moves information between positions, per head, with grouped-query sharing."""

import attrs
import pytest
import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.components.materialized import Materialized
from transformer_from_scratch.components.multi_head import MultiHead
from transformer_from_scratch.components.none import NoPositions
from transformer_from_scratch.conformance.tasks import flagged_copy_accuracy
from transformer_from_scratch.core.cache import LayerCache


@pytest.mark.parametrize("heads", [1, 4])
def test_learns_to_move_a_flagged_tokens_vector_to_the_last_position(
    dims: tfs.Dims, heads: int
) -> None:
    dims = attrs.evolve(dims, n_heads=heads, n_kv_heads=heads, d_head=16 // heads)
    attention = MultiHead(dims, Materialized(dims), init="seed")
    assert flagged_copy_accuracy(attention, NoPositions(dims), dims.d_model) > 0.9


@pytest.mark.parametrize("grad", [True, False], ids=["tracked", "untracked"])
def test_equals_the_concatenated_heads_formula(dims: tfs.Dims, grad: bool) -> None:
    """With gradients tracked and without (the side-by-side Q/K/V matrix is made from the
    per-head weights either way; a layout slip in making it would show here)."""
    attention = MultiHead(dims, Materialized(dims), bias=True)
    with torch.no_grad():
        for p in (attention.b_Q, attention.b_K, attention.b_V, attention.b_O):
            assert p is not None
            p.normal_()
    x = torch.randn(2, 5, dims.d_model)
    with torch.set_grad_enabled(grad):
        out = attention(x, positional=NoPositions(dims), positions=torch.arange(5))
    assert out.requires_grad == grad
    heads = []
    mask = torch.triu(torch.full((5, 5), float("-inf")), diagonal=1)
    for h in range(dims.n_heads):
        q = x @ attention.W_Q[h] + attention.b_Q[h]
        k = x @ attention.W_K[h] + attention.b_K[h]
        v = x @ attention.W_V[h] + attention.b_V[h]
        weights = torch.softmax(q @ k.transpose(-1, -2) / dims.d_head**0.5 + mask, dim=-1)
        heads.append(weights @ v)
    w_o = attention.W_O.reshape(dims.n_heads * dims.d_head, dims.d_model)
    expected = torch.cat(heads, dim=-1) @ w_o + attention.b_O
    torch.testing.assert_close(out, expected)


def test_grouped_query_heads_share_keys_and_values(dims: tfs.Dims) -> None:
    dims = attrs.evolve(dims, n_heads=4, n_kv_heads=2, d_head=4)
    attention = MultiHead(dims, Materialized(dims))
    assert attention.W_K.shape == (2, dims.d_model, 4)
    assert attention.W_Q.shape == (4, dims.d_model, 4)
    mha = MultiHead(attrs.evolve(dims, n_kv_heads=4), Materialized(dims))
    with torch.no_grad():
        mha.W_Q.copy_(attention.W_Q)
        mha.W_O.copy_(attention.W_O)
        mha.W_K.copy_(attention.W_K.repeat_interleave(2, dim=0))
        mha.W_V.copy_(attention.W_V.repeat_interleave(2, dim=0))
    x = torch.randn(2, 5, dims.d_model)
    kwargs = {"positional": NoPositions(dims), "positions": torch.arange(5)}
    torch.testing.assert_close(attention(x, **kwargs), mha(x, **kwargs))


@pytest.mark.parametrize("bias", [False, True])
def test_cached_decoding_without_gradients_matches_the_tracked_pass(
    dims: tfs.Dims, bias: bool
) -> None:
    """Grouped-query heads, batch of 3: decoding in pieces through a KV cache without
    gradients (the side-by-side Q/K/V matrix made once and kept in the cache) gives what one
    tracked pass gives."""
    dims = attrs.evolve(dims, n_heads=4, n_kv_heads=2, d_head=4)
    attention = MultiHead(dims, Materialized(dims), bias=bias).double()
    with torch.no_grad():
        for p in attention.parameters():
            p.normal_()
    x = torch.randn(3, 6, dims.d_model, dtype=torch.float64)
    tracked = attention(x, positional=NoPositions(dims), positions=torch.arange(6))
    cache, pieces = LayerCache(), []
    with torch.no_grad():
        for start, stop in ((0, 4), (4, 5), (5, 6)):
            kwargs = {"positional": NoPositions(dims), "positions": torch.arange(start, stop)}
            pieces.append(attention(x[:, start:stop], cache=cache, **kwargs))
    torch.testing.assert_close(torch.cat(pieces, dim=1), tracked.detach())
