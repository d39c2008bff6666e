"""Fixtures for component tests: tiny dimensions."""

import pytest

import transformer_from_scratch as tfs


@pytest.fixture
def dims() -> tfs.Dims:
    """Tiny dimensions: d_model 16, 2 heads of 8, d_mlp 32, 11 tokens, 16 positions."""
    return tfs.Dims(
        d_model=16, n_layers=2, n_heads=2, d_head=8, d_mlp=32, d_vocab=11, n_ctx=16, n_kv_heads=2
    )
