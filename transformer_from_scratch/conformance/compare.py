"""Comparing outputs position by position, with NaN counted as a difference."""

import torch
from torch import Tensor

from transformer_from_scratch.conformance.results import CheckFailed


def first_difference(a: Tensor, b: Tensor, pos_dim: int, atol: float = 1e-6) -> int | None:
    """The first position along ``pos_dim`` where ``a`` and ``b`` differ by more than ``atol``."""
    differs = ~torch.isclose(a, b, atol=atol, rtol=0.0)
    others = [d for d in range(a.dim()) if d != pos_dim]
    per_position = differs.any(dim=others) if others else differs
    found = per_position.nonzero()
    return int(found[0]) if len(found) else None


def require_finite(out: Tensor, what: str = "its outputs") -> Tensor:
    """Stop a check whose verdict would be meaningless on NaN or infinite values."""
    if not torch.isfinite(out).all():
        raise CheckFailed(
            f"{what} contain NaN or infinity, so this property cannot be judged (see check_finite)"
        )
    return out
