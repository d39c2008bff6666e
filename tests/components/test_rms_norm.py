"""rms_norm: unit root mean square, scale invariance, and PyTorch's formula."""

import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.components.rms_norm import RMSNorm


def test_output_has_unit_root_mean_square(dims: tfs.Dims) -> None:
    out = RMSNorm(dims)(5 * torch.randn(2, 3, dims.d_model) + 1)
    torch.testing.assert_close(out.pow(2).mean(-1).sqrt(), torch.ones(2, 3), atol=1e-4, rtol=0)


def test_matches_pytorch(dims: tfs.Dims) -> None:
    norm = RMSNorm(dims, eps=1e-5)
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(2, 3, dims.d_model)
    reference = torch.nn.functional.rms_norm(x, (dims.d_model,), norm.weight, eps=1e-5)
    torch.testing.assert_close(norm(x), reference)


def test_is_not_shift_invariant(dims: tfs.Dims) -> None:
    norm, x = RMSNorm(dims), torch.randn(1, 2, dims.d_model)
    assert not torch.allclose(norm(x + 3.0), norm(x))
