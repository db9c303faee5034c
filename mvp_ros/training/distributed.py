"""`mvp train` on several processes, as `torchrun` starts them, with torch's DistributedDataParallel.

torchrun (on one node, or on several with its rendezvous flags) gives every process it starts
WORLD_SIZE, RANK and LOCAL_RANK; `mvp train` reads them and needs no flag of its own. Each process
(rank) joins the process group (NCCL when it trains on CUDA, gloo on the CPU), trains on its own
device (cuda:LOCAL_RANK, or the CPU), and draws its own batches and noise, seeded with seed + rank,
so rank 0 draws what a single process would. All ranks build the same weights from the same seed
and the same normalization from the same data; DistributedDataParallel averages the gradients, so
every rank takes the same optimizer step and keeps the same EMA weights. Rank 0 alone validates,
writes the log, the plot, the checkpoints and the training state.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..policy.config import ConfigError
from ..policy.model import ChunkPolicyModel
from ..policy.runtime import resolve_device

LossFunction = Callable[[dict, torch.Tensor, torch.Generator], tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def ranks_from_environment(environ: dict[str, str] | os._Environ = os.environ) -> Ranks:
    """The ranks torchrun set (WORLD_SIZE, RANK, LOCAL_RANK); one process of one if WORLD_SIZE is unset."""
    if "WORLD_SIZE" not in environ:
        return Ranks()
    values = {}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        try:
            values[name] = int(environ[name])
        except (KeyError, ValueError):
            raise ConfigError(f"environment variable {name}={environ.get(name)!r}: torchrun sets WORLD_SIZE, RANK and "
                              "LOCAL_RANK to integers; start several training processes with torchrun") from None
    ranks = Ranks(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])
    if not 0 <= ranks.rank < ranks.world_size or ranks.local_rank < 0:
        raise ConfigError(f"RANK={ranks.rank}, LOCAL_RANK={ranks.local_rank} do not fit WORLD_SIZE={ranks.world_size}")
    return ranks


def join(device_setting: str) -> tuple[Ranks, torch.device]:
    """This process's ranks and training device; joins the process group when there are several ranks."""
    ranks = ranks_from_environment()
    device = resolve_device(device_setting)
    if not ranks.distributed:
        return ranks, device
    if device.type == "cuda":
        if ranks.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={ranks.local_rank}, but torch sees {torch.cuda.device_count()} CUDA "
                              "device(s): start at most one process per GPU (torchrun --nproc_per_node)")
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ranks, device


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class _Loss(nn.Module):
    """DistributedDataParallel averages the gradients of what its module's forward computes: the loss."""

    def __init__(self, model: ChunkPolicyModel):
        super().__init__()
        self.model = model

    def forward(self, obs: dict, actions: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        return self.model.loss(obs, actions, generator)


def loss_function(model: ChunkPolicyModel, ranks: Ranks, device: torch.device) -> LossFunction:
    """`model.loss`, with its gradients averaged over the ranks when there are several."""
    if not ranks.distributed:
        return model.loss
    return DistributedDataParallel(_Loss(model), device_ids=[device.index] if device.type == "cuda" else None)


def mean_over_ranks(metrics: dict[str, float], ranks: Ranks, device: torch.device) -> dict[str, float]:
    """Every rank's `metrics` (the same keys on each) averaged; all ranks must call it together."""
    if not ranks.distributed:
        return metrics
    names = sorted(metrics)
    values = torch.tensor([float(metrics[name]) for name in names], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    return dict(zip(names, (values / ranks.world_size).tolist()))


def gather(value: Any, ranks: Ranks) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank; all ranks must call it together."""
    if not ranks.distributed:
        return [value]
    values: list[Any] = [None] * ranks.world_size
    dist.all_gather_object(values, value)
    return values
