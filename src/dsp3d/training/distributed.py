"""Data-parallel training over several processes (PyTorch DistributedDataParallel), launched by torchrun.

    torchrun --nproc_per_node=N -m dsp3d train --config FILE [--set ...] [--out RUN_DIR]

Each process (rank) builds its own stacked batches: batches are split by sample, never along a tensor
dimension, and a rank's batch holds whole CSFR pairs. The sphere stream of rank r is seeded by
``(seed, r)`` (rank 0 keeps the single-process stream), so ranks draw different spheres. DDP averages the
gradients, so every rank takes the same optimiser step; one step trains on N batches of
``train.batch_points`` points each.

What this module takes care of (the training loop calls it and stays the same in one process):
- the process group: from torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), NCCL on CUDA
  (each rank on ``cuda:LOCAL_RANK``), gloo on the CPU; no environment means one plain process;
- per stage, only the modules the stage uses take part in DDP: the other module's parameters are frozen
  (``requires_grad=False``) while the stage runs, so DDP needs no ``find_unused_parameters`` traversal;
- decisions every rank must share: a non-finite loss on any rank skips the step on every rank; a time
  budget follows rank 0's clock;
- reductions: logged loss terms are rank means, points/s a sum, validation and final mIoU come from one
  confusion matrix summed over ranks, each rank scoring its share of the held-out scenes;
- BatchNorm is plain, per rank (batch statistics of the rank's own batch); running statistics are not
  broadcast at every step but averaged over ranks before every validation, checkpoint and stage end
  (an exponential average is linear, so that is the running average of the ranks' mean statistics).

Files are written by rank 0 only (``RunFolder(writes=...)``) and hold the plain model, loadable in one
process.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger("dsp3d")

T = TypeVar("T")
# Collectives wait this long for a slow rank (one process per node filling the data cache, a validation)
# before failing; DSP3D_DIST_TIMEOUT_MIN overrides it.
DEFAULT_TIMEOUT_MIN = 60.0


@dataclass(frozen=True)
class World:
    """This process's place among the training processes; ``World()`` is one plain process."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # where collective tensors live (cuda for NCCL)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def all_sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over ranks (float64); the values themselves in one process."""
        if not self.distributed:
            return [float(v) for v in values]
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.cpu().tolist()

    def all_sum_counts(self, counts: np.ndarray) -> np.ndarray:
        """Element-wise int64 sums over ranks of an array of counts (a confusion matrix); itself in one
        process."""
        if not self.distributed:
            return counts
        tensor = torch.tensor(np.asarray(counts, dtype=np.int64), device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.cpu().numpy().astype(np.int64)

    def all_mean(self, values: dict[str, float]) -> dict[str, float]:
        """Rank means of named values."""
        sums = self.all_sum(list(values.values()))
        return {name: total / self.size for name, total in zip(values, sums, strict=True)}

    def loss_consensus(self, value: float) -> tuple[float, bool]:
        """(mean over ranks, finite on every rank) of a step's loss: a step is skipped by all or none."""
        finite = bool(np.isfinite(value))
        if not self.distributed:
            return value, finite
        total, count = self.all_sum([value if finite else 0.0, float(finite)])
        every = int(round(count)) == self.size
        return (total / self.size if every else float("nan")), every

    def from_main(self, values: Sequence[int]) -> list[int]:
        """Rank 0's integers on every rank."""
        if not self.distributed:
            return [int(v) for v in values]
        tensor = torch.tensor([int(v) for v in values], dtype=torch.int64, device=self.device)
        dist.broadcast(tensor, src=0)
        return [int(v) for v in tensor.cpu().tolist()]

    def barrier(self) -> None:
        if self.distributed:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def node_first(self, build: Callable[[], T]) -> T:
        """``build()`` on the first process of each node (local rank 0), then on the others, which read
        what it cached on disk. With a cache shared by the nodes, their first processes build it together
        (cache writes are atomic)."""
        if self.local_rank == 0:
            result = build()
            self.barrier()
            return result
        self.barrier()
        return build()


def current_world() -> World:
    """The World of an initialised process group, else one plain process."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    nccl = dist.get_backend() == "nccl"
    device = torch.device("cuda", local_rank) if nccl else torch.device("cpu")
    return World(dist.get_rank(), dist.get_world_size(), local_rank, device)


def launched() -> bool:
    """True under torchrun (or any launcher that sets WORLD_SIZE and RANK)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def rank_device(device: torch.device) -> torch.device:
    """``cuda`` means this rank's GPU (cuda:LOCAL_RANK) in a process group; other devices as given."""
    if device.type == "cuda" and device.index is None and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[World]:
    """Initialise the process group torchrun asks for (NCCL for a CUDA ``device``, else gloo), yield this
    rank's World, and tear the group down. Without torchrun's environment: yields ``World()``."""
    if not launched() or dist.is_initialized():
        yield current_world()
        return
    device = rank_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    minutes = float(os.environ.get("DSP3D_DIST_TIMEOUT_MIN", DEFAULT_TIMEOUT_MIN))
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=minutes))
    try:
        world = current_world()
        log.info("rank %d of %d (%s, %s)", world.rank, world.size, backend, device)
        yield world
        # Every rank tears the group down together: a rank that left while another still used the group
        # aborted in gloo's teardown ("terminate called without an active exception") on a loaded machine.
        # Not after an error, where the other ranks may never arrive.
        dist.barrier()
    finally:
        dist.destroy_process_group()


# Buffers synced when DDP is built, not at every forward (torch >= 2.13 names it forward_sync_buffers).
_NO_BUFFER_BROADCAST = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)


def wrap_stage(model: nn.Module, cross: bool, intra: bool, device: torch.device) -> nn.Module:
    """The module a stage runs: ``model`` itself in one process, else DDP over the parts the stage uses.

    ``model`` is a DSPModel; its CSFR (``cross``) / ISFR (``intra``) modules are frozen when the stage does
    not call them (``unwrap_stage`` unfreezes them). Buffers are not broadcast per step (see module doc).
    """
    if not current_world().distributed:
        return model
    for module, used in ((model.csfr, cross), (model.isfr, intra)):
        for parameter in module.parameters():
            parameter.requires_grad_(used)
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, **_NO_BUFFER_BROADCAST
    )


def unwrap_stage(model: nn.Module) -> None:
    """End of a stage: every parameter trainable again, BatchNorm running statistics equal on all ranks."""
    if not current_world().distributed:
        return
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    sync_buffers(model)


def sync_buffers(model: nn.Module) -> None:
    """Average the floating-point buffers (BatchNorm running mean / variance) over ranks, in place."""
    world = current_world()
    if not world.distributed:
        return
    buffers = [b for b in model.buffers() if b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.detach().reshape(-1).to(torch.float64) for b in buffers]).to(world.device)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat = flat / world.size
    offset = 0
    for buffer in buffers:
        count = buffer.numel()
        buffer.copy_(flat[offset : offset + count].view_as(buffer).to(buffer.device, buffer.dtype))
        offset += count


def shard(items: Sequence[T], world: World | None = None) -> list[T]:
    """This rank's share of ``items`` (every size-th one, from its rank)."""
    world = world or current_world()
    return list(items[world.rank :: world.size])
