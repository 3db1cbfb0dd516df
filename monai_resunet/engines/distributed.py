"""DDP helpers for the ``multi_gpu_*.json`` overrides: NCCL on CUDA, gloo otherwise, so the same torchrun
command runs on a GPU node and on a CPU-only machine; a sampler that lets a validation set be smaller than the
number of ranks."""

from __future__ import annotations

import os
from collections.abc import Sized

import torch
import torch.distributed as dist
from ignite.engine import Engine
from monai.data import DistributedSampler as MonaiDistributedSampler
from monai.engines.utils import IterationEvents

__all__ = ["init_distributed", "distributed_device", "is_rank0", "DistributedSampler"]


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


class DistributedSampler(MonaiDistributedSampler):
    """MONAI's ``DistributedSampler`` that also takes a dataset smaller than the number of ranks.

    - ``even_divisible=False`` (validation): MONAI refuses a dataset shorter than the ranks. Here each rank past
      the dataset's end gets one stand-in case (a copy of case ``rank % len``) so its evaluator runs and joins
      the metrics' all-gather (an evaluator with no data skips its run, and the other ranks would wait for it
      forever); :meth:`attach` blanks the stand-in's label, which MONAI's metrics (``ignore_empty``) score NaN and
      leave out of the mean, so the metric is exactly that of the real cases.
    - ``even_divisible=True`` (training): a dataset shorter than the ranks is an error that says so (each rank
      would train on copies of the same few cases).

    Args:
        dataset: the dataset to shard.
        even_divisible: as in MONAI: ``True`` pads every rank to the same length, ``False`` does not.
        num_replicas: number of ranks (default: the process group's).
        rank: this rank (default: the process group's).
        shuffle: shuffle the indices each epoch (``set_epoch``).
        name: what the dataset is, for the error message.
        kwargs: ``seed``, ``drop_last`` of PyTorch's sampler.

    Example::

        sampler = DistributedSampler(val_ds, even_divisible=False, shuffle=False, name="validation set")
        loader = DataLoader(val_ds, sampler=sampler)
        sampler.attach(evaluator)  # blank stand-in labels on ranks past the end of the dataset
    """

    def __init__(
        self,
        dataset: Sized,
        even_divisible: bool = True,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        name: str = "dataset",
        **kwargs,
    ) -> None:
        size = len(dataset)
        replicas = num_replicas if num_replicas is not None else dist.get_world_size()
        if size == 0:
            raise ValueError(f"the {name} is empty: nothing to distribute over {replicas} rank(s).")
        if even_divisible and size < replicas:
            raise ValueError(
                f"the {name} has {size} case(s), fewer than the {replicas} ranks (torchrun --nproc_per_node): every "
                "rank needs a case of its own; run fewer processes or add cases."
            )
        short = not even_divisible and size < replicas
        # MONAI's uneven split for the usual case; for a short dataset, PyTorch's padded one (one case per rank)
        super().__init__(dataset, even_divisible or short, num_replicas, rank, shuffle, **kwargs)
        self.stand_in = short and self.rank >= size  # this rank's only case is a copy of another rank's

    def attach(self, engine: Engine) -> None:
        """Blank the labels of this rank's stand-in cases in ``engine``'s output, after its post-processing and
        before its metrics (a no-op on ranks with cases of their own)."""
        if self.stand_in:
            engine.add_event_handler(IterationEvents.MODEL_COMPLETED, _blank_labels)


def _blank_labels(engine: Engine, key: str = "label") -> None:
    outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
    for item in outputs:
        if isinstance(item, dict) and isinstance(item.get(key), torch.Tensor):
            item[key] = torch.zeros_like(item[key])
