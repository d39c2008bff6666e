"""Weight decay goes to matrices only, and checkpoints keep AdamW's moments by parameter name
(older ones, numbered by the optimizer's grouping then, still resume exactly)."""

import json
from pathlib import Path

import pytest
import torch

from tests.training.conftest import logged_losses as _losses
from tests.training.conftest import tiny_run as config
from transformer_from_scratch import DecoderSpec, build_decoder
from transformer_from_scratch.core.checkpoint import load_checkpoint
from transformer_from_scratch.training import state as run_folder
from transformer_from_scratch.training.config import TrainConfig
from transformer_from_scratch.training.loop import make_optimizer, train

SIZES = {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 32, "d_vocab": 13,
         "n_ctx": 8}  # fmt: skip


@pytest.mark.parametrize("preset", ["gpt2", "llama", "seed", "mistral"])
def test_decay_goes_to_matrices_not_to_biases_gains_or_positions(preset: str) -> None:
    spec = DecoderSpec.preset(preset).evolve(**SIZES, n_kv_heads=2)
    decoder = build_decoder(spec)
    decay, rest = make_optimizer(decoder, TrainConfig()).param_groups
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    decayed = {id(p) for p in decay["params"]}
    for name, parameter in decoder.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        vector = parameter.dim() < 2 or leaf == "bias" or leaf.startswith("b_")
        position = name.startswith("positional.")
        assert (id(parameter) in decayed) == (not vector and not position), name
    kinds = {n.rsplit(".", 1)[-1] for n, p in decoder.named_parameters() if id(p) in decayed}
    assert "weight" in kinds  # the token embedding (and unembedding) table
    assert {"W_Q", "W_K", "W_V", "W_O"} <= kinds


def test_gpt2_attention_biases_are_matrices_yet_not_decayed() -> None:
    decoder = build_decoder(DecoderSpec.preset("gpt2").evolve(**SIZES))
    b_q = decoder.blocks[0].attention.b_Q
    assert b_q.dim() == 2  # [head d_head]: a rank-based rule would decay it
    decay, _ = make_optimizer(decoder, TrainConfig()).param_groups
    assert all(p is not b_q for p in decay["params"])


def _rewrite_in_the_old_layout(out: Path) -> None:
    """Rewrite the latest checkpoint's optimizer state as checkpoints before this change held it:
    tensors numbered by position in (every parameter of two or more dimensions, then the rest)."""
    saved = run_folder.latest(out)
    assert saved is not None
    tensors, info = run_folder.read_state(saved)
    decoder = load_checkpoint(saved.model).decoder
    named = list(decoder.named_parameters())
    order = [n for n, p in named if p.dim() >= 2] + [n for n, p in named if p.dim() < 2]
    old = {k: v for k, v in tensors.items() if not k.startswith("optimizer.")}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            parameter, key = name[len("optimizer.") :].rsplit(".", 1)
            old[f"optimizer.{order.index(parameter)}.{key}"] = value
    groups = json.loads(info["optimizer"])["param_groups"]
    sizes = [sum(p.dim() >= 2 for _, p in named), sum(p.dim() < 2 for _, p in named)]
    groups[0]["params"] = list(range(sizes[0]))
    groups[1]["params"] = list(range(sizes[0], sizes[0] + sizes[1]))
    info = {k: v for k, v in info.items() if k in ("optimizer", "config", "corpus", "data_sha256")}
    info["optimizer"] = json.dumps({"param_groups": groups, "scalars": {}})
    tokenizer = load_checkpoint(saved.model).tokenizer
    assert tokenizer is not None
    run_folder.save(out, saved.step, decoder, tokenizer, old, info)


def test_a_checkpoint_with_numbered_moments_resumes_exactly(data: Path, tmp_path: Path) -> None:
    train(config(data, tmp_path / "straight", steps=8, log_every=1, eval_every=100))
    train(config(data, tmp_path / "split", steps=8, log_every=1, eval_every=100, stop_after=4))
    _rewrite_in_the_old_layout(tmp_path / "split")
    train(config(data, tmp_path / "split", steps=8, log_every=1, eval_every=100, resume=True))
    assert _losses(tmp_path / "split") == _losses(tmp_path / "straight")


def test_moments_are_stored_by_parameter_name(data: Path, tmp_path: Path) -> None:
    train(config(data, tmp_path / "run", steps=2, eval_every=100))
    saved = run_folder.latest(tmp_path / "run")
    assert saved is not None
    tensors, _ = run_folder.read_state(saved)
    assert "optimizer.blocks.0.attention.b_Q.exp_avg_sq" in tensors
    assert torch.all(tensors["optimizer.blocks.0.attention.b_Q.exp_avg_sq"] >= 0)
