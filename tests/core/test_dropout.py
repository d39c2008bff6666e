"""Dropout where GPT-2 has it: the embedding sum, the attention weights and each sublayer's
output, only while training, with expectations unchanged; refused by kernels that cannot."""

from pathlib import Path

import pytest
import torch

import transformer_from_scratch as tfs
from tests.training.conftest import tiny_run
from transformer_from_scratch.core.functional import dropout
from transformer_from_scratch.training.loop import read_log, train

BLOCKS = ["pre_norm", "post_norm", "res_post_norm", "parallel", "attention_only"]


def _tiny(**changes: object) -> tfs.DecoderSpec:
    return tfs.DecoderSpec.preset("tiny").evolve(**changes)


def test_dropout_zeroes_a_fraction_p_and_keeps_the_mean() -> None:
    x = torch.ones(200_000)
    dropped = dropout(x, 0.25, training=True)
    assert float((dropped == 0).float().mean()) == pytest.approx(0.25, abs=0.01)
    assert float(dropped.mean()) == pytest.approx(1.0, abs=0.01)
    assert dropped.unique().tolist() == pytest.approx([0.0, 1 / 0.75])
    assert dropout(x, 0.25, training=False) is x and dropout(x, 0.0, training=True) is x


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("kernel", ["materialized", "sdpa"])
def test_training_draws_new_masks_and_evaluation_is_the_model_without_dropout(
    block: str, kernel: str
) -> None:
    with_dropout = tfs.build_decoder(_tiny(dropout=0.3, block=block, attention_kernel=kernel))
    plain = tfs.build_decoder(_tiny(block=block, attention_kernel=kernel))
    plain.load_state_dict(with_dropout.state_dict())
    tokens = torch.randint(0, 256, (2, 12))
    with_dropout.eval(), plain.eval()
    assert torch.equal(with_dropout(tokens), plain(tokens))
    with_dropout.train()
    first, second = with_dropout(tokens), with_dropout(tokens)
    assert not torch.allclose(first, second)


def _zero_fraction(x: torch.Tensor) -> float:
    return float((x == 0).float().mean())


def test_each_site_drops_a_fraction_p_while_training() -> None:
    decoder = tfs.build_decoder(_tiny(dropout=0.5)).train()
    tokens = torch.randint(0, 256, (8, 64))
    positions = torch.arange(64)
    assert _zero_fraction(decoder.residual_at_start(tokens, positions)) == pytest.approx(
        0.5, abs=0.03
    )
    _, cache = decoder.run_with_cache(tokens, names_filter=lambda name: "resid" in name)
    attention_update = cache["blocks.0.hook_resid_mid"] - cache["blocks.0.hook_resid_pre"]
    assert _zero_fraction(attention_update) == pytest.approx(0.5, abs=0.03)
    mlp_update = cache["blocks.0.hook_resid_post"] - cache["blocks.0.hook_resid_mid"]
    assert _zero_fraction(mlp_update) == pytest.approx(0.5, abs=0.03)


def test_the_attention_weights_are_dropped_without_bias() -> None:
    kernel = tfs.load_registry(autoload=False).get("attention_kernel", "materialized").factory(
        _tiny(dropout=0.5).dims)  # fmt: skip
    q, k, v = (torch.randn(1, 1, 6, 8) for _ in range(3))
    positions = torch.arange(6)
    expected = kernel.eval()(q, k, v, query_positions=positions, key_positions=positions)
    kernel.train()
    draws = torch.stack([kernel(q, k, v, query_positions=positions, key_positions=positions)
                         for _ in range(4000)])  # fmt: skip
    assert not torch.allclose(draws[0], expected)
    torch.testing.assert_close(draws.mean(0), expected, atol=0.06, rtol=0)


@pytest.mark.parametrize("kernel", ["flash", "linear"])
def test_a_kernel_that_cannot_drop_its_weights_is_refused_by_name(kernel: str) -> None:
    with pytest.raises(tfs.SpecError, match=f"the {kernel} kernel has no dropout on its attention"):
        tfs.build_decoder(_tiny(dropout=0.1, attention_kernel=kernel))


@pytest.mark.parametrize("value", [1.0, -0.1, "half", True, float("nan")])
def test_dropout_must_be_a_probability_below_one(value: object) -> None:
    data = {**_tiny().to_dict(), "dropout": value}
    with pytest.raises(tfs.SpecError, match="dropout"):
        tfs.DecoderSpec.from_dict(data)


def test_specs_without_dropout_read_and_write_as_before() -> None:
    assert "dropout" not in _tiny().to_dict()
    spec = _tiny(dropout=0.2)
    assert tfs.DecoderSpec.from_toml(spec.to_toml()) == spec
    assert tfs.DecoderSpec.from_json(spec.to_json()).dropout == 0.2


def test_a_run_with_dropout_resumes_bit_for_bit(tmp_path: Path) -> None:
    data = tmp_path / "text.txt"
    data.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    spec = tmp_path / "spec.toml"
    spec.write_text(_tiny(dropout=0.2).to_toml())
    train(tiny_run(data, tmp_path / "straight", spec=str(spec), steps=10))
    train(tiny_run(data, tmp_path / "split", spec=str(spec), steps=10, stop_after=5))
    train(tiny_run(data, tmp_path / "split", spec=str(spec), steps=10, resume=True))
    losses = [[r["loss"] for r in read_log(tmp_path / run / "log.jsonl") if "loss" in r]
              for run in ("straight", "split")]  # fmt: skip
    assert losses[0] == losses[1]
