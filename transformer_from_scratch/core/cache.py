"""The key-value cache: what each attention layer has already computed for earlier positions.

When a decoder generates one token at a time, the keys and values of the earlier positions do not
change (attention is causal), so each layer keeps them and computes only the new position's.
Each new token then costs one position's work instead of re-running the whole prefix.
"""

import torch
from torch import Tensor

from transformer_from_scratch.core.shapes import HeadVectors, Keys, Values


class LayerCache:
    """The keys and values one attention layer has seen so far, ``[batch head key_pos d_head]``."""

    def __init__(self) -> None:
        self.keys: Tensor | None = None
        self.values: Tensor | None = None

    @property
    def length(self) -> int:
        """How many positions are stored."""
        return 0 if self.keys is None else int(self.keys.shape[-2])

    def extend(self, keys: HeadVectors, values: HeadVectors) -> tuple[Keys, Values]:
        """Append the new positions' keys and values; return all of them, oldest first."""
        if self.keys is None or self.values is None:
            self.keys, self.values = keys, values
        else:
            self.keys = torch.cat([self.keys, keys], dim=-2)
            self.values = torch.cat([self.values, values], dim=-2)
        return self.keys, self.values


class KVCache:
    """One :class:`LayerCache` per block; ``length`` is the number of positions already seen."""

    def __init__(self, n_layers: int) -> None:
        self.layers = [LayerCache() for _ in range(n_layers)]

    @property
    def length(self) -> int:
        """Positions already processed (the offset of the next token)."""
        return self.layers[0].length if self.layers else 0
