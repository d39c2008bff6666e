"""``pre_norm``: the GPT-2 block, normalising what each sublayer reads."""

from collections.abc import Callable

from torch import nn

from transformer_from_scratch.core.cache import LayerCache
from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.functional import dropout
from transformer_from_scratch.core.hooks import HookPoint
from transformer_from_scratch.core.kinds import PositionalEncoding
from transformer_from_scratch.core.shapes import Positions, Residual


class PreNorm(nn.Module):
    """``x = x + Attention(Norm(x)); x = x + MLP(Norm(x))`` (GPT-2; Xiong et al. 2020).

    The residual stream itself is never normalised: each sublayer reads a normalised copy and
    adds its output back, so there is a clean identity path from the embedding to the
    unembedding and gradients reach early layers undamped. Needs a final norm before the
    unembedding.
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
        """The residual stream after this block's attention and MLP have added to it."""
        attended = self.attention(
            self.norm_attention(residual), positional=positional, positions=positions, cache=cache
        )
        residual = self.hook_resid_mid(residual + self._drop(attended))
        out: Residual = residual + self._drop(self.mlp(self.norm_mlp(residual)))
        return out

    def _drop(self, update: Residual) -> Residual:
        return dropout(update, self.dropout, self.training)
