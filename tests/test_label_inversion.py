"""``InvertLabelMapd``: labels back to the input grid by per-axis nearest-neighbour indices, equal to MONAI's
``Invertd(nearest_interp=True)``; and the 3D bundle's default inference (``SlabArgmaxInferer`` → ``InvertLabelMapd``)
against the class-score path it replaced."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Activationsd, AsDiscreted, Compose, Invertd

from conftest import FAST_3D, copy_bundle
from monai_resunet import ResUNet, write_model_properties
from monai_resunet.inference import SlabArgmaxInferer
from monai_resunet.inference.segmenter import Segmenter
from monai_resunet.transforms import InvertLabelMapd, axis_aligned_index_map, segmentation_preprocessing


def _scan(path, shape, affine, seed=0) -> str:
    rng = np.random.RandomState(seed)
    image = rng.normal(100, 20, size=shape).astype(np.float32)
    image[:3] = 0  # background slabs for the body crop
    image[..., -2:] = 0
    nib.save(nib.Nifti1Image(image, affine), str(path))
    return str(path)


AFFINES = {
    # flipped, anisotropic, off-centre: RAS re-orientation flips x, spacing scales every axis
    "flipped": np.array([[-0.8, 0, 0, 40.0], [0, 1.1, 0, -12.0], [0, 0, 2.5, 7.0], [0, 0, 0, 1]]),
    # axes permuted (a sagittal acquisition) and rotated 10° about z: still axis-aligned with its own resampled grid
    "oblique": np.array(
        [
            [0, -0.17364818 * 1.2, 0.98480775 * 0.9, -30.0],
            [0, 0.98480775 * 1.2, 0.17364818 * 0.9, 5.0],
            [1.7, 0, 0, 12.0],
            [0, 0, 0, 1],
        ]
    ),  # fmt: skip
}


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_equals_invertd_nearest(tmp_path, name):
    path = _scan(tmp_path / "scan.nii.gz", (37, 29, 23), AFFINES[name])
    pre = Compose(segmentation_preprocessing(["image"], pixdim=(1.5, 1.5, 1.5), pad_size=(24, 24, 24)))
    data = pre({"image": path})
    torch.manual_seed(0)
    labels = MetaTensor(torch.randint(0, 4, data["image"].shape, dtype=torch.uint8), meta=dict(data["image"].meta))
    labels.affine = data["image"].affine
    ours = InvertLabelMapd("pred", transform=pre, orig_key="image")({"image": data["image"], "pred": labels})["pred"]
    reference = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True)(
        {"image": data["image"], "pred": labels.float()}
    )["pred"]
    assert ours.dtype == torch.uint8 and tuple(ours.shape) == (1, 37, 29, 23)
    np.testing.assert_allclose(ours.affine.numpy(), AFFINES[name], atol=1e-5)
    # grid_sample rounds positions computed in float32, so an input slice that lies exactly half-way between two
    # network slices may round the other way; everywhere else the two must agree voxel for voxel
    to_source = np.linalg.inv(labels.affine.numpy()) @ AFFINES[name]
    off_tie = torch.ones(ours.shape[1:], dtype=torch.bool)
    for axis, n in enumerate(ours.shape[1:]):
        positions = to_source[:3, axis, None] * np.arange(n) + to_source[:3, 3, None]
        tie = (np.abs(np.abs(positions - np.floor(positions)) - 0.5) < 1e-6).any(axis=0)
        off_tie.index_fill_(axis, torch.as_tensor(np.flatnonzero(tie), dtype=torch.long), False)
    same = ours.as_tensor()[0] == reference.as_tensor()[0].to(torch.uint8)
    assert off_tie.float().mean() > 0.75 and same[off_tie].all(), same[off_tie].float().mean()
    assert (ours[0, :3] == 0).all() and (ours[0, ..., -2:] == 0).all()  # cropped away as background → background


def test_rotated_grids_are_not_separable_and_fall_back(tmp_path):
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]]
    assert axis_aligned_index_map(np.eye(4), rotation, (4, 4, 4)) is None
    axes, indices = axis_aligned_index_map(np.diag([2.0, 1.0, 1.0, 1.0])[[0, 2, 1, 3]], np.eye(4), (4, 3, 2))
    assert axes == [0, 2, 1]  # target x → source x; target y → source z; target z → source y
    np.testing.assert_array_equal(indices[0], [0, 0, 1, 2])  # half-voxel positions round to even, as grid_sample

    # a label on a grid rotated against the input's: the transform hands over to Invertd
    path = _scan(tmp_path / "scan.nii.gz", (20, 20, 20), np.eye(4))
    pre = Compose(segmentation_preprocessing(["image"], pixdim=(2.0, 2.0, 2.0)))
    data = pre({"image": path})
    labels = MetaTensor(torch.ones(data["image"].shape, dtype=torch.uint8), meta=dict(data["image"].meta))
    labels.affine = torch.as_tensor(rotation) @ data["image"].affine
    out = InvertLabelMapd("pred", transform=pre, orig_key="image")({"image": data["image"], "pred": labels})["pred"]
    assert tuple(out.shape[1:]) == (20, 20, 20)


def test_bundle_infers_labels_slab_by_slab_like_the_score_path(tmp_path, msd_dataset):
    bundle = copy_bundle("resunet3d_segmentation", tmp_path)
    net_overrides = {k: v for k, v in FAST_3D.items() if k.startswith("network_def")}
    torch.manual_seed(0)
    weights = ResUNet(3, 1, 3, features=(8, 16, 32), encoder_blocks=1, norm=("instance", {"affine": True}),
                      act=("leakyrelu", {"negative_slope": 0.01, "inplace": True}), downsample="conv",
                      upsample="deconv", stem_stride=2, full_res="interpolate", up_kernel_size=1)  # fmt: skip
    (bundle / "models").mkdir(exist_ok=True)
    torch.save(weights.state_dict(), bundle / "models" / "model.pt")
    write_model_properties(bundle / "models", class_names=["background", "dim", "bright"], patch_size=[16, 16, 16])
    seg = Segmenter.from_bundle(bundle, device="cpu", **net_overrides)
    assert isinstance(seg.inferer, SlabArgmaxInferer)
    image = sorted((msd_dataset / "imagesTs").glob("*.nii.gz"))[0]
    label = seg(str(image))
    src = nib.load(image)
    assert label.dtype == torch.uint8 and tuple(label.shape[1:]) == src.shape
    np.testing.assert_allclose(label.affine.numpy(), src.affine, atol=1e-4)

    # the path it replaced: class scores (score_inferer), softmax, Invertd bilinear, arg-max
    data = seg.preprocessing({"image": str(image)})
    with torch.no_grad():
        scores = seg.parser.get_parsed_content("score_inferer")(data["image"][None], seg.network)
    data["pred"] = scores[0]
    post = Compose([
        Activationsd("pred", softmax=True),
        Invertd("pred", transform=seg.preprocessing, orig_keys="image", nearest_interp=False, to_tensor=True),
        AsDiscreted("pred", argmax=True),
    ])  # fmt: skip
    old = post(data)["pred"]
    # the same model-grid labels; only the way back differs (nearest labels vs bilinear probabilities), which
    # moves boundary voxels of this random network only
    assert (old.as_tensor().to(torch.uint8) == label.as_tensor()).float().mean() > 0.8


def _untrained_bundle(tmp_path, modality: str):
    """A copy of the 3D bundle with a small random network as its weights (no training needed for geometry)."""
    bundle = copy_bundle("resunet3d_segmentation", tmp_path)
    torch.manual_seed(0)
    weights = ResUNet(3, 1, 3, features=(8, 16, 32), encoder_blocks=1, norm=("instance", {"affine": True}),
                      act=("leakyrelu", {"negative_slope": 0.01, "inplace": True}), downsample="conv",
                      upsample="deconv", stem_stride=2, full_res="interpolate", up_kernel_size=1)  # fmt: skip
    (bundle / "models").mkdir(exist_ok=True)
    torch.save(weights.state_dict(), bundle / "models" / "model.pt")
    write_model_properties(
        bundle / "models", class_names=["background", "dim", "bright"], patch_size=[16, 16, 16], modality=modality,
        pixdim=[2.0, 2.0, 2.0],
    )  # fmt: skip
    return bundle


@pytest.mark.parametrize(
    "modality,value",
    [("MR", 0.0), ("MR", -1000.0), ("CT", -1024.0)],  # blank, a CT given to an MR model, all air
)
def test_image_without_foreground_is_segmented_on_its_grid(tmp_path, modality, value):
    """No voxel above the body-crop threshold: nothing is cropped (MONAI's bounding box would be empty, and the
    resampling fail on a 0-voxel volume), the whole scan is segmented and the label comes back on its grid."""
    net = {k: v for k, v in FAST_3D.items() if k.startswith("network_def")}
    seg = Segmenter.from_bundle(_untrained_bundle(tmp_path, modality), device="cpu", **net)
    shape, affine = (23, 19, 11), AFFINES["flipped"]
    path = tmp_path / "blank.nii.gz"
    nib.save(nib.Nifti1Image(np.full(shape, value, dtype=np.float32), affine), str(path))
    for label in (seg(str(path)), seg(np.full(shape, value, dtype=np.float32), affine=affine)):
        assert label.dtype == torch.uint8 and tuple(label.shape) == (1, *shape)
        np.testing.assert_allclose(label.affine.numpy(), affine, atol=1e-5)
    # the crop still crops where there is foreground
    body = np.full(shape, value, dtype=np.float32)
    body[5:15, 4:12, 2:9] = 100.0
    whole = seg.preprocessing({"image": str(path)})["image"].shape[1:]
    cropped = seg.preprocessing({"image": _save(tmp_path / "body.nii.gz", body, affine)})["image"].shape[1:]
    assert all(c < w for c, w in zip(cropped, whole)), (cropped, whole)
    assert tuple(seg(str(tmp_path / "body.nii.gz")).shape) == (1, *shape)


def _save(path, array, affine) -> str:
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return str(path)
