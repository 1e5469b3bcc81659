"""Process-group set-up for ``torchrun`` (single or multi node), and the sampler that resumes mid-epoch.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT; a plain ``python`` run is world size 1
and never touches torch.distributed.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from galaxalign.runtime import pick_device


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_rank_world() -> tuple[int, int]:
    """(rank, world_size) as torchrun's environment gives them; (0, 1) for a plain single process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def rank_device(device: str = "auto", distributed: bool | None = None) -> torch.device:
    """This process's device: ``pick_device(device)``; one of several ranks drives the GPU of its LOCAL_RANK.

    ``distributed``: whether this process is one of several (default: torchrun's WORLD_SIZE > 1).
    """
    dev = pick_device(device)
    rank, world = env_rank_world()
    if dev.type == "cuda" and (world > 1 if distributed is None else distributed):
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", str(rank))))
        torch.cuda.set_device(dev)
    return dev


def init_distributed(device: str = "auto") -> DistEnv:
    """Join the process group torchrun describes (NCCL on GPU, gloo on CPU), or return world size 1.

    Each process drives the GPU of its LOCAL_RANK. If the group is already initialised (a test that
    spawned its own processes), it is reused.
    """
    rank, world = env_rank_world()
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return DistEnv(device=pick_device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = rank_device(device, distributed=True)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistEnv(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=dev)


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


@contextmanager
def process_group(world_size: int) -> Iterator[Callable[[], None]]:
    """A block that may wait for the other ranks: yields ``barrier()`` (a no-op for one process).

    Reuses a process group that is already initialised; otherwise joins torchrun's with gloo (a
    barrier needs no GPU collective, so CPU and GPU ranks alike) and destroys it on leaving.
    """
    if world_size <= 1:
        yield lambda: None
        return
    own = not dist.is_initialized()
    if own:
        dist.init_process_group("gloo")
    try:
        yield dist.barrier
    finally:
        if own:
            dist.destroy_process_group()


class ResumableSampler(DistributedSampler):
    """DistributedSampler (seeded shuffle per epoch, one shard per rank, drop_last) that can start
    ``skip`` samples into its epoch: a resumed run sees exactly the batches it had not yet seen, in
    the same permutation.

    Yields ``(index, sample_seed)`` pairs; the seed is a pure function of (seed, epoch, position in the
    global permutation), so augmentations do not depend on worker count or on being resumed.
    """

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int, batch_size: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        # OUR CHOICE: whole batches only (the remainder of each epoch's permutation is dropped), so every
        # rank takes the same number of optimiser steps and each contrastive batch has full size.
        self.batch_size = batch_size
        self.num_samples = (self.num_samples // batch_size) * batch_size
        self.total_size = self.num_samples * self.num_replicas
        self.skip = 0

    def set_position(self, epoch: int, skip: int) -> None:
        self.set_epoch(epoch)
        self.skip = int(skip)

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.dataset), generator=g).tolist()[: self.total_size]
        positions = range(self.rank, self.total_size, self.num_replicas)
        mine = [(order[p], (self.seed * 1_000_003 + self.epoch * 7_919 + p) % (2**31)) for p in positions]
        return iter(mine[self.skip :])

    def __len__(self) -> int:
        return self.num_samples - self.skip
