"""Plan a training recipe from the data set (spacing, normalisation, mirroring, patch, batch), nnU-Net's way, with
MONAI's ``DataAnalyzer`` for the statistics; ``python -m monai_resunet plan --dataset_dir DIR``."""

from monai_resunet.planning.mirroring import CONFUSION_THRESHOLD, decide_mirror_axes, mirror_overlaps
from monai_resunet.planning.planner import (
    CPU_MEMORY_BUDGET_GIB,
    DATASTATS_FILE,
    DEFAULT_NETWORK,
    DEFAULT_NETWORK_2D,
    PLAN_FILE,
    activation_bytes_per_voxel,
    ensure_plan,
    load_plan,
    plan_dataset,
    plan_from_statistics,
    print_plan,
    slice_plan,
)

__all__ = [
    "CONFUSION_THRESHOLD",
    "CPU_MEMORY_BUDGET_GIB",
    "DATASTATS_FILE",
    "DEFAULT_NETWORK",
    "DEFAULT_NETWORK_2D",
    "PLAN_FILE",
    "activation_bytes_per_voxel",
    "decide_mirror_axes",
    "ensure_plan",
    "load_plan",
    "mirror_overlaps",
    "plan_dataset",
    "plan_from_statistics",
    "print_plan",
    "slice_plan",
]
