"""This process's place in a training job: a world of one under plain ``python``, one of
``WORLD_SIZE`` processes under torchrun (NCCL on GPUs, gloo on CPUs), and the few collective
operations the training loop and the evaluations need.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Dist:
    """This process's place in the process group (a world of one without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on GPUs, gloo on
    CPUs. A plain ``python`` run is a world of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world == 1:
        return Dist(device=torch.device("cuda" if cuda else "cpu"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return Dist(dist.get_rank(), world, local, device)


def all_reduce(t: torch.Tensor, d: Dist, op=None) -> torch.Tensor:
    """Sum (or ``op``) a CPU tensor over processes, in place; NCCL needs it on the GPU."""
    if d.world_size > 1:
        on_device = t.to(d.device)
        dist.all_reduce(on_device, op=op or dist.ReduceOp.SUM)
        t.copy_(on_device.cpu())
    return t


def sync_buffers(model: nn.Module, d: Dist) -> None:
    """Give every process rank 0's BatchNorm statistics. DDP only broadcasts them at the start of
    each forward, so after the last step they differ; evaluation and the end of the run need one
    model."""
    if d.world_size > 1:
        for buf in model.buffers():
            on_device = buf.data.to(d.device)
            dist.broadcast(on_device, 0)
            buf.data.copy_(on_device)
