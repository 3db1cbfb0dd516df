"""``segmentation_augmentation``: which flips it makes, in 3D and for 2D slices, and that its patches keep the
image and the label aligned."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import Compose, RandFlipd

from monai_resunet.transforms import segmentation_augmentation


def _flip_axes(chain) -> list[int]:
    return [t.flipper.spatial_axis for t in chain if isinstance(t, RandFlipd)]


@pytest.mark.parametrize(
    "slice_axis,patch,flip_axes,expected",
    [
        (None, (16, 16, 16), (0,), [0]),  # RAS volume: left-right only
        (None, (16, 16, 16), (0, 1, 2), [0, 1, 2]),  # nnU-Net's mirroring, on request
        (2, (16, 16), (0,), [0]),  # axial slices: x is the patch's first axis
        (1, (16, 16), (0,), [0]),  # coronal slices: (x, z)
        (0, (16, 16), (0,), []),  # sagittal slices have no left-right axis
        (0, (16, 16), (0, 1, 2), [0, 1]),
    ],
)
def test_flips_follow_the_volume_axes(slice_axis, patch, flip_axes, expected):
    chain = segmentation_augmentation(patch_size=patch, num_classes=2, flip_axes=flip_axes, slice_axis=slice_axis)
    assert _flip_axes(chain) == expected
    assert _flip_axes(segmentation_augmentation(patch_size=patch, flip=False, slice_axis=slice_axis)) == []


def test_patches_keep_image_and_label_aligned():
    label = torch.zeros(1, 24, 24, 24)
    label[:, 4:12, 6:18, 8:20] = 1
    image = label * 10.0 + 5.0  # the label is readable from the image, so any misalignment shows
    chain = Compose(segmentation_augmentation(patch_size=(16, 16, 16), num_classes=2, num_samples=4,
                                              affine_prob=0.0, intensity_prob=0.0))  # fmt: skip
    chain.set_random_state(seed=0)
    for patch in chain({"image": image, "label": label}):
        assert tuple(patch["image"].shape) == (1, 16, 16, 16)
        np.testing.assert_array_equal(np.asarray(patch["image"]) > 10.0, np.asarray(patch["label"]) > 0.5)
