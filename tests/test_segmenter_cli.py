"""``Segmenter`` (one Python API for 3D and 2D bundles) and the ``segment`` CLI: input kinds, output formats,
geometry, checkpoint safety, DICOM in → DICOM-SEG out, and a batch with bad inputs among good ones."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from dicom_synth import AXIAL, write_series
from monai.data import MetaTensor
from monai.transforms import LoadImage

from conftest import FAST_2D, FAST_3D, REPO, copy_bundle, run_workflow, segment_args, tiny_bundle
from monai_resunet.config_flags import config_override
from monai_resunet.inference.cli import output_names
from monai_resunet.inference.segmenter import CheckpointError, InputImageError, Segmenter

NET_3D = {k: v for k, v in FAST_3D.items() if k.startswith("network_def")}
NET_2D = {k: v for k, v in FAST_2D.items() if k.startswith("network_def")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, msd_dataset) -> dict[str, Path]:
    """Both bundles trained for one epoch with tiny networks (enough to have weights and properties)."""
    root = tmp_path_factory.mktemp("trained")
    out = {}
    for name, fast in (("resunet3d_segmentation", FAST_3D), ("resunet2d_segmentation", FAST_2D)):
        bundle = copy_bundle(name, root)
        run_workflow(bundle, ["train.json"], "train", dataset_dir=str(msd_dataset), epochs=1, **fast)
        out[name] = bundle
    return out


def segmenter(trained, name: str) -> Segmenter:
    net = NET_3D if name.startswith("resunet3d") else NET_2D
    return Segmenter.from_bundle(trained[name], device="cpu", **net)


@pytest.mark.parametrize("name", ["resunet3d_segmentation", "resunet2d_segmentation"])
def test_path_array_and_metatensor_inputs_agree_on_the_input_grid(trained, msd_dataset, name):
    seg = segmenter(trained, name)
    path = sorted((msd_dataset / "imagesTs").glob("*.nii.gz"))[0]
    img = nib.load(path)
    from_path = seg(path)
    assert from_path.shape == (1, *img.shape) and from_path.dtype == torch.uint8
    np.testing.assert_allclose(from_path.affine.numpy(), img.affine, atol=1e-4)
    from_array = seg(img.get_fdata(), affine=img.affine)
    from_meta = seg(MetaTensor(torch.as_tensor(img.get_fdata()), affine=torch.as_tensor(img.affine)))
    assert torch.equal(from_path, from_array) and torch.equal(from_path, from_meta)
    # a channel-first MetaTensor (LoadImage(ensure_channel_first=True) output) gets no second channel
    channel_first = LoadImage(image_only=True, ensure_channel_first=True)(str(path))
    assert torch.equal(from_path, seg(channel_first)) and channel_first.shape == (1, *img.shape)
    with pytest.raises(ValueError, match="3D volume"):
        seg(MetaTensor(torch.zeros(2, *img.shape), affine=torch.as_tensor(img.affine)))
    assert seg.segment_names == ["dim_sphere", "bright_sphere"]
    with pytest.raises(ValueError, match="affine"):
        seg(img.get_fdata())


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_segment_file_formats_keep_geometry(trained, msd_dataset, tmp_path, suffix):
    seg = segmenter(trained, "resunet3d_segmentation")
    path = sorted((msd_dataset / "imagesTs").glob("*.nii.gz"))[0]
    out = seg.segment_file(path, tmp_path / f"pred{suffix}")
    written, source = sitk.ReadImage(str(out)), sitk.ReadImage(str(path))
    assert written.GetSize() == source.GetSize()
    np.testing.assert_allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(written.GetDirection(), source.GetDirection(), atol=1e-4)
    np.testing.assert_allclose(written.GetSpacing(), source.GetSpacing(), atol=1e-4)
    assert sitk.GetArrayFromImage(written).dtype == np.uint8


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_nrrd_and_mha_inputs_segment_like_nifti(trained, msd_dataset, tmp_path, suffix):
    """The same scan as NRRD/MHA (written by SimpleITK, read by MONAI's ITKReader) gives the NIfTI input's labels
    on the same world grid."""
    seg = segmenter(trained, "resunet3d_segmentation")
    nifti = sorted((msd_dataset / "imagesTs").glob("*.nii.gz"))[0]
    converted = tmp_path / f"scan{suffix}"
    sitk.WriteImage(sitk.ReadImage(str(nifti)), str(converted))
    from_nifti, from_other = seg(nifti), seg(converted)
    assert from_other.shape == from_nifti.shape
    np.testing.assert_allclose(from_other.affine.numpy(), from_nifti.affine.numpy(), atol=1e-4)
    assert (from_other == from_nifti).float().mean() > 0.999


@pytest.mark.parametrize("name", ["resunet3d_segmentation", "resunet2d_segmentation"])
def test_mirror_axes_override_turns_on_test_time_mirroring(trained, msd_dataset, name):
    from monai_resunet.inference import MirrorInferer

    net = NET_3D if name.startswith("resunet3d") else NET_2D
    plain = Segmenter.from_bundle(trained[name], device="cpu", **net)
    mirrored = Segmenter.from_bundle(trained[name], device="cpu", mirror_axes=[0], **net)
    assert not isinstance(plain.inferer, MirrorInferer) and isinstance(mirrored.inferer, MirrorInferer)
    calls = {"plain": 0, "mirrored": 0}
    for key, seg in (("plain", plain), ("mirrored", mirrored)):
        seg.network.register_forward_hook(lambda *_, key=key: calls.__setitem__(key, calls[key] + 1))
    path = sorted((msd_dataset / "imagesTs").glob("*.nii.gz"))[0]
    a, b = plain(path), mirrored(path)
    assert a.shape == b.shape and a.dtype == b.dtype and (a == b).float().mean() > 0.5
    assert calls["plain"] > 0 and calls["mirrored"] == 2 * calls["plain"]  # each window once more, mirrored


def test_checkpoint_errors(trained, tmp_path):
    bundle = trained["resunet3d_segmentation"]
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        Segmenter.from_bundle(bundle, device="cpu", checkpoint=tmp_path / "nope.pt", **NET_3D)
    wrong = tmp_path / "wrong.pt"
    torch.save({"head.conv.weight": torch.zeros(5, 8, 1, 1, 1)}, wrong)
    with pytest.raises(CheckpointError, match="does not fit"):
        Segmenter.from_bundle(bundle, device="cpu", checkpoint=wrong, **NET_3D)
    broken = tmp_path / "broken.pt"
    broken.write_bytes((bundle / "models" / "model.pt").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable"):
        Segmenter.from_bundle(bundle, device="cpu", checkpoint=broken, **NET_3D)


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # would create the marker file if unpickled


def test_pickled_payload_is_refused_without_running_it(trained, tmp_path):
    marker = tmp_path / "payload_ran"
    evil = tmp_path / "evil.pt"
    torch.save({"model": _Payload(str(marker))}, evil)
    with pytest.raises(CheckpointError, match="refused"):
        Segmenter.from_bundle(trained["resunet3d_segmentation"], device="cpu", checkpoint=evil, **NET_3D)
    assert not marker.exists()


def test_dicom_series_in_dicom_seg_out(trained, tmp_path):
    import highdicom as hd
    import pydicom

    series = write_series(tmp_path / "study" / "ct", n_slices=20, rows=40, cols=36, orientation=AXIAL, gaps=1.5)
    (tmp_path / "study" / "ct" / "README.txt").write_text("not DICOM")
    seg = segmenter(trained, "resunet3d_segmentation")
    label = seg(series.folder)
    assert label.shape == (1, 36, 40, 20)
    out = seg.segment_file(series.folder, tmp_path / "seg.dcm")
    ds = pydicom.dcmread(out)
    assert ds.Modality == "SEG" and ds.FrameOfReferenceUID == series.for_uid
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_uid
    sr = hd.seg.segread(out)
    names = [s.SegmentLabel for s in sr.SegmentSequence]
    assert set(names) <= {"dim_sphere", "bright_sphere"}


def test_failure_reason_names_the_input_once():
    from monai_resunet.inference.segmenter import failure_reason

    missing = "/data/ct/patient01"
    error = FileNotFoundError(f"{missing}: no such file or folder.")
    assert failure_reason(error, missing) == "no such file or folder."
    assert failure_reason(error, missing + "/") == "no such file or folder."  # the folder as typed, with a slash
    assert failure_reason(ValueError("first line\nsecond"), "other") == "first line"
    assert failure_reason(RuntimeError()) == "RuntimeError"


@pytest.mark.parametrize(
    "source,raised,reason",
    [
        ("/d/a.nii.gz", "/d/a.nii.gz: bad header", "bad header"),  # the reader named the input already
        ("/d/a.nii", "/d/a.nii.gz: bad header", "/d/a.nii.gz: bad header"),  # another file, whose name contains it
        ("/d/a.nii.gz", "Empty file: '/d/a.nii.gz'", "Empty file: '/d/a.nii.gz'"),  # named, but not in front
    ],
)
def test_transform_errors_start_with_the_input_once(source, raised, reason):
    from monai.transforms import Compose

    from monai_resunet.inference.segmenter import _run_transforms, failure_reason

    def reader(data):
        raise ValueError(raised)

    with pytest.raises(InputImageError) as info:
        _run_transforms(Compose([reader]), {"image": source}, source=Path(source))
    assert str(info.value) == f"{source}: {reason}"
    assert failure_reason(info.value, Path(source)) == reason


def test_cli_reports_bad_inputs_and_writes_the_rest(trained, msd_dataset, tmp_path):
    good = sorted((msd_dataset / "imagesTs").glob("*.nii.gz"))
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good[0].read_bytes()[:300])
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "monai_resunet", "segment", "--bundle", str(trained["resunet3d_segmentation"]),
           "--device", "cpu", "--override", "sw_batch_size=2", "-o", str(out),
           str(good[0]), str(truncated), str(empty), str(good[1])]  # fmt: skip
    # the tiny test network differs from the bundle's default network_def, so point the CLI at a bundle copy
    # whose inference.json matches the trained weights
    import json

    config = trained["resunet3d_segmentation"] / "configs" / "inference.json"
    cfg = json.loads(config.read_text())
    cfg["network_def"]["features"] = NET_3D["network_def#features"]
    cfg["network_def"]["encoder_blocks"] = NET_3D["network_def#encoder_blocks"]
    config.write_text(json.dumps(cfg))
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (out / good[0].name.replace(".nii.gz", "_seg.nii.gz")).is_file()
    assert (out / good[1].name.replace(".nii.gz", "_seg.nii.gz")).is_file()
    assert not (out / "truncated_seg.nii.gz").exists() and not (out / "empty_seg.nii.gz").exists()
    assert "2 written, 0 skipped (exist), 2 failed of 4 inputs" in result.stdout
    assert f"failed: {truncated}" in result.stdout and f"failed: {empty}" in result.stdout
    # the reason is the reader's, not MONAI's "applying transform <LoadImaged object at 0x...>" wrapper
    assert "applying transform" not in result.stdout and "object at 0x" not in result.stdout
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left behind


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The 3D bundle with a tiny untrained network: for what the CLI checks and prints, not for accuracy."""
    return tiny_bundle(tmp_path_factory.mktemp("tiny"))


def segment_in_process(bundle: Path, out: Path, *args: str) -> int:
    """``python -m monai_resunet segment ...`` in this process, so a test can patch what it calls."""
    parsed = segment_args(bundle, out, *args)
    return parsed.func(parsed)


def record_inference(monkeypatch) -> list:
    """Replace ``Segmenter.segment_file`` by a recorder: what reaches inference, without running it."""
    reached: list = []
    monkeypatch.setattr(Segmenter, "segment_file", lambda self, source, target: reached.append(source))
    return reached


def test_cli_dicom_seg_of_a_non_dicom_input_is_refused_before_inference(tiny, tmp_path, monkeypatch, capsys):
    nrrd = tmp_path / "scan.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((6, 8, 8), np.float32)), str(nrrd))
    reached = record_inference(monkeypatch)
    status = segment_in_process(tiny, tmp_path / "out", "--format", "dicom-seg", str(nrrd))
    stdout = capsys.readouterr().out
    assert status == 1 and reached == [], stdout
    assert f"  failed: {nrrd}: --format dicom-seg needs a DICOM source (" in stdout
    assert "this input is a .nrrd file" in stdout


def test_cli_series_uid_reads_the_requested_series(tiny, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "study"
    large = write_series(folder, n_slices=8, rows=20, cols=18, gaps=1.5, orientation=AXIAL, prefix="A", seed=1)
    small = write_series(folder, n_slices=4, rows=16, cols=14, gaps=1.5, orientation=AXIAL, prefix="B", seed=2,
                         series_number=2)  # fmt: skip
    status = segment_in_process(tiny, tmp_path / "out", "--series-uid", small.series_uid, str(folder))
    stdout = capsys.readouterr().out
    assert status == 0, stdout
    assert f"{folder}: series {small.series_uid} 'synthetic series 2' (4 file(s)); skipped 1 other series" in stdout
    assert nib.load(tmp_path / "out" / "study_seg.nii.gz").shape == (14, 16, 4)  # (columns, rows, slices)

    reached = record_inference(monkeypatch)
    status = segment_in_process(tiny, tmp_path / "out2", "--series-uid", "1.2.3", str(folder))
    stdout = capsys.readouterr().out
    assert status == 1 and reached == [], stdout  # refused before inference
    line = next(s for s in stdout.splitlines() if s.startswith(f"  failed: {folder}: "))
    assert line.startswith(f"  failed: {folder}: no series 1.2.3 (--series-uid); the folder holds "), line
    assert large.series_uid in line and small.series_uid in line


def test_unreadable_input_error_names_the_file_and_the_reason(trained, tmp_path):
    seg = segmenter(trained, "resunet3d_segmentation")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not an image at all")
    with pytest.raises(InputImageError) as info:
        seg(broken)
    message = str(info.value)
    assert str(broken) in message and "applying transform" not in message, message


def test_cli_overrides_are_json():
    assert config_override("mirror_axes=[0, 1]") == ("mirror_axes", [0, 1])
    assert config_override("window_inferer#overlap=0.25") == ("window_inferer#overlap", 0.25)
    assert config_override('image_key="img"') == ("image_key", "img")
    with pytest.raises(argparse.ArgumentTypeError, match="KEY=JSON"):
        config_override("mirror_axes")
    with pytest.raises(argparse.ArgumentTypeError, match="not JSON"):
        config_override("image_key=img")


def test_output_names_never_collide(tmp_path):
    kits = [Path("data/case_001/imaging.nii.gz"), Path("data/case_002/imaging.nii.gz"), Path("other/ct.nrrd")]
    assert output_names(kits, "nifti", "seg") == [
        "case_001_imaging_seg.nii.gz", "case_002_imaging_seg.nii.gz", "ct_seg.nii.gz",
    ]  # fmt: skip
    assert output_names([Path("a/scan.nii.gz"), Path("b/scan.nrrd")], "nrrd", "seg") == [
        "a_scan_seg.nrrd", "b_scan_seg.nrrd",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="would both be written as"):
        output_names([Path("x/scan.nii.gz"), Path("x/scan.nii.gz")], "nifti", "seg")


def test_cli_help_explains_every_option():
    result = subprocess.run(
        [sys.executable, "-m", "monai_resunet", "segment", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    options = ("--bundle", "--output-dir", "--device", "--checkpoint", "--format", "--postfix", "--overwrite")
    for option in (*options, "--override"):
        assert option in result.stdout
