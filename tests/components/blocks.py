"""Simple stand-in sublayers whose outputs are easy to predict, for the block tests."""

import torch
from torch import nn

import transformer_from_scratch as tfs
from transformer_from_scratch.core.cache import LayerCache


class Doubling(nn.Module):
    """An 'attention' that returns twice what it reads (and records what it read)."""

    def forward(
        self,
        residual: torch.Tensor,
        *,
        positional: tfs.PositionalEncoding,
        positions: torch.Tensor,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        self.read = residual
        return 2 * residual


class PlusOne(nn.Module):
    """An 'MLP' that adds one."""

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        return residual + 1


class Halving(nn.Module):
    """A 'norm' that halves."""

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        return residual / 2


def run_block(block_class: type[nn.Module], dims: tfs.Dims, x: torch.Tensor) -> torch.Tensor:
    """Build ``block_class`` around the stand-ins and run it on ``x``."""
    block = block_class(dims, attention=Doubling(), mlp=PlusOne(), make_norm=Halving)
    positional = tfs.PositionalEncoding()
    out: torch.Tensor = block(x, positional=positional, positions=torch.arange(x.shape[1]))
    return out
