"""Running under ``torchrun``: one process per device, gradients averaged by DDP.

Every process draws the same global batch (same seed, same sampler) and trains on its own
slice, so N processes with a global batch B follow the same loss curve as one process with B.
"""

import os

import attrs
import torch
import torch.distributed as dist

from transformer_from_scratch.core.errors import TfsError


@attrs.frozen
class World:
    """This process's rank and the number of processes (1 when not distributed)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Whether this process writes files and prints."""
        return self.rank == 0

    def share(self, batch_size: int) -> slice:
        """This process's slice of a global batch."""
        if batch_size % self.size:
            raise TfsError(
                f"--batch-size {batch_size} does not split evenly over {self.size} processes"
            )
        per = batch_size // self.size
        return slice(self.rank * per, (self.rank + 1) * per)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of ``value`` over all processes."""
        if self.size == 1:
            return value
        total = value.detach().clone()
        dist.all_reduce(total)
        return total / self.size


def join(device: torch.device) -> World:
    """Join the process group torchrun describes in the environment (or stay alone)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return World(dist.get_rank(), dist.get_world_size())


def leave(world: World) -> None:
    """Leave the process group, if there is one."""
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
