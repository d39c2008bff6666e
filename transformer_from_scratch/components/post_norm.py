"""``post_norm``: the 2017 paper's block, normalising the residual stream after each addition."""

from collections.abc import Callable

from torch import nn

from transformer_from_scratch.core.cache import LayerCache
from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.functional import dropout
from transformer_from_scratch.core.hooks import HookPoint
from transformer_from_scratch.core.kinds import PositionalEncoding
from transformer_from_scratch.core.shapes import Positions, Residual


class PostNorm(nn.Module):
    """``x = Norm(x + Attention(x)); x = Norm(x + MLP(x))`` (Vaswani et al. 2017, §3.1).

    "LayerNorm(x + Sublayer(x))": the sum is normalised, so the residual stream stays at unit
    scale. Deep post-norm stacks are harder to train without learning-rate warm-up
    (Xiong et al. 2020), which is why GPT-2 moved the norm in front of the sublayers.
    """

    def __init__(
        self, dims: Dims, attention: nn.Module, mlp: nn.Module, make_norm: Callable[[], nn.Module]
    ) -> None:
        super().__init__()
        self.attention, self.mlp = attention, mlp
        self.dropout = dims.dropout  # on each sublayer's output, while training
        self.norm_attention, self.norm_mlp = make_norm(), make_norm()
        self.hook_resid_mid = HookPoint()  # the stream between attention and MLP

    def forward(
        self,
        residual: Residual,
        *,
        positional: PositionalEncoding,
        positions: Positions,
        cache: LayerCache | None = None,
    ) -> Residual:
        """The normalised residual stream after attention and after the MLP."""
        attended = self.attention(residual, positional=positional, positions=positions, cache=cache)
        residual = self.hook_resid_mid(self.norm_attention(residual + self._drop(attended)))
        out: Residual = self.norm_mlp(residual + self._drop(self.mlp(residual)))
        return out

    def _drop(self, update: Residual) -> Residual:
        return dropout(update, self.dropout, self.training)
