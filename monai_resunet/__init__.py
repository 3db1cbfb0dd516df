"""monai_resunet: a residual U-Net for 2D and 3D medical image segmentation, packaged as MONAI bundles."""

from monai_resunet.networks import ResUNet

__version__ = "0.1.0"
__all__ = ["ResUNet", "__version__"]
