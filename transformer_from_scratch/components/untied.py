"""``untied``: an unembedding with its own weight."""

from collections.abc import Mapping
from typing import Any

from torch import nn

from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.functional import affine, choice_problems, new_weight
from transformer_from_scratch.core.shapes import Logits, Residual

INITS = ("gpt2", "seed")


class Untied(nn.Module):
    """Logits ``x W_U`` with ``W_U [d_model d_vocab]`` separate from the embedding.

    With separate weights, ``W_E W_U`` alone can hold bigram statistics (which token tends to
    follow which): the "direct path" of Elhage et al. 2021. Init ``gpt2``: N(0, 0.02^2);
    ``seed``: Xavier-uniform, as the original project.
    """

    def __init__(self, dims: Dims, embedding: nn.Module, init: str = "gpt2") -> None:
        super().__init__()
        scheme = "xavier_uniform" if init == "seed" else "normal"
        self.weight = new_weight(
            dims.d_model, dims.d_vocab, scheme=scheme, fan_in=dims.d_model, fan_out=dims.d_vocab
        )

    def forward(self, residual: Residual) -> Logits:
        """Next-token logits at each position."""
        return affine(residual, self.weight)


def validate(dims: Dims, options: Mapping[str, Any]) -> list[str]:
    """Spec-time checks of the options."""
    return choice_problems("init", options.get("init", "gpt2"), INITS)
