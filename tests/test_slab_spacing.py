"""``SlabSpacingd``: MONAI's ``Spacingd`` sampled slab by slab — the same values, metadata and inverse, with every
``grid_sample`` call bounded by the slab size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, Spacingd, SpatialResample
from monai.transforms.utils import create_rotate

from monai_resunet.transforms import InvertLabelMapd, SlabSpacingd, SlabSpatialResample, segmentation_preprocessing

SLAB = 3000  # output voxels per slab: 1-2 planes of these small volumes, so a wrong box or offset shows


def _volume(rotation: float, seed: int = 0) -> dict:
    affine = np.diag([0.7, 0.8, 1.3, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 3.0]
    if rotation:
        affine = affine @ create_rotate(3, (rotation, 0.1, -0.2))
    rng = np.random.default_rng(seed)
    image = torch.as_tensor(rng.integers(-1000, 1000, (1, 40, 34, 28)), dtype=torch.int16)
    label = torch.as_tensor(rng.integers(0, 3, (1, 40, 34, 28)), dtype=torch.uint8)
    return {"image": MetaTensor(image, affine=torch.as_tensor(affine)), "label": MetaTensor(label, affine=affine)}


def _spacing_args(padding_mode: str) -> dict:
    return dict(keys=["image", "label"], pixdim=(1.0, 1.1, 0.9), mode=["bilinear", "nearest"],
                padding_mode=padding_mode, dtype=np.float32)  # fmt: skip


@pytest.mark.parametrize("rotation", [0.0, 0.3])
@pytest.mark.parametrize("padding_mode", ["border", "zeros"])
def test_equals_monai_spacingd(monkeypatch, rotation, padding_mode):
    data = _volume(rotation)
    reference = Spacingd(**_spacing_args(padding_mode))(dict(data))
    calls = []
    grid_sample = torch.nn.functional.grid_sample

    def recording_grid_sample(input, grid, *args, **kwargs):
        calls.append(grid.shape[1:-1].numel())
        return grid_sample(input, grid, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "grid_sample", recording_grid_sample)
    ours = SlabSpacingd(**_spacing_args(padding_mode), slab_voxels=SLAB)(dict(data))
    monkeypatch.undo()
    out_voxels = reference["image"].shape[1:].numel()
    if rotation:  # grid_sample: every call samples at most one slab (≥ 1 plane), the slabs cover both keys once
        plane = reference["image"].shape[2:].numel()
        assert len(calls) > 4 and max(calls) <= max(SLAB, plane) and sum(calls) == 2 * out_voxels
    else:  # scale and shift only: interpolated axis by axis, no coordinate grid at all
        assert not calls
    for key in ("image", "label"):
        assert ours[key].shape == reference[key].shape and ours[key].dtype == reference[key].dtype
        np.testing.assert_allclose(ours[key].affine.numpy(), reference[key].affine.numpy(), atol=1e-10)
        ours_op, ref_op = ours[key].applied_operations[-1], reference[key].applied_operations[-1]
        assert ours_op["class"] == "SlabSpatialResample" and set(ours_op) == set(ref_op)
        np.testing.assert_array_equal(ours_op["orig_size"], ref_op["orig_size"])
    # float32 rounding of positions only (inputs span ±1000)
    assert torch.allclose(ours["image"], reference["image"], rtol=0, atol=1000 * 1e-4)
    assert torch.equal(ours["label"].as_tensor(), reference["label"].as_tensor())


@pytest.mark.parametrize("padding_mode", ["border", "zeros"])
def test_axis_by_axis_path_matches_grid_sample_on_flips_and_shifts(padding_mode):
    """Negative scales (flipped axes), down- and up-sampling, and an output grid reaching past the input (where
    the padding mode decides): the axis-by-axis interpolation gives grid_sample's values."""
    affine = np.diag([-0.7, 1.6, 1.3, 1.0])
    affine[:3, 3] = [12.0, -3.0, 4.0]
    data = _volume(0.0)
    data = {k: MetaTensor(v.as_tensor(), affine=torch.as_tensor(affine)) for k, v in data.items()}
    for size in (None, (30, 60, 45)):  # MONAI's own output size, and one larger than the field of view
        kwargs = dict(_spacing_args(padding_mode), pixdim=(1.0, 0.9, 1.1), spatial_size=size)
        reference = Spacingd(**{k: v for k, v in kwargs.items() if k != "spatial_size"})
        ours = SlabSpacingd(**{k: v for k, v in kwargs.items() if k != "spatial_size"}, slab_voxels=SLAB)
        a, b = reference(dict(data)), ours(dict(data))
        if size is not None:  # a fixed output size through the array transform both wrap
            a = {k: reference.spacing_transform(data[k], output_spatial_shape=size, mode=m, padding_mode=padding_mode)
                 for k, m in zip(("image", "label"), ("bilinear", "nearest"))}  # fmt: skip
            b = {k: ours.spacing_transform(data[k], output_spatial_shape=size, mode=m, padding_mode=padding_mode)
                 for k, m in zip(("image", "label"), ("bilinear", "nearest"))}  # fmt: skip
        assert b["image"].shape == a["image"].shape
        assert torch.allclose(b["image"], a["image"], rtol=0, atol=1000 * 1e-4)
        # nearest: a position exactly half-way between two input voxels may round either way (grid_sample rounds
        # float32 coordinates); everywhere off those planes the labels must agree voxel for voxel
        xform = torch.linalg.solve(data["label"].affine.double(), a["label"].affine.double())
        off_tie = torch.ones(a["label"].shape[1:], dtype=torch.bool)
        for axis, n in enumerate(a["label"].shape[1:]):
            positions = xform[axis, axis] * torch.arange(n, dtype=torch.float64) + xform[axis, 3]
            tie = ((positions - torch.floor(positions)) - 0.5).abs() < 1e-6
            off_tie.index_fill_(axis, torch.nonzero(tie).flatten(), False)
        same = b["label"].as_tensor()[0] == a["label"].as_tensor()[0]
        assert off_tie.float().mean() > 0.8 and same[off_tie].all()


