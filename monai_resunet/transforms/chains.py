"""The bundles' transform lists as Python calls, for scripts (the benchmarks, the planner) that build the same
pipeline with other arguments: a deterministic part (cacheable, invertible for ``Invertd``) and a random
augmentation part, the split the MONAI model zoo uses.

The bundles do not call these: their ``train.json``/``inference.json``/``evaluate.json`` list the same transforms
as ``_target_`` entries, so each step can be overridden by id; ``tests/test_augmentation.py`` checks that the two
build the same transforms."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.transforms import (
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    Orientationd,
    RandAffined,
    RandFlipd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    SpatialPadd,
    Transform,
)
from monai.utils import ensure_tuple

from monai_resunet.data.nifti_reader import FastNibabelReader
from monai_resunet.data.sitk_reader import SimpleITKReader
from monai_resunet.transforms.intensity import NormalizeByModalityd, foreground_select_fn
from monai_resunet.transforms.io import LoadImageBySuffixd
from monai_resunet.transforms.sampling import FusedResampling, class_balanced_crop
from monai_resunet.transforms.slab_spacing import SlabSpacingd
from monai_resunet.transforms.slices import AddNeighbourSlicesd, slice_sampling

__all__ = ["segmentation_preprocessing", "segmentation_augmentation"]


def segmentation_preprocessing(
    keys: Sequence[str] = ("image", "label"),
    image_key: str = "image",
    pixdim: Sequence[float] | None = (1.0, 1.0, 1.0),
    modality: str = "MR",
    ct_window: Sequence[float] = (-175.0, 250.0),
    crop_foreground: bool = True,
    pad_size: Sequence[int] | None = None,
    reader=None,
    slice_axis: int = 2,
    num_neighbours: int = 0,
    ct_target_range: Sequence[float] = (0.0, 1.0),
) -> list[Transform]:
    """Load → channel first → RAS → crop to the body → resample to ``pixdim`` → normalise by modality → pad.

    Every step is invertible, so ``Invertd`` takes predictions back to the input's own grid. Images are
    resampled bilinearly, every other key (labels) with nearest neighbour.

    Args:
        keys: keys to load (image first, then labels if any).
        image_key: the image key (normalised; source of the foreground crop).
        pixdim: target voxel size in mm; ``None`` keeps the native spacing.
        modality: ``"CT"`` (window to [0, 1]) or ``"MR"``/other (non-zero z-score).
        ct_window: Hounsfield window for CT.
        ct_target_range: what the CT window maps to (default [0, 1]; a plan's z-scored range, see
            ``NormalizeByModalityd``).
        crop_foreground: crop to the bounding box of the body (raw intensity > 0, or > -500 HU for CT).
        pad_size: pad (symmetrically) to at least this spatial size, so random crops never fail on small
            volumes; ``None`` for no padding.
        reader: image reader instance(s) for ``LoadImaged``, preferred for the files they claim (``verify_suffix``;
            DICOM series folders need ``monai_resunet.data.DicomSeriesReader``); NIfTI then goes to
            ``monai_resunet.data.FastNibabelReader``, NRRD/MHA to ``monai_resunet.data.SimpleITKReader``, other
            formats to MONAI's readers, chosen by suffix.
        slice_axis: for 2.5D models, the axis whose neighbouring slices become channels.
        num_neighbours: 2.5D: neighbouring slices on each side stacked as extra channels (0 for 3D and plain 2D).

    Example::

        pre = Compose(segmentation_preprocessing(pixdim=(1.5, 1.5, 2.0), modality="CT", pad_size=(96, 96, 96)))
    """
    keys = list(keys)
    label_keys = [k for k in keys if k != image_key]
    # load in the file's own dtype (MONAI's default casts to float32 at once): a CT's int16 stays 2 bytes a voxel
    # until the spacing step resamples the body crop into float32, one slab at a time, so the full field of view
    # never exists in float32. The output is the same, the load stage's peak memory lower (3D bundle's
    # docs/experiments.md)
    # each file goes to the last-registered reader that claims its suffix (MONAI's choice by suffix, so a reader's
    # error is reported, not papered over by another reader): the caller's reader (a DICOM series reader), then
    # FastNibabelReader for NIfTI (ISA-L inflation, torch's threaded C-order copy: about twice as fast),
    # SimpleITKReader for NRRD/MHA (MONAI's ITKReader would need itk), then MONAI's defaults
    readers = [FastNibabelReader(), SimpleITKReader(), *([] if reader is None else ensure_tuple(reader))]
    load = LoadImageBySuffixd(keys, readers=readers, image_only=True, dtype=None)
    chain: list[Transform] = [
        load,
        EnsureChannelFirstd(keys),
        Orientationd(keys, axcodes="RAS"),
    ]
    # crop to the body before resampling, so only the body is resampled (on a CT, resampling the air around it
    # made the spacing step the peak-memory stage), and resample in float32 (MONAI's default float64 doubles
    # the buffers for no visible difference, 3D bundle's docs/experiments.md).
    # SlabSpacingd is MONAI's Spacingd sampled slab by slab (same output, metadata and inverse): on a 512×512×1000
    # CT MONAI's whole-volume sampling grid made this the peak-memory stage of inference
    if crop_foreground:
        chain.append(CropForegroundd(keys, source_key=image_key, select_fn=foreground_select_fn(modality)))
    if pixdim is not None:
        modes = ["bilinear" if k == image_key else "nearest" for k in keys]
        chain.append(SlabSpacingd(keys, pixdim=pixdim, mode=modes, dtype=np.float32))
    chain.append(
        NormalizeByModalityd(image_key, modality=modality, ct_window=ct_window, ct_target_range=ct_target_range)
    )
    if pad_size is not None:
        chain.append(SpatialPadd(keys, spatial_size=pad_size))
    if num_neighbours:
        chain.append(AddNeighbourSlicesd(image_key, slice_axis=slice_axis, num_neighbours=num_neighbours))
    chain.append(EnsureTyped(image_key, dtype="float32", track_meta=True))
    if label_keys:
        chain.append(EnsureTyped(label_keys, dtype="uint8", track_meta=True))
    return chain


def segmentation_augmentation(
    keys: Sequence[str] = ("image", "label"),
    image_key: str = "image",
    label_key: str = "label",
    patch_size: Sequence[int] = (96, 96, 96),
    num_classes: int = 2,
    num_samples: int = 2,
    flip: bool = True,
    flip_axes: Sequence[int] = (0, 1, 2),
    rotate90: bool = False,
    affine_prob: float = 0.3,
    rotate_range: float = 0.26,
    scale_range: float | tuple[float, float] = 0.1,
    resample_from_volume: bool = False,
    intensity_prob: float = 0.5,
    slice_axis: int | None = None,
) -> list[Transform]:
    """Class-balanced patch sampling and augmentation for training.

    ``RandCropByLabelClassesd`` centres patches on every class (background included) with equal probability,
    which keeps small structures in view as nnU-Net's foreground oversampling does; the class voxels are found
    once per volume, ahead of the cache, and any voxel of a class can be a centre (``class_balanced_crop``);
    then random flips on every
    axis, a random rotation (±15° about each axis) and scaling (±10 %) of 30 % of the patches, and intensity
    scale/shift.

    Why these defaults: flips, small rotations and scaling are nnU-Net's spatial augmentation (it applies rotation and
    scaling with probability 0.2 each, about a third of its patches get one or both); they are what lets a network
    trained on a few scans generalise to new ones (results: the 3D bundle's ``docs/experiments.md``). 90° rotations are
    off by default: after ``Orientationd("RAS")`` every scan has the same anatomical orientation, so a rotated patch
    shows the network an anatomy it will never see at inference time; turn them on for data without a canonical
    orientation (microscopy, ultrasound). Flips mirror every axis, as nnU-Net does; by the same argument
    ``flip_axes=(0,)`` (left-right only, axis 0 after RAS) keeps anatomy upright; it scored within run-to-run noise of
    the default, too little evidence to change the default every benchmark was measured with. nnU-Net's wider ranges
    (``rotate_range=0.52``, ``scale_range=(-0.3, 0.4)``) with the patch resampled from the volume
    (``resample_from_volume=True``) gained nothing in a short budget, so the defaults stay (they are options).

    Args:
        keys: image and label keys.
        image_key: the image key (intensity augmentation).
        label_key: the label key (patch centres).
        patch_size: training patch size.
        num_classes: classes in the label, background included.
        num_samples: patches per volume per iteration.
        flip: random flips (each axis of ``flip_axes`` with probability 0.5).
        flip_axes: the axes of the volume to flip along (0, 1, 2 = left-right, posterior-anterior, inferior-superior
            after ``Orientationd("RAS")``); with ``slice_axis``, those that lie in the slice's plane.
        rotate90: random 90° rotations in the plane of the first two axes (off by default, see above).
        affine_prob: probability of a random rotation/scaling of a patch (0 disables it).
        rotate_range: largest rotation about each axis, in radians (0.26 ≈ 15°; nnU-Net: 0.52 ≈ 30°).
        scale_range: scale factor range about 1, per axis: ``0.1`` is 0.9–1.1; ``(-0.3, 0.4)`` is nnU-Net's 0.7–1.4.
        resample_from_volume: 3D only: the crop and the rotation/scaling are one resampling of the whole volume
            (``FusedResampling``, MONAI's lazy resampling), so a rotated or zoomed-out patch's corners show the image
            around the crop instead of zeros; the flips follow, on the patch. Slower on large volumes (see
            ``FusedResampling``). Off: the patch is cropped, then rotated with zero padding.
        intensity_prob: probability of each intensity augmentation.
        slice_axis: ``None`` for 3D patches; 0, 1 or 2 to sample 2D slices along that axis (``patch_size`` is
            then 2D) for a 2D network, with the same augmentation in 2D.

    Example::

        aug = Compose(segmentation_augmentation(patch_size=(64, 64, 64), num_classes=3))
    """
    keys = list(keys)
    modes = ["bilinear" if k == image_key else "nearest" for k in keys]
    spatial_dims = len(patch_size)
    if slice_axis is not None:
        sampling: list[Transform] = slice_sampling(keys, label_key, patch_size, slice_axis, num_classes, num_samples)
    else:
        sampling = class_balanced_crop(keys, label_key, patch_size, num_classes, num_samples)
    mirroring: list[Transform] = []
    if flip:
        # volume axes → patch axes: a 2D patch keeps the two axes other than slice_axis, in order
        in_plane = [a for a in range(3) if a != slice_axis] if slice_axis is not None else list(range(spatial_dims))
        mirroring += [RandFlipd(keys, prob=0.5, spatial_axis=in_plane.index(a)) for a in flip_axes if a in in_plane]
    if rotate90:
        mirroring.append(RandRotate90d(keys, prob=0.5, max_k=3, spatial_axes=(0, 1)))
    affine: list[Transform] = []
    if affine_prob > 0:
        affine.append(
            RandAffined(
                keys, prob=affine_prob, rotate_range=[rotate_range] * (1 if spatial_dims == 2 else 3),
                scale_range=[scale_range] * spatial_dims, mode=modes, padding_mode="zeros",
            )
        )  # fmt: skip
    if resample_from_volume:
        if slice_axis is not None:
            raise ValueError("resample_from_volume applies to 3D patches (slice_axis=None).")
        # the crop and the rotation/scaling become one resampling; the class indices stay ahead of it (deterministic,
        # so CacheDataset stores them), the flips after it, on the patch (inside, MONAI's lazy fast path would flip
        # the whole volume for every patch; flips and a rotation drawn symmetrically commute in distribution)
        indices, *crop = sampling
        chain = [indices, FusedResampling(crop + affine), *mirroring]
    else:
        chain = sampling + mirroring + affine
    if intensity_prob > 0:
        chain += [
            RandScaleIntensityd(image_key, factors=0.1, prob=intensity_prob),
            RandShiftIntensityd(image_key, offsets=0.1, prob=intensity_prob),
        ]
    return chain
