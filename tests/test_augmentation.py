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


def test_class_indices_are_cached_and_centres_balanced():
    """The class indices are computed before the first random transform (so ``CacheDataset`` stores them), never
    reach the patches, and every class — a 2-voxel one included — gets patch centres, whatever the intensity
    (a z-scored MR structure darker than the mean is below 0)."""
    from monai.data import CacheDataset
    from monai.transforms import ClassesToIndicesd

    label = torch.zeros(1, 32, 32, 32)
    label[0, 2:4, 5, 5] = 2  # a 2-voxel class
    label[0, 16:30, 16:30, 16:30] = 1
    image = -torch.ones_like(label)
    chain = Compose(segmentation_augmentation(patch_size=(1, 1, 1), num_classes=3, num_samples=60,
                                              flip=False, affine_prob=0.0, intensity_prob=0.0))  # fmt: skip
    assert isinstance(chain.transforms[0], ClassesToIndicesd)
    dataset = CacheDataset([{"image": image, "label": label}], chain, progress=False)
    cached = dataset._cache[0]
    # background capped at 10,000 evenly spaced candidates, the others whole
    assert [len(i) for i in cached["label_cls_indices"]] == [10_000, 14**3, 2]
    chain.set_random_state(seed=0)
    patches = dataset[0]
    assert all("label_cls_indices" not in p for p in patches)
    centres = torch.stack([p["label"].flatten() for p in patches]).flatten()
    counts = torch.bincount(centres.long(), minlength=3)
    assert counts.min() >= 8, counts  # each class ≈ 20 of 60 (1-voxel patches: the patch is the centre)


@pytest.mark.parametrize("fused", [False, True])
def test_rotated_patches_come_from_the_volume_when_fused(fused):
    """With ``resample_from_volume`` a rotated patch well inside the volume shows image everywhere (MONAI's lazy
    resampling samples it from the whole volume); cropped first and then rotated, its corners are zero padding.
    Either way the image and the label stay aligned and every patch has the patch size."""
    label = torch.zeros(1, 64, 64, 64)
    label[:, 12:52, 12:52, 12:52] = 1
    image = label * 10.0 + 5.0
    chain = Compose(segmentation_augmentation(patch_size=(8, 8, 8), num_classes=2, num_samples=16, flip=True,
                                              affine_prob=1.0, rotate_range=0.5, scale_range=0.0,
                                              resample_from_volume=fused, intensity_prob=0.0))  # fmt: skip
    chain.set_random_state(seed=0)
    # patches centred in class 1: at least 12 voxels from the volume's edge, more than a rotated 8³ patch reaches
    inner = [p for p in chain({"image": image, "label": label}) if bool((p["label"][:, 3:5, 3:5, 3:5] > 0.5).all())]
    assert len(inner) >= 3  # about half the patches (the others are centred on the background)
    for patch in inner:
        assert tuple(patch["image"].shape) == (1, 8, 8, 8)
        has_zeros = bool((patch["image"] == 0).any())
        assert has_zeros != fused  # rotated by up to 0.5 rad about each axis: corners leave an 8³ crop


def test_fused_resampling_keeps_alignment_and_cached_indices():
    from monai.data import CacheDataset
    from monai.transforms import ClassesToIndicesd

    from monai_resunet.transforms.sampling import FusedResampling

    label = torch.zeros(1, 32, 32, 32)
    label[:, 6:20, 8:26, 10:22] = 1
    image = label * 10.0 + 5.0
    aug = segmentation_augmentation(
        patch_size=(16, 16, 16), num_classes=2, num_samples=4, affine_prob=0.5, resample_from_volume=True,
        intensity_prob=0.0,
    )  # fmt: skip
    chain = Compose(aug)
    assert isinstance(chain.transforms[0], ClassesToIndicesd) and isinstance(chain.transforms[1], FusedResampling)
    dataset = CacheDataset([{"image": image, "label": label}], chain, progress=False)
    assert "label_cls_indices" in dataset._cache[0]
    chain.set_random_state(seed=1)
    for _ in range(3):
        for patch in dataset[0]:
            assert tuple(patch["image"].shape) == (1, 16, 16, 16)
            agree = (np.asarray(patch["image"]) > 10.0) == (np.asarray(patch["label"]) > 0.5)
            assert agree.mean() > 0.97  # bilinear image, nearest label: they may differ on the boundary only
    with pytest.raises(ValueError, match="3D"):
        segmentation_augmentation(patch_size=(16, 16), slice_axis=2, resample_from_volume=True)


def _describe(obj, depth: int = 0):
    """A transform's type and public settings, recursively (random states and cached draws left out)."""
    if isinstance(obj, (list, tuple)):
        return [_describe(x, depth + 1) for x in obj]
    if isinstance(obj, dict):
        return {k: _describe(v, depth + 1) for k, v in obj.items()}
    if depth > 4 or not hasattr(obj, "__dict__") or isinstance(obj, (torch.Tensor, np.ndarray, type)):
        return repr(obj)
    if callable(obj) and hasattr(obj, "__name__"):
        return obj.__name__
    skip = {"R", "_do_transform", "_rand_k", "x", "factor", "_offset", "rand_affine_grid"}
    return (type(obj).__name__, {k: _describe(v, depth + 1) for k, v in vars(obj).items() if k not in skip})


@pytest.mark.parametrize("name", ["resunet3d_segmentation", "resunet2d_segmentation"])
def test_bundle_lists_and_python_builders_agree(name, tmp_path):
    """The bundles list their transforms in train.json; the Python builders scripts use must build the same."""
    from pathlib import Path

    from monai.bundle import ConfigParser

    from monai_resunet.transforms import segmentation_preprocessing

    parser = ConfigParser()
    parser.read_config(str(Path(__file__).parent.parent / "bundles" / name / "configs" / "train.json"))
    parser.update({"use_plan": False, "modality": "CT", "class_names": ["a", "b", "c"], "num_neighbours": 1})
    values = {k: parser.get_parsed_content(k) for k in ("pixdim", "ct_window", "patch_size", "num_samples")}
    common = dict(pixdim=values["pixdim"], modality="CT", ct_window=values["ct_window"],
                  reader=parser.get_parsed_content("image_reader"))  # fmt: skip
    if name.startswith("resunet2d"):
        pre = segmentation_preprocessing(pad_size=parser.get_parsed_content("pad_size"), slice_axis=2, num_neighbours=1,
                                         **common)  # fmt: skip
        aug = segmentation_augmentation(patch_size=values["patch_size"], num_classes=3,
                                        num_samples=values["num_samples"], slice_axis=2)  # fmt: skip
    else:
        pre = segmentation_preprocessing(pad_size=values["patch_size"], **common)
        aug = segmentation_augmentation(
            patch_size=values["patch_size"], num_classes=3, num_samples=values["num_samples"]
        )
    listed = parser.get_parsed_content("train#deterministic_transforms") + parser.get_parsed_content(
        "train#random_transforms"
    )
    built = pre + aug
    assert [type(t).__name__ for t in listed] == [type(t).__name__ for t in built]
    for ours, theirs in zip(listed, built):
        assert _describe(ours) == _describe(theirs), type(ours).__name__
    assert [type(r).__name__ for r in listed[0]._loader.readers][-3:] == [
        "FastNibabelReader", "SimpleITKReader", "DicomSeriesReader"
    ]  # the last registered is tried first: the DICOM series reader, then ours by suffix, then MONAI's  # fmt: skip
