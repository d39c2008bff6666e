"""``embedding``: the token embedding, a lookup table from token id to residual vector."""

from collections.abc import Mapping
from typing import Any

from torch import nn

from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.functional import choice_problems, new_weight
from transformer_from_scratch.core.shapes import Residual, TokenIds

INITS = ("gpt2", "seed")


class Embedding(nn.Module):
    """Token embedding: row ``t`` of ``W_E [d_vocab d_model]`` is the vector for token ``t``.

    Indexing a row is the same as multiplying a one-hot vector by ``W_E`` (Vaswani et al. 2017,
    §3.4), without building the one-hot. Init: ``gpt2`` draws N(0, 0.02^2); ``seed`` (the
    original project) is Xavier-uniform.
    """

    def __init__(self, dims: Dims, init: str = "gpt2") -> None:
        super().__init__()
        scheme = "normal" if init == "gpt2" else "xavier_uniform"
        self.weight = new_weight(
            dims.d_vocab, dims.d_model, scheme=scheme, fan_in=dims.d_vocab, fan_out=dims.d_model
        )

    def forward(self, tokens: TokenIds) -> Residual:
        """The embedding vector of each token."""
        return self.weight[tokens]


def validate(dims: Dims, options: Mapping[str, Any]) -> list[str]:
    """Spec-time checks of the options."""
    return choice_problems("init", options.get("init", "gpt2"), INITS)
