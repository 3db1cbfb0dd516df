"""The readers ``segmentation_preprocessing`` registers: ``FastNibabelReader`` (the same arrays and metadata as
MONAI's ``NibabelReader``, C-contiguous, through ISA-L for ``.nii.gz``, nibabel's gzip without it) and
``SimpleITKReader`` (NRRD/MHA in ITKReader's conventions: (x, y, z) indexing, RAS affine)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import LoadImaged

import monai_resunet.data.nifti_reader as nifti_reader
from monai_resunet.data import FastNibabelReader, SimpleITKReader
from monai_resunet.transforms import segmentation_preprocessing

AFFINE = np.array([[-0.7, 0, 0, 90.0], [0, -0.7, 0, 80.0], [0, 0, 1.5, -40.0], [0, 0, 0, 1]])


def _write(path, array, slope=None, inter=None):
    img = nib.Nifti1Image(array, AFFINE)
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    nib.save(img, str(path))
    return str(path)


def _load(path, reader=None, **kwargs):
    return LoadImaged("image", reader=reader, image_only=True, dtype=None, **kwargs)({"image": path})["image"]


def _same_meta(a, b):
    assert set(a.meta) == set(b.meta)
    for key in a.meta:
        if key != "filename_or_obj":
            x, y = np.asarray(a.meta[key]), np.asarray(b.meta[key])
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), key


CASES = {
    "int16.nii.gz": (lambda rng: rng.integers(-1000, 2000, (23, 17, 11)).astype(np.int16), None, None),
    "scaled.nii.gz": (lambda rng: rng.integers(0, 400, (13, 9, 7)).astype(np.int16), 0.5, -10.0),  # slope/inter
    "float.nii": (lambda rng: rng.normal(size=(12, 10, 8)).astype(np.float32), None, None),  # uncompressed
    "4d.nii.gz": (lambda rng: rng.integers(0, 255, (9, 8, 7, 2)).astype(np.uint8), None, None),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_array_and_metadata_as_nibabel_reader(tmp_path, monkeypatch, name):
    make, slope, inter = CASES[name]
    path = _write(tmp_path / name, make(np.random.default_rng(0)), slope, inter)
    reference = _load(path)
    opened = []
    real_open = nifti_reader.igzip.open
    monkeypatch.setattr(nifti_reader.igzip, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    ours = _load(path, FastNibabelReader())
    assert opened == ([path] if name.endswith(".gz") else [])  # ISA-L inflated the .gz files, not the .nii
    assert ours.dtype == reference.dtype and ours.shape == reference.shape and ours.is_contiguous()
    assert torch.equal(ours.as_tensor(), reference.as_tensor())
    _same_meta(ours, reference)


def test_without_isal_reads_with_nibabel_gzip(tmp_path, monkeypatch):
    path = _write(tmp_path / "a.nii.gz", np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4))
    monkeypatch.setattr(nifti_reader, "has_isal", False)
    monkeypatch.setattr(nifti_reader.igzip, "open", lambda *a, **k: pytest.fail("isal used without isal"))
    ours = _load(path, FastNibabelReader())
    assert torch.equal(ours.as_tensor(), _load(path).as_tensor()) and ours.is_contiguous()


def test_reoriented_images_are_read_from_the_reoriented_voxels(tmp_path):
    path = _write(tmp_path / "a.nii.gz", np.random.default_rng(1).integers(0, 99, (7, 6, 5)).astype(np.int16))
    reference = _load(path, as_closest_canonical=True)  # flips x and y: no longer the file's own voxel order
    ours = LoadImaged("image", reader=FastNibabelReader(as_closest_canonical=True), image_only=True, dtype=None)(
        {"image": path}
    )["image"]
    assert torch.equal(ours.as_tensor(), reference.as_tensor())


def test_preprocessing_reads_nifti_fast_and_nrrd_mha_with_simpleitk(tmp_path):
    import SimpleITK as sitk

    array = np.random.default_rng(2).integers(0, 99, (9, 8, 7)).astype(np.int16)
    nifti = _write(tmp_path / "a.nii.gz", array)
    load = segmentation_preprocessing(["image"], pixdim=None, crop_foreground=False)[0]
    readers = load._loader.readers
    assert load._loader.auto_select and isinstance(readers[-1], SimpleITKReader)
    assert isinstance(readers[-2], FastNibabelReader)
    reference = _load(nifti)
    for suffix in (".nii.gz", ".nrrd", ".mha"):
        path = nifti if suffix == ".nii.gz" else str(tmp_path / f"a{suffix}")
        if suffix != ".nii.gz":
            sitk.WriteImage(sitk.ReadImage(nifti), path)  # the same scan and geometry, another format
        image = load({"image": path})["image"]
        np.testing.assert_array_equal(image.numpy(), array)
        np.testing.assert_allclose(image.affine.numpy(), reference.affine.numpy(), atol=1e-5)
        np.testing.assert_array_equal(image.meta["spatial_shape"], (9, 8, 7))


def test_simpleitk_reader_geometry_channels_and_errors(tmp_path):
    import SimpleITK as sitk

    # an oblique MetaImage: the RAS affine is SimpleITK's LPS geometry with x and y negated
    image = sitk.GetImageFromArray(np.arange(5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3))  # (z, y, x)
    c, s_ = np.cos(0.4), np.sin(0.4)
    image.SetDirection([c, -s_, 0, s_, c, 0, 0, 0, 1])
    image.SetSpacing([0.8, 1.1, 2.5])
    image.SetOrigin([-10.0, 22.0, 5.0])
    sitk.WriteImage(image, str(tmp_path / "oblique.mha"))
    reader = SimpleITKReader()
    array, meta = reader.get_data(reader.read(tmp_path / "oblique.mha"))
    assert array.shape == (3, 4, 5) and array.flags.c_contiguous
    assert array[2, 1, 0] == sitk.GetArrayFromImage(image)[0, 1, 2]  # (x, y, z) indexing
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    np.testing.assert_allclose(meta["affine"], np.diag([-1, -1, 1, 1]) @ lps)
    assert np.isnan(meta["original_channel_dim"]) and str(meta["space"]) == "RAS"
    # a vector image keeps its components last, as ITKReader does
    vector = sitk.GetImageFromArray(np.zeros((5, 4, 3, 2), np.uint8), isVector=True)
    sitk.WriteImage(vector, str(tmp_path / "vector.nrrd"))
    array, meta = reader.get_data(reader.read(tmp_path / "vector.nrrd"))
    assert array.shape == (3, 4, 5, 2) and meta["original_channel_dim"] == -1
    # a broken file: a clear error naming it
    (tmp_path / "broken.nrrd").write_bytes(b"NRRD0004\ntype: short\n")
    with pytest.raises(ValueError, match="broken.nrrd: SimpleITK cannot read"):
        reader.read(tmp_path / "broken.nrrd")
    assert reader.verify_suffix(["a.NRRD", "b.mhd"]) and not reader.verify_suffix("a.nii.gz")


def test_importing_the_package_leaves_simpleitk_unloaded():
    """SimpleITK (~90 MiB resident) is imported by the first NRRD/MHA read or write, not by ``import
    monai_resunet``: a NIfTI-only inference process does not carry it."""
    import subprocess
    import sys

    code = "import sys, monai_resunet; print('SimpleITK' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"
