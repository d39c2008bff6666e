"""``tied``: an unembedding that shares the token embedding's weight."""

from torch import nn

from transformer_from_scratch.core.dims import Dims
from transformer_from_scratch.core.errors import TfsError
from transformer_from_scratch.core.shapes import Logits, Residual


class Tied(nn.Module):
    """Logits ``x W_E^T``: the unembedding *is* the embedding, transposed (Press & Wolf 2017).

    One ``[d_vocab d_model]`` tensor serves both ends (GPT-2 does this), saving
    ``d_vocab * d_model`` parameters. ``self.weight`` is the embedding's own ``Parameter``
    object, not a copy: a gradient step on one is a step on the other.
    """

    def __init__(self, dims: Dims, embedding: nn.Module) -> None:
        super().__init__()
        weight = getattr(embedding, "weight", None)
        if not isinstance(weight, nn.Parameter) or tuple(weight.shape) != (
            dims.d_vocab,
            dims.d_model,
        ):
            raise TfsError(
                f"unembedding 'tied' needs an embedding with a `weight` Parameter of shape "
                f"[d_vocab={dims.d_vocab}, d_model={dims.d_model}]; "
                f"{type(embedding).__name__} has {getattr(weight, 'shape', None)}"
            )
        self.weight = weight

    def forward(self, residual: Residual) -> Logits:
        """Next-token logits at each position."""
        return residual @ self.weight.T
