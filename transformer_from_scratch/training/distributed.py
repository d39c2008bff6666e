"""Running under ``torchrun``: one process per device, gradients averaged by DDP.

Every process draws the same global batch (same seed, same sampler) and trains on its own
slice, so N processes with a global batch B follow the same loss curve as one process with B.
"""

import os
import time

import attrs
import torch
import torch.distributed as dist

from transformer_from_scratch.core.errors import TfsError


@attrs.frozen
class World:
    """This process's rank and the number of processes (1 when not distributed)."""

    rank: int = 0
    size: int = 1
    # Where collectives' tensors live (NCCL: CUDA).
    device: torch.device = attrs.field(factory=lambda: torch.device("cpu"))

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

    def first_problem(self, problem: str | None) -> str | None:
        """The lowest-ranked process's problem, told to every process (so all stop together
        instead of the others waiting forever at the next collective)."""
        if self.size == 1:
            return problem
        who = torch.tensor([self.rank if problem else self.size], device=self.device)
        dist.all_reduce(who, op=dist.ReduceOp.MIN)
        first = int(who)
        if first == self.size:
            return None
        text = (problem or "").encode()
        length = torch.tensor([len(text)], device=self.device)
        dist.broadcast(length, first)
        data = torch.zeros(int(length), dtype=torch.uint8, device=self.device)
        if self.rank == first:
            data = torch.tensor(list(text), dtype=torch.uint8, device=self.device)
        dist.broadcast(data, first)
        return bytes(data.tolist()).decode()

    def gather(self, value: torch.Tensor) -> torch.Tensor:
        """Every process's ``value`` (same shape and dtype everywhere), stacked in rank order."""
        if self.size == 1:
            return value[None]
        here = value.to(self.device)
        parts = [torch.empty_like(here) for _ in range(self.size)]
        dist.all_gather(parts, here)
        return torch.stack(parts).cpu()

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.size > 1:
            dist.barrier()


def process_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of process ``rank``'s own random numbers (dropout masks) in a run seeded
    ``seed``: unlike the seed the weights are built from and unlike every other process's, and
    (``step``: where a run resumed onto another number of processes) unlike the earlier ones."""
    return (seed * 1_000_003 + 7_919 * (rank + 1) + 104_729 * step) % 2**63


def join(device: torch.device, *, group: bool = False) -> World:
    """Join the process group torchrun describes in the environment (or stay alone; with
    ``group``, a process group of one, which sharding needs even alone)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if size == 1 and not group:
        return World(device=device)
    if not dist.is_initialized():
        if size == 1:
            store = dist.HashStore()  # type: ignore[attr-defined]
            dist.init_process_group(backend, store=store, rank=0, world_size=1)
        else:
            dist.init_process_group(backend=backend)
    return World(dist.get_rank(), dist.get_world_size(), device)


def leave(world: World, *, together: bool = True) -> None:
    """Leave the process group, if there is one (``together``: every process is leaving now;
    otherwise this one leaves alone, after an error, without waiting for the others).

    Gloo's worker threads free each finished collective's tensors after the caller has its
    result, and freeing a tensor Python made takes the GIL. The process group's destructor
    joins those threads while holding the GIL (PyTorch's, when the last reference goes, e.g.
    with DDP's reducer): if a thread is still freeing, the two wait for each other forever. A
    barrier and a moment with the GIL released first let every thread finish."""
    if dist.is_initialized():
        if together:
            dist.barrier()
        time.sleep(0.05)  # releases the GIL to the threads still freeing tensors
        dist.destroy_process_group()
