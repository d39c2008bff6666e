"""The one dimension vocabulary of the project, as jaxtyping aliases.

Every tensor that crosses a component boundary is annotated with one of these names, so a shape
is read the same way everywhere (the names follow TransformerLens and *A Mathematical Framework
for Transformer Circuits*):

- ``batch``: independent sequences processed together.
- ``pos`` / ``query_pos`` / ``key_pos``: positions in a sequence; with a KV cache the keys can
  reach further back than the queries, so attention tells the two apart.
- ``d_model``: the width of the residual stream.
- ``head`` / ``d_head``: attention heads and the width of one head's queries, keys and values.
- ``d_mlp``: the hidden width of the MLP.
- ``d_vocab``: the number of token ids.

The checks run only in the tests (``--jaxtyping-packages``); outside them these are plain
annotations and cost nothing.
"""

from jaxtyping import Float, Int
from torch import Tensor

TokenIds = Int[Tensor, "batch pos"]
Positions = Int[Tensor, " pos"]
QueryPositions = Int[Tensor, " query_pos"]
KeyPositions = Int[Tensor, " key_pos"]
Residual = Float[Tensor, "batch pos d_model"]
PositionVectors = Float[Tensor, "pos d_model"]
Logits = Float[Tensor, "batch pos d_vocab"]
KeptLogits = Float[Tensor, "batch kept d_vocab"]  # every position's, or only the last one's
Queries = Float[Tensor, "batch head query_pos d_head"]
Keys = Float[Tensor, "batch head key_pos d_head"]
Values = Float[Tensor, "batch head key_pos d_head"]
Mixed = Float[Tensor, "batch head query_pos d_head"]
HeadVectors = Float[Tensor, "batch head pos d_head"]
ScoreBias = Float[Tensor, "head query_pos key_pos"]
Scores = Float[Tensor, "batch head query_pos key_pos"]

__all__ = [
    "HeadVectors",
    "KeptLogits",
    "KeyPositions",
    "Keys",
    "Logits",
    "Mixed",
    "PositionVectors",
    "Positions",
    "Queries",
    "QueryPositions",
    "Residual",
    "ScoreBias",
    "Scores",
    "TokenIds",
    "Values",
]
