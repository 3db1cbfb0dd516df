"""DDP helpers for the ``multi_gpu_*.json`` overrides: NCCL on CUDA, gloo otherwise, so the same torchrun
command runs on a GPU node and on a CPU-only machine."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["init_distributed", "distributed_device", "is_rank0"]


def init_distributed() -> None:
    """Join the process group torchrun set up (idempotent): ``nccl`` when CUDA is available, else ``gloo``."""
    if dist.is_available() and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")


def distributed_device() -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` (set as current) when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def is_rank0() -> bool:
    """True outside DDP and on rank 0 inside it."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
