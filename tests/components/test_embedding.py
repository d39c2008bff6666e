"""embedding: a lookup table that, with an unembedding, learns bigram statistics."""

import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.components.embedding import Embedding
from transformer_from_scratch.components.tied import Tied
from transformer_from_scratch.components.untied import Untied
from transformer_from_scratch.conformance.tasks import bigram_accuracy


def test_lookup_equals_a_one_hot_product(dims: tfs.Dims) -> None:
    embedding = Embedding(dims)
    tokens = torch.tensor([[3, 0, 10]])
    one_hot = torch.nn.functional.one_hot(tokens, dims.d_vocab).float()
    torch.testing.assert_close(embedding(tokens), one_hot @ embedding.weight)


def test_embed_and_untied_unembed_learn_next_integer_bigrams(dims: tfs.Dims) -> None:
    embedding = Embedding(dims, init="seed")
    assert bigram_accuracy(embedding, Untied(dims, embedding, init="seed"), dims.d_vocab) > 0.9


def test_tied_weights_cannot_hold_an_asymmetric_bigram_table(dims: tfs.Dims) -> None:
    # W_E W_E^T is symmetric, so "a is followed by b" forces "b is followed by a": the reason
    # the original project kept separate embed and unembed weights.
    embedding = Embedding(dims)
    assert bigram_accuracy(embedding, Tied(dims, embedding), dims.d_vocab) < 0.5


def test_seed_init_is_xavier_uniform(dims: tfs.Dims) -> None:
    bound = (6 / (dims.d_vocab + dims.d_model)) ** 0.5
    weight = Embedding(dims, init="seed").weight
    assert weight.abs().max() <= bound
    assert weight.abs().max() > 0.8 * bound
