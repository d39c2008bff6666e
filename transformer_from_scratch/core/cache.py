"""The key-value cache: what each attention layer has already computed for earlier positions.

When a decoder generates one token at a time, the keys and values of the earlier positions do not
change (attention is causal), so each layer keeps them and computes only the new position's.
Each new token then costs one position's work instead of re-running the whole prefix.
"""

from torch import Tensor

from transformer_from_scratch.core.shapes import HeadVectors, Keys, Values


class LayerCache:
    """The keys and values one attention layer has seen so far, ``[batch head key_pos d_head]``.

    They live in buffers with room to spare (doubled when full), so a new token's keys are
    written in place instead of the whole history being copied once per token. ``keep`` holds
    whatever else the layer may reuse while this cache lives, that is, during one generation,
    when the weights do not change (multi-head attention keeps its fused projection there).
    """

    def __init__(self) -> None:
        self._keys: Tensor | None = None
        self._values: Tensor | None = None
        self._length = 0
        self.keep: dict[str, object] = {}

    @property
    def keys(self) -> Keys | None:
        """The stored keys, oldest first (``None`` before the first token)."""
        return None if self._keys is None else self._keys[..., : self._length, :]

    @property
    def values(self) -> Values | None:
        """The stored values, oldest first (``None`` before the first token)."""
        return None if self._values is None else self._values[..., : self._length, :]

    @property
    def length(self) -> int:
        """How many positions are stored."""
        return self._length

    def extend(self, keys: HeadVectors, values: HeadVectors) -> tuple[Keys, Values]:
        """Append the new positions' keys and values; return all of them, oldest first."""
        end = self._length + keys.shape[-2]
        self._keys = _room(self._keys, keys, self._length, end)
        self._values = _room(self._values, values, self._length, end)
        self._keys[..., self._length : end, :] = keys
        self._values[..., self._length : end, :] = values
        self._length = end
        return self._keys[..., :end, :], self._values[..., :end, :]


def _room(buffer: Tensor | None, new: Tensor, used: int, needed: int) -> Tensor:
    """``buffer``, or a larger one holding its first ``used`` positions, with room for
    ``needed`` positions (at least twice what it had, so copies are rare)."""
    if buffer is not None and buffer.shape[-2] >= needed and buffer.shape[:-2] == new.shape[:-2]:
        return buffer
    capacity = max(needed, 2 * (0 if buffer is None else buffer.shape[-2]), 16)
    grown = new.new_empty(*new.shape[:-2], capacity, new.shape[-1])
    if buffer is not None and used:
        grown[..., :used, :] = buffer[..., :used, :]
    return grown


class KVCache:
    """One :class:`LayerCache` per block; ``length`` is the number of positions already seen."""

    def __init__(self, n_layers: int) -> None:
        self.layers = [LayerCache() for _ in range(n_layers)]

    @property
    def length(self) -> int:
        """Positions already processed (the offset of the next token)."""
        return self.layers[0].length if self.layers else 0