def test_inverse_and_invertd_match_monai():
    data = _volume(0.3)
    ours_t, ref_t = SlabSpacingd(**_spacing_args("border"), slab_voxels=SLAB), Spacingd(**_spacing_args("border"))
    ours, reference = ours_t(dict(data)), ref_t(dict(data))
    back, ref_back = ours_t.inverse(ours), ref_t.inverse(reference)  # (pops the record in place)
    assert back["image"].shape == data["image"].shape and not back["image"].applied_operations
    assert torch.allclose(back["image"], ref_back["image"], atol=0.1)
    inverted = Invertd("label", transform=ours_t, orig_keys="image", nearest_interp=True)(ours_t(dict(data)))
    assert torch.equal(inverted["label"].as_tensor(), ref_back["label"].as_tensor())


def test_falls_back_to_monai_where_slabs_would_differ():
    image = _volume(0.0)["image"]
    target = torch.eye(4, dtype=torch.float64)
    for kwargs in ({"padding_mode": "reflection"}, {"mode": 1}):  # reflection about a slab; spline orders
        ours = SlabSpatialResample(dtype=np.float32, slab_voxels=SLAB, **kwargs)
        ref = SpatialResample(dtype=np.float32, **kwargs)
        a = ours(image, dst_affine=target, spatial_size=(28, 28, 36))
        b = ref(image, dst_affine=target, spatial_size=(28, 28, 36))
        assert torch.equal(a.as_tensor(), b.as_tensor())
    lazy = SlabSpatialResample(dtype=np.float32, slab_voxels=SLAB)(image, dst_affine=target, lazy=True)
    assert lazy.pending_operations  # planned, not computed: MONAI's lazy path unchanged
    with pytest.raises(ValueError, match="slab_voxels"):
        SlabSpatialResample(slab_voxels=0)


def test_segmentation_preprocessing_resamples_in_slabs_and_inverts_labels(tmp_path):
    import nibabel as nib

    affine = np.array([[-0.8, 0, 0, 40.0], [0, 1.1, 0, -12.0], [0, 0, 2.5, 7.0], [0, 0, 0, 1]])
    image = np.random.default_rng(1).normal(100, 20, (37, 29, 23)).astype(np.float32)
    image[:3] = 0
    nib.save(nib.Nifti1Image(image, affine), str(tmp_path / "scan.nii.gz"))
    chain = segmentation_preprocessing(["image"], pixdim=(1.5, 1.5, 1.5))
    spacing = next(t for t in chain if isinstance(t, SlabSpacingd))
    spacing.spacing_transform.sp_resample.slab_voxels = 500
    pre = Compose(chain)
    data = pre({"image": str(tmp_path / "scan.nii.gz")})
    assert data["image"].applied_operations[-1]["class"] == "SlabSpatialResample"
    labels = MetaTensor((data["image"] > 0.5).to(torch.uint8), meta=dict(data["image"].meta))
    labels.affine = data["image"].affine
    ours = InvertLabelMapd("pred", transform=pre, orig_key="image")({"image": data["image"], "pred": labels})["pred"]
    reference = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True)(
        {"image": data["image"], "pred": labels.float()}
    )["pred"]
    assert tuple(ours.shape[1:]) == image.shape
    assert (ours.as_tensor()[0] == reference.as_tensor()[0].to(torch.uint8)).float().mean() > 0.99
