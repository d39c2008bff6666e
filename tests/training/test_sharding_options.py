"""Sharding and memory options that one process shows: activation checkpointing, FSDP in a
process group of one (bfloat16 compute, float32 master weights), and --parallel auto."""

from pathlib import Path

import pytest
import torch

from tests.training.conftest import logged_losses as _losses
from tests.training.conftest import tiny_run as config
from transformer_from_scratch.core.errors import TfsError
from transformer_from_scratch.training.loop import run_trainer, train
from transformer_from_scratch.training.sharding import choose


def test_activation_checkpointing_recomputes_each_block_and_changes_no_number(
    data: Path, tmp_path: Path
) -> None:
    calls = {False: 0, True: 0}
    for recompute in (False, True):
        cfg = config(data, tmp_path / str(recompute), steps=3, eval_every=100,
                     activation_checkpointing=recompute)  # fmt: skip
        train(cfg)
        _, trainer = run_trainer(config(data, tmp_path / f"count{recompute}", steps=1,
                                             eval_every=100, activation_checkpointing=recompute))  # fmt: skip
        attention = trainer.decoder.blocks[0].attention

        def count(*_: object, recompute: bool = recompute) -> None:
            calls[recompute] += 1

        handle = attention.register_forward_hook(count)
        trainer.decoder.train()
        trainer.train_step()
        handle.remove()
    assert _losses(tmp_path / "True") == _losses(tmp_path / "False")  # bit for bit
    assert (calls[False], calls[True]) == (1, 2)  # the forward pass, then its recomputation


def test_fsdp_alone_computes_in_bfloat16_and_keeps_float32_weights(
    data: Path, tmp_path: Path
) -> None:
    seen: set[torch.dtype] = set()

    def weights_in_use(module: torch.nn.Module, args: object) -> None:
        weight = getattr(module, "W_Q", None)
        if isinstance(weight, torch.Tensor):
            seen.add(weight.dtype)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(weights_in_use)
    try:
        result, trainer = run_trainer(config(data, tmp_path / "bf16", steps=2, parallel="fsdp",
                                             dtype="bfloat16"))  # fmt: skip
    finally:
        handle.remove()
    assert seen == {torch.bfloat16}  # gathered for compute in bfloat16
    assert {p.dtype for p in trainer.decoder.parameters()} == {torch.float32}  # master copy
    assert (tmp_path / "bf16" / "ckpt-0000002" / "checkpoint.json").exists()
    float32 = train(config(data, tmp_path / "f32", steps=2))
    assert result.val_loss == pytest.approx(float32.val_loss, abs=0.05)


def test_auto_shards_only_when_a_whole_copy_would_not_fit() -> None:
    from transformer_from_scratch.core import memory
    from transformer_from_scratch.core.spec import DecoderSpec

    spec = DecoderSpec.preset("llama")
    huge = memory.estimate(spec, 6_700_000_000, batch=1, context=4096)
    small = memory.estimate(DecoderSpec.preset("tiny"), 40_000, batch=1, context=16)
    cpu = torch.device("cpu")
    assert choose("auto", huge, cpu, world_size=8) == "fsdp"
    assert choose("auto", small, cpu, world_size=8) == "ddp"
    assert choose("auto", huge, cpu, world_size=1) == "ddp"  # alone, sharding saves nothing
    assert choose("fsdp", small, cpu, world_size=1) == "fsdp"
    with pytest.raises(TfsError, match="choose one of auto, ddp, fsdp"):
        choose("zero3", small, cpu, world_size=2)
