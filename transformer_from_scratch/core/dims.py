"""The model's dimensions: the one record every component factory receives first."""

import attrs


@attrs.frozen(kw_only=True)
class Dims:
    """The sizes a component needs to build itself.

    ``layer`` is the index of the block being built (``None`` for parts outside the blocks), so a
    factory can depend on depth (for example a residual-scaled initialisation).
    """

    d_model: int
    n_layers: int
    n_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    n_kv_heads: int
    layer: int | None = None

    def at_layer(self, layer: int) -> "Dims":
        """These dimensions, told which block is being built."""
        return attrs.evolve(self, layer=layer)
