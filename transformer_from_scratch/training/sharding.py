"""Fully sharded data parallelism (FSDP2): each process keeps 1/N of every weight.

``torch.distributed.fsdp.fully_shard`` turns each parameter into a DTensor sharded along its
first dimension; before a block computes, its weights are gathered whole, and after its backward
their gradients are reduced and scattered back to the shards. Each block is one unit (gathered,
used and freed on its own), the embedding, positional weights, final norm and unembedding form
the root unit (so a tied unembedding stays tied to the embedding it reads).

Big models are never built whole: the decoder is made on the ``meta`` device (shapes only),
sharded, given empty storage for this process's shards, and then filled by building the parts
again one at a time on the CPU from the same seed, in the builder's order, each copied into its
shards and dropped. The weights are therefore exactly those of an unsharded build with the same
seed, and the largest thing ever whole in memory is one block.
"""

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.utils.checkpoint import checkpoint

from transformer_from_scratch.core import memory
from transformer_from_scratch.core.builder import build_decoder, each_part
from transformer_from_scratch.core.decoder import Decoder
from transformer_from_scratch.core.errors import TfsError
from transformer_from_scratch.core.registry import Registry
from transformer_from_scratch.core.spec import DecoderSpec

MODES = ("auto", "ddp", "fsdp")


def choose(mode: str, whole: memory.MemoryEstimate | None, device: torch.device,
           world_size: int) -> str:  # fmt: skip
    """``ddp`` or ``fsdp``: ``auto`` shards when a whole copy per process would not fit."""
    if mode not in MODES:
        raise TfsError(f"--parallel {mode!r}: choose one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    free = memory.available(device)
    if world_size > 1 and whole is not None and free is not None and whole.total > free:
        return "fsdp"
    return "ddp"


def shard(decoder: Decoder, *, bfloat16: bool = False) -> Decoder:
    """Shard ``decoder`` in place: one FSDP unit per block, the rest in the root unit.

    ``bfloat16``: gather weights in bfloat16 for compute; gradients are reduced, and the
    optimizer keeps its weights and moments, in float32."""
    policy = MixedPrecisionPolicy(
        param_dtype=torch.bfloat16 if bfloat16 else None,
        reduce_dtype=torch.float32 if bfloat16 else None,
    )
    for block in decoder.blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(decoder, mp_policy=policy)
    return decoder


def build_sharded(spec: DecoderSpec, seed: int, device: torch.device, *, bfloat16: bool = False,
                  registry: Registry | None = None) -> Decoder:  # fmt: skip
    """The decoder ``build_decoder(spec)`` makes after ``torch.manual_seed(seed)``, sharded over
    the process group, without ever holding more than one part whole."""
    with torch.device("meta"):
        decoder = build_decoder(spec, registry)
    shard(decoder, bfloat16=bfloat16)
    decoder.to_empty(device=device)
    torch.manual_seed(seed)
    targets = dict(_all_tensors(decoder))
    for prefix, part in each_part(spec, registry):
        for name, value in _all_tensors(part):
            fill(targets[f"{prefix}.{name}"], value.to(device))
    return decoder


def _all_tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Parameters and buffers (persistent or not), by name; tied ones under each name."""
    return [*module.named_parameters(remove_duplicate=False),
            *module.named_buffers(remove_duplicate=False)]  # fmt: skip


@torch.no_grad()
def fill(target: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
    """Copy ``whole`` into ``target``, or, when ``target`` is sharded, this process's slice of
    it (cut exactly as ``target`` is cut); returns ``target``."""
    if isinstance(target, DTensor):
        mine = distribute_tensor(whole, target.device_mesh, target.placements, src_data_rank=None)
        target.to_local().copy_(mine.to_local())
    else:
        target.copy_(whole)
    return target


def checkpoint_blocks(decoder: Decoder) -> None:
    """Keep only each block's input for the backward pass and recompute the rest there
    (activation checkpointing: less memory, about one more forward pass of compute)."""
    for block in decoder.blocks:
        block.forward = functools.partial(_recomputed, block.forward)


def _recomputed(forward: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's shard of a sharded tensor (the tensor itself otherwise)."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def whole(value: torch.Tensor) -> torch.Tensor:
    """A sharded or replicated DTensor as one ordinary tensor (collective); others as they are."""
    return value.full_tensor() if isinstance(value, DTensor) else value
