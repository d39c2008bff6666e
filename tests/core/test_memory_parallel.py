"""Memory estimates per device: a whole copy under DDP, 1/N plus gathered blocks under FSDP."""

import pytest

import transformer_from_scratch as tfs
from tests.conftest import Tfs
from transformer_from_scratch.core import memory
from transformer_from_scratch.core.builder import count_parameters


def test_fsdp_shards_states_and_adds_the_gathered_blocks() -> None:
    spec = tfs.DecoderSpec.preset("small")
    count = count_parameters(spec)
    assert count is not None
    whole = memory.estimate(spec, count.total, batch=4, context=64)
    sharded = memory.estimate(spec, count.total, batch=4, context=64, parallel="fsdp",
                              world_size=8, block_parameters=count.per_layer)  # fmt: skip
    assert sharded.weights == -(-whole.weights // 8)
    assert sharded.optimizer == 2 * sharded.weights and sharded.gradients == sharded.weights
    assert sharded.gathered == 3 * count.per_layer * 4  # two blocks' weights, one's gradient
    assert sharded.activations == whole.activations
    one = memory.estimate(spec, count.total, batch=4, context=64, parallel="fsdp", world_size=1,
                          block_parameters=count.per_layer)  # fmt: skip
    assert one == whole  # one device: nothing to shard or gather
    ddp = memory.estimate(spec, count.total, batch=4, context=64, world_size=8,
                          block_parameters=count.per_layer)  # fmt: skip
    assert ddp == whole  # each device holds everything
    with pytest.raises(tfs.TfsError, match="choose one of ddp, fsdp"):
        memory.estimate(spec, count.total, parallel="zero")


def test_spec_show_memory_per_device(tfs_cli: Tfs) -> None:
    result = tfs_cli("spec", "show", "llama", "--memory", "--batch-size", "1", "--context", "4096",
                     "--dtype", "bfloat16", "--parallel", "fsdp", "--world-size", "8")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "training, fsdp, each of 8 devices: batch 1 x context 4096 per device" in result.stdout
    assert "gathered blocks" in result.stdout
