"""Ignite handlers MONAI lacks (atomic last-state checkpoints with resume, training curves) and DDP helpers."""

from monai_resunet.config_flags import as_bool
from monai_resunet.engines.checkpoint import (
    BestModelCheckpoint,
    ResumableCheckpoint,
    atomic_torch_save,
    require_checkpoint,
)
from monai_resunet.engines.class_metrics import PerClassMetrics
from monai_resunet.engines.curves import TrainingCurves
from monai_resunet.engines.distributed import DistributedSampler, distributed_device, init_distributed, is_rank0

__all__ = [
    "BestModelCheckpoint",
    "DistributedSampler",
    "PerClassMetrics",
    "ResumableCheckpoint",
    "TrainingCurves",
    "as_bool",
    "atomic_torch_save",
    "distributed_device",
    "init_distributed",
    "is_rank0",
    "require_checkpoint",
]
