"""sinusoidal: the 2017 formula, unique per position, and offsets as a fixed linear map."""

import math

import torch

import transformer_from_scratch as tfs
from transformer_from_scratch.components.sinusoidal import Sinusoidal


def test_follows_the_interleaved_formula(dims: tfs.Dims) -> None:
    table = Sinusoidal(dims).embed(torch.arange(dims.n_ctx))
    pos, i = 5, 3
    angle = pos / 10000 ** (2 * i / dims.d_model)
    assert math.isclose(table[pos, 2 * i], math.sin(angle), abs_tol=1e-6)
    assert math.isclose(table[pos, 2 * i + 1], math.cos(angle), abs_tol=1e-6)


def test_every_position_is_distinct(dims: tfs.Dims) -> None:
    table = Sinusoidal(dims).embed(torch.arange(dims.n_ctx))
    distances = torch.cdist(table, table) + torch.eye(dims.n_ctx)
    assert distances.min() > 1e-3


def test_an_offset_is_one_linear_map_for_every_position(dims: tfs.Dims) -> None:
    table = Sinusoidal(dims).embed(torch.arange(dims.n_ctx))
    k = 3
    # Each (sin, cos) pair turns by the angle k * w_i: one block-diagonal rotation M_k, the
    # same for every position p, with PE[p + k] = PE[p] @ M_k.
    rotation = torch.zeros(dims.d_model, dims.d_model)
    for i in range(dims.d_model // 2):
        angle = k / 10000 ** (2 * i / dims.d_model)
        c, s = math.cos(angle), math.sin(angle)
        rotation[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor([[c, -s], [s, c]])
    torch.testing.assert_close(table[:-k] @ rotation, table[k:], atol=1e-5, rtol=0)


def test_the_table_is_not_saved(dims: tfs.Dims) -> None:
    assert Sinusoidal(dims).state_dict() == {}
