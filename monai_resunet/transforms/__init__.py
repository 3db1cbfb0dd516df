"""Transforms the bundle configs list (slab-wise spacing, modality-aware normalisation, label-map inversion,
neighbour-slice channels), and the same lists as Python calls for scripts (``segmentation_preprocessing``,
``segmentation_augmentation``)."""

from monai_resunet.transforms.chains import segmentation_augmentation, segmentation_preprocessing
from monai_resunet.transforms.intensity import NormalizeByModalityd, foreground_select_fn
from monai_resunet.transforms.io import LoadImageBySuffixd
from monai_resunet.transforms.label_inversion import InvertLabelMapd, axis_aligned_index_map
from monai_resunet.transforms.slab_spacing import SlabSpacingd, SlabSpatialResample
from monai_resunet.transforms.slices import AddNeighbourSlicesd, slice_sampling

__all__ = [
    "AddNeighbourSlicesd",
    "InvertLabelMapd",
    "LoadImageBySuffixd",
    "NormalizeByModalityd",
    "SlabSpacingd",
    "SlabSpatialResample",
    "axis_aligned_index_map",
    "foreground_select_fn",
    "segmentation_augmentation",
    "segmentation_preprocessing",
    "slice_sampling",
]
