"""ResUNet and its blocks, registered for MONAI bundle configs (``"_target_": "ResUNet"``)."""

from monai_resunet.networks.blocks import (
    RESIDUAL_BLOCKS,
    ResidualBasicBlock,
    ResidualBottleneckBlock,
    ResidualStage,
    ResUpBlock,
)
from monai_resunet.networks.execution import (
    autocast_cpu_bf16,
    configure_execution,
    cpu_has_bf16,
    to_channels_last,
)
from monai_resunet.networks.resunet import RESUNET_PRESETS, ResUNet

__all__ = [
    "autocast_cpu_bf16",
    "configure_execution",
    "cpu_has_bf16",
    "RESIDUAL_BLOCKS",
    "RESUNET_PRESETS",
    "ResidualBasicBlock",
    "ResidualBottleneckBlock",
    "ResidualStage",
    "ResUNet",
    "ResUpBlock",
    "to_channels_last",
]
