"""``res_post_norm``: the original project's block, normalising each sublayer's output."""

from collections.abc import Callable

from torch import nn

from transformer_from_scratch.core.cache import LayerCache
from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.functional import dropout
from transformer_from_scratch.core.hooks import HookPoint
from transformer_from_scratch.core.kinds import PositionalEncoding
from transformer_from_scratch.core.shapes import Positions, Residual


class ResPostNorm(nn.Module):
    """``x = x + Norm(Attention(x)); x = x + Norm(MLP(x))``: the norm sits on the branch.

    Neither the 2017 post-norm (which normalises the sum) nor GPT-2's pre-norm (which
    normalises the sublayer's input): each sublayer reads the raw stream and its *output* is
    normalised before being added. This is the layout of the project this one grew from (the
    ``seed`` preset); Swin Transformer V2 (Liu et al. 2022, §3.1, "res-post-norm") uses it to
    keep activations from growing with depth.
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
        """The residual stream plus this block's normalised attention and MLP outputs."""
        attended = self.attention(residual, positional=positional, positions=positions, cache=cache)
        residual = self.hook_resid_mid(residual + self._drop(self.norm_attention(attended)))
        out: Residual = residual + self._drop(self.norm_mlp(self.mlp(residual)))
        return out

    def _drop(self, update: Residual) -> Residual:
        return dropout(update, self.dropout, self.training)
