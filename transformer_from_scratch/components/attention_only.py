"""``attention_only``: a block with attention and no MLP (for studying attention circuits)."""

from collections.abc import Callable

from torch import nn

from transformer_from_scratch.core.cache import LayerCache
from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.functional import dropout
from transformer_from_scratch.core.kinds import PositionalEncoding
from transformer_from_scratch.core.shapes import Positions, Residual


class AttentionOnly(nn.Module):
    """``x = x + Attention(Norm(x))``, with no MLP (Elhage et al. 2021, §"Attention-only").

    The models of *A Mathematical Framework for Transformer Circuits* that first showed induction
    heads: without MLPs, every path through the model is a product of attention heads, which is
    what makes them readable. It declares ``attention_only``, so the builder makes no MLP for it
    (``mlp`` is ``None``) and the model has no ``hook_mlp_out``.
    """

    def __init__(
        self,
        dims: Dims,
        attention: nn.Module,
        mlp: nn.Module | None,
        make_norm: Callable[[], nn.Module],
    ) -> None:
        super().__init__()
        self.attention = attention
        self.dropout = dims.dropout  # on the attention's output, while training
        self.norm_attention = make_norm()

    def forward(
        self,
        residual: Residual,
        *,
        positional: PositionalEncoding,
        positions: Positions,
        cache: LayerCache | None = None,
    ) -> Residual:
        """The residual stream plus what attention writes."""
        attended = self.attention(
            self.norm_attention(residual), positional=positional, positions=positions, cache=cache
        )
        out: Residual = residual + self._drop(attended)
        return out

    def _drop(self, update: Residual) -> Residual:
        return dropout(update, self.dropout, self.training)
