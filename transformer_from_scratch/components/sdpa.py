"""``sdpa``: PyTorch's fused attention, for comparison only (not part of the from-scratch set)."""

import torch.nn.functional as F
from torch import nn

from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.functional import causal_mask, mask_as_bias
from transformer_from_scratch.core.shapes import (
    KeyPositions,
    Keys,
    Mixed,
    Queries,
    QueryPositions,
    ScoreBias,
    Values,
)


class SDPA(nn.Module):
    """``torch.nn.functional.scaled_dot_product_attention``: the baseline to benchmark against.

    PyTorch dispatches to a fused kernel (FlashAttention, memory-efficient attention, or a C++
    loop) depending on the device and inputs. The plain causal case (as many queries as keys,
    no bias, no window) uses ``is_causal``, which lets the fastest kernels run; anything else is
    passed as an explicit mask built from the positions. This file is the one deliberate
    exception to "tensor operations only": it exists so the from-scratch kernels can be timed
    against the fused one.
    """

    def __init__(self, dims: Dims, window: int | None = None) -> None:
        super().__init__()
        self.window = window
        self.dropout = dims.dropout  # on the attention weights, while training

    def forward(
        self,
        queries: Queries,
        keys: Keys,
        values: Values,
        *,
        query_positions: QueryPositions,
        key_positions: KeyPositions,
        score_bias: ScoreBias | None = None,
    ) -> Mixed:
        """Each query's weighted average of the values it may see."""
        plain = score_bias is None and self.window is None
        if plain and queries.shape[-2] == keys.shape[-2]:
            return F.scaled_dot_product_attention(
                queries, keys, values, is_causal=True, dropout_p=self._p()
            )
        mask = mask_as_bias(causal_mask(query_positions, key_positions, self.window), queries.dtype)
        if score_bias is not None:
            mask = mask + score_bias.to(queries.dtype)
        return F.scaled_dot_product_attention(
            queries, keys, values, attn_mask=mask, dropout_p=self._p()
        )

    def _p(self) -> float:
        return self.dropout if self.training else 0.0
