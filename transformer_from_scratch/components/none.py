"""``none``: no positional information at all."""

from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.kinds import PositionalEncoding


class NoPositions(PositionalEncoding):
    """No position encoding: every method of the contract is neutral.

    A causal decoder can still infer some position from the mask itself (Haviv et al. 2022,
    "Transformer language models without positional encodings still learn positional
    information"), but it cannot tell "k tokens back" apart: a useful control in experiments.
    """

    def __init__(self, dims: Dims) -> None:
        super().__init__()
