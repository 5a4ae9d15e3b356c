"""torchrun support: which process this is, and the few collective operations training needs.

Under `torchrun --nproc_per_node=N -m trapcls train ...` every process runs the same command;
torchrun sets RANK, WORLD_SIZE and LOCAL_RANK. Without them this is a world of one and every
function here is a no-op, so single-process training pays nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from trapcls.core.system.deps import require


@dataclass(frozen=True)
class Dist:
    """This process's place in the job and the device it trains on."""

    rank: int
    world: int
    local_rank: int
    device: str

    @property
    def main(self) -> bool:
        """Rank 0 alone writes the run folder and logs progress."""
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of `values` over all processes."""
        if self.world == 1:
            return values
        torch = require("torch")
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def from_main(self, flag: bool) -> bool:
        """Rank 0's value of `flag`, on every process (decisions such as early stopping)."""
        if self.world == 1:
            return flag
        torch = require("torch")
        tensor = torch.tensor([int(flag)], device=self.device)
        torch.distributed.broadcast(tensor, src=0)
        return bool(tensor.item())

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.world > 1:
            require("torch").distributed.barrier()

    def close(self) -> None:
        """Leave the torchrun job."""
        if self.world > 1:
            require("torch").distributed.destroy_process_group()


def setup() -> Dist:
    """Join the torchrun job when there is one (NCCL on GPUs, gloo on the CPU)."""
    torch = require("torch")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = f"cuda:{local}" if cuda and world > 1 else ("cuda" if cuda else "cpu")
    if world > 1 and not torch.distributed.is_initialized():
        if cuda:
            torch.cuda.set_device(local)
        torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    return Dist(rank=rank, world=world, local_rank=local, device=device)


@contextmanager
def session() -> Iterator[Dist]:
    """This process's place in the job for the length of a `with` block; ranks other than 0 log only warnings."""
    dist = setup()
    if not dist.main:
        logging.getLogger("trapcls").setLevel(logging.WARNING)
    try:
        yield dist
    finally:
        dist.close()
