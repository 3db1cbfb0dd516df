"""ResUNet and its blocks, registered for MONAI bundle configs (``"_target_": "ResUNet"``)."""

from monai_resunet.networks.blocks import (
    RESIDUAL_BLOCKS,
    ResidualBasicBlock,
    ResidualBottleneckBlock,
    ResidualStage,
    ResUpBlock,
)
from monai_resunet.networks.resunet import RESUNET_PRESETS, ResUNet

__all__ = [
    "RESIDUAL_BLOCKS",
    "RESUNET_PRESETS",
    "ResidualBasicBlock",
    "ResidualBottleneckBlock",
    "ResidualStage",
    "ResUNet",
    "ResUpBlock",
]
