"""Batch inference under torchrun: this process's rank, its slice of the work, its device, and counts over all ranks.

`torchrun --nproc_per_node N -m faceinpaint.cli inpaint --image DIR ...` starts N copies of the command (on each of
several machines with --nnodes); every copy lists the same folder and keeps every N-th image from its rank on, so
each image is done by exactly one rank and no rank talks to another until the end. Then the ranks join a gloo
process group once, to gather how many images each wrote and failed; gloo runs over TCP on CPU tensors, which
every launch has, with or without GPUs.
"""

import os
from dataclasses import dataclass
from datetime import timedelta

from faceinpaint.errors import InpaintError

# How long a rank that finished its slice waits for the slowest one at the final count: shards of a big folder on
# machines of different speeds can finish hours apart. A rank that dies ends the launch sooner (torchrun stops
# the others).
GATHER_TIMEOUT = timedelta(hours=24)


@dataclass(frozen=True)
class Shard:
    """Process `rank` of `world` in the launch, the `local_rank`-th on its machine; a plain run is rank 0 of 1."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    def take(self, items: list) -> list:
        """This rank's slice: every world-th item from position `rank` on; the ranks' slices partition `items`."""
        return items[self.rank :: self.world]


SINGLE_PROCESS = Shard()


def _environment_int(name: str, default: int) -> int:
    text = os.environ.get(name, str(default))
    try:
        return int(text)
    except ValueError:
        raise InpaintError(f"${name} is {text!r}; torchrun sets it to a whole number") from None


def current_shard() -> Shard:
    """This process's place in a torchrun launch, from $RANK, $WORLD_SIZE and $LOCAL_RANK (set by torchrun)."""
    shard = Shard(_environment_int("RANK", 0), _environment_int("WORLD_SIZE", 1), _environment_int("LOCAL_RANK", 0))
    if shard.world < 1 or not 0 <= shard.rank < shard.world or shard.local_rank < 0:
        raise InpaintError(
            f"rank {shard.rank} of world size {shard.world} (local rank {shard.local_rank}) is not valid"
        )
    return shard


def rank_device(device: str, shard: Shard) -> str:
    """The device a rank runs on: with several ranks, "auto" and "cuda" mean this machine's GPU number
    local_rank (modulo the GPU count, so that more ranks than GPUs share them); other devices are kept as given."""
    import torch

    if shard.world == 1 or device not in ("auto", "cuda") or not torch.cuda.is_available():
        return device
    return f"cuda:{shard.local_rank % torch.cuda.device_count()}"


def gather_counts(counts: tuple[int, ...], shard: Shard) -> list[tuple[int, ...]]:
    """Every rank's `counts`, in rank order, on every rank (a collective: each rank of the launch must call it)."""
    if shard.world == 1:
        return [counts]
    import torch
    import torch.distributed as dist

    joined_here = not dist.is_initialized()
    if joined_here:  # torchrun's $MASTER_ADDR / $MASTER_PORT tell every rank where to meet
        dist.init_process_group("gloo", timeout=GATHER_TIMEOUT)
    try:
        mine = torch.tensor(counts, dtype=torch.int64)
        everyone = [torch.zeros_like(mine) for _ in range(shard.world)]
        dist.all_gather(everyone, mine)
    finally:
        if joined_here:
            dist.destroy_process_group()
    return [tuple(int(value) for value in row) for row in everyone]
