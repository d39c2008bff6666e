"""The model's dimensions: the one record every component factory receives first."""

import attrs


@attrs.frozen(kw_only=True)
class Dims:
    """The sizes a component needs to build itself.

    ``layer`` is the index of the block being built (``None`` for parts outside the blocks), so a
    factory can depend on depth (for example a residual-scaled initialisation).
    """

    d_model: int = attrs.field(metadata={"doc": "width of the residual stream"})
    n_layers: int = attrs.field(metadata={"doc": "number of blocks"})
    n_heads: int = attrs.field(metadata={"doc": "query heads per attention layer"})
    d_head: int = attrs.field(metadata={"doc": "width of one head's queries, keys and values"})
    d_mlp: int = attrs.field(metadata={"doc": "hidden width of the MLP"})
    d_vocab: int = attrs.field(metadata={"doc": "number of token ids"})
    n_ctx: int = attrs.field(metadata={"doc": "longest sequence (positions 0 .. n_ctx-1)"})
    n_kv_heads: int = attrs.field(
        metadata={"doc": "key/value heads (divides n_heads; fewer means grouped-query)"}
    )
    dropout: float = attrs.field(
        default=0.0,
        metadata={"doc": "probability of zeroing an activation while training (0: none)"},
    )
    layer: int | None = attrs.field(
        default=None, metadata={"doc": "index of the block being built; None outside blocks"}
    )

    def at_layer(self, layer: int) -> "Dims":
        """These dimensions, told which block is being built."""
        return attrs.evolve(self, layer=layer)
