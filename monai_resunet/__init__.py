"""monai_resunet: a residual U-Net for 2D and 3D medical image segmentation, packaged as MONAI bundles.

Importing the package makes its public names visible to MONAI's config parser (it searches modules whose name
starts with ``monai``), so bundle configs can say ``"_target_": "ResUNet"`` after ``"$import monai_resunet"``.
"""

from monai_resunet import _cli_startup  # noqa: F401  (first: keeps mlflow out of CLI processes)

# isort: split
from monai_resunet import data, engines, inference, losses, networks, planning, transforms
from monai_resunet.bundle_root import default_bundle_root
from monai_resunet.model_properties import read_model_properties, write_model_properties
from monai_resunet.networks import ResUNet

__version__ = "0.1.0"
__all__ = [
    "ResUNet",
    "__version__",
    "data",
    "default_bundle_root",
    "engines",
    "inference",
    "losses",
    "networks",
    "planning",
    "read_model_properties",
    "transforms",
    "write_model_properties",
]
