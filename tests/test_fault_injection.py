"""Fault injection: one ``segment`` run over a batch of good scans mixed with every failure class seen so far.

Every good input is written, identical to a clean run of the same input; every bad one is named with its reason;
the exit status is 1; no partial or temporary file is left. The same batch killed with SIGKILL mid-run and run
again writes the rest and leaves nothing half-written. The bundle is the 3D one with a tiny network and random
(untrained, saved) weights, so inference takes well under a second per case.
"""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_synth import AXIAL, write_series

from conftest import REPO, tiny_bundle
from monai_resunet.inference.cli import output_names
from monai_resunet.inference.segmenter import Segmenter
from monai_resunet.inference.writers import write_dicom_seg

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def blob(shape, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    centre = np.asarray(shape) / 2 + rng.uniform(-2, 2, 3)
    inside = np.linalg.norm(grid - centre, axis=-1) < min(shape) / 3
    return (100 + 400 * inside + rng.normal(0, 20, shape)).astype(np.float32)


def nifti(path: Path, seed: int, shape=(22, 20, 16), affine=None) -> Path:
    affine = np.diag([1.2, 1.1, 1.6, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(blob(shape, seed), affine), path)
    return path


def sitk_image(path: Path, seed: int) -> Path:
    img = sitk.GetImageFromArray(blob((14, 18, 20), seed))  # (z, y, x)
    img.SetSpacing((1.1, 1.2, 1.7))
    img.SetOrigin((-5.0, 3.0, 10.0))
    sitk.WriteImage(img, str(path))
    return path


def dicom_series(folder: Path, seed: int, **kwargs):
    return write_series(folder, n_slices=10, rows=20, cols=18, gaps=1.5, orientation=AXIAL,
                        pixel_spacing=(1.2, 1.1), seed=seed, **kwargs)  # fmt: skip


def rewrite(path: Path, **changes) -> None:
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(path)


def nan_affine_nifti(path: Path) -> Path:
    """A NIfTI whose sform holds NaN (nibabel refuses to write one, so the header bytes are patched)."""
    raw = path.with_suffix("")  # .nii
    nib.save(nib.Nifti1Image(blob((16, 16, 12), 9), np.eye(4)), raw)
    data = bytearray(raw.read_bytes())
    data[252:256] = struct.pack("<hh", 0, 1)  # qform_code 0, sform_code 1: the sform is the affine
    data[280:296] = struct.pack("<4f", float("nan"), 0.0, 0.0, 0.0)  # srow_x
    path.write_bytes(gzip.compress(bytes(data)))
    raw.unlink()
    return path


def build_batch(root: Path) -> tuple[list[str], dict[str, str], list[str]]:
    """(inputs, {bad input: a fragment of its reason}, inputs that may go either way). Good inputs are the rest."""
    root.mkdir(parents=True, exist_ok=True)
    good: list[Path] = []
    bad: dict[Path, str] = {}
    for i in range(6):
        good.append(nifti(root / f"good_{i}.nii.gz", seed=i))
    for i in range(3):
        good.append(sitk_image(root / f"good_nrrd_{i}.nrrd", seed=10 + i))
    good.append(sitk_image(root / "good_mha.mha", seed=14))
    for i in range(3):
        good.append(dicom_series(root / f"dicom_{i}", seed=20 + i).folder)
    two = dicom_series(root / "two_series", seed=30, prefix="A")
    write_series(two.folder, n_slices=3, rows=20, cols=18, orientation=AXIAL, series_number=2, prefix="B")
    (two.folder / "README.txt").write_text("exported by a PACS\n")
    good.append(two.folder)  # the larger series is read, and the line says what was skipped

    truncated = nifti(root / "truncated.nii.gz", seed=40)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    bad[truncated] = "Compressed file ended before the end-of-stream marker"
    (root / "empty.nii.gz").write_bytes(b"")
    bad[root / "empty.nii.gz"] = "Empty file"
    (root / "notes.nii.gz").write_text("this is a text file, not an image\n")
    bad[root / "notes.nii.gz"] = "is not a gzip file"
    (root / "garbage.nrrd").write_bytes(os.urandom(2048))
    bad[root / "garbage.nrrd"] = "SimpleITK cannot read this file"

    rgb = dicom_series(root / "rgb", seed=41)
    for f in rgb.files:
        rewrite(f, SamplesPerPixel=3, PhotometricInterpretation="RGB", PlanarConfiguration=0, BitsAllocated=8,
                BitsStored=8, HighBit=7, PixelData=np.zeros((20, 18, 3), np.uint8).tobytes())  # fmt: skip
    bad[rgb.folder] = "samples per pixel (RGB)"
    palette = dicom_series(root / "palette", seed=42)
    for f in palette.files:
        rewrite(f, PhotometricInterpretation="PALETTE COLOR")
    bad[palette.folder] = "PALETTE COLOR"
    mosaic = dicom_series(root / "mosaic", seed=43)
    first_position = pydicom.dcmread(mosaic.files[0]).ImagePositionPatient
    for f in mosaic.files[:3]:
        rewrite(f, ImageType=["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"], ImagePositionPatient=first_position)
    for f in mosaic.files[3:]:
        f.unlink()
    bad[mosaic.folder] = "Siemens mosaic"

    seg_source = dicom_series(root / "seg_source_tmp", seed=44)
    seg_file = write_dicom_seg(np.zeros((18, 20, 10), np.uint8), seg_source.folder, root / "a_seg_object.dcm",
                               ["background", "liver"])  # fmt: skip
    shutil.rmtree(seg_source.folder)
    bad[seg_file] = "DICOM-SEG object, not an image"
    dose = dicom_series(root / "dose_tmp", seed=45)
    rewrite(dose.files[0], Modality="RTDOSE")
    shutil.move(dose.files[0], root / "rtdose.dcm")
    shutil.rmtree(dose.folder)
    bad[root / "rtdose.dcm"] = "Modality RTDOSE: a radiotherapy dose grid, not an image series"
    (root / "no_series").mkdir()
    (root / "no_series" / "README.md").write_text("# nothing here\n")
    bad[root / "no_series"] = "no DICOM image series"
    (root / "empty_folder").mkdir()
    bad[root / "empty_folder"] = "no DICOM image series in the folder (it is empty)"
    (root / "zero.dcm").write_bytes(b"")
    bad[root / "zero.dcm"] = "empty file (0 bytes)"
    cut = dicom_series(root / "truncated_series", seed=46)
    cut.files[4].write_bytes(cut.files[4].read_bytes()[:-100])
    bad[cut.folder] = "the file is truncated or corrupt"
    os.symlink(root / "loop_b.nii.gz", root / "loop_a.nii.gz")
    os.symlink(root / "loop_a.nii.gz", root / "loop_b.nii.gz")
    bad[root / "loop_a.nii.gz"] = "a broken symlink or a symlink loop"
    bad[root / "missing.nii.gz"] = "no such file or folder"
    bad[nan_affine_nifti(root / "nan_affine.nii.gz")] = "affine (sform/qform) holds NaN"
    if not AS_ROOT:  # root reads a mode-000 file anyway: the case only exists for other accounts
        locked = nifti(root / "locked.nii.gz", seed=47)
        locked.chmod(0)
        bad[locked] = "not readable (permission denied)"

    # no voxel above the crop threshold: segmented without a crop, or refused naming the file (issue 20, item 1)
    blank = root / "blank.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 14), np.float32), np.eye(4)), blank)

    inputs = [str(p) for p in good] + [str(p) for p in bad] + [str(blank)]
    order = np.random.default_rng(0).permutation(len(inputs))
    return [inputs[i] for i in order], {str(k): v for k, v in bad.items()}, [str(blank)]


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    bundle = tiny_bundle(root)
    inputs, bad, either = build_batch(root / "inputs")
    assert len(inputs) >= 30
    # the clean run: each good input alone, through the Python API
    seg = Segmenter.from_bundle(bundle, device="cpu")
    names = dict(zip(inputs, output_names([Path(p) for p in inputs], "nifti", "seg")))
    clean = root / "clean"
    for item in inputs:
        if item in bad:
            continue
        try:
            seg.segment_file(item, clean / names[item])
        except Exception:
            if item not in either:
                raise
    return {"bundle": bundle, "inputs": inputs, "bad": bad, "either": either, "names": names, "clean": clean}


def run_cli(batch, out: Path, **popen) -> subprocess.Popen | subprocess.CompletedProcess:
    listing = out.parent / f"{out.name}_inputs.txt"
    listing.write_text("\n".join(batch["inputs"]) + "\n")
    cmd = [sys.executable, "-m", "monai_resunet", "segment", *batch["inputs"], "--bundle", str(batch["bundle"]),
           "-o", str(out), "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if popen.pop("background", False):
        return subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, **popen)  # fmt: skip
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, **popen)


def same_label(a: Path, b: Path) -> bool:
    x, y = nib.load(a), nib.load(b)
    return np.array_equal(np.asanyarray(x.dataobj), np.asanyarray(y.dataobj)) and np.allclose(x.affine, y.affine)


def check_outputs(batch, out: Path) -> None:
    expected = {batch["names"][p] for p in batch["inputs"] if p not in batch["bad"] and p not in batch["either"]}
    present = {p.name for p in out.iterdir()}
    hidden = [n for n in present if n.startswith(".") or ".partial" in n]
    assert not hidden, f"temporary files left: {hidden}"
    assert expected <= present, f"missing outputs: {sorted(expected - present)}"
    for name in expected:
        assert same_label(out / name, batch["clean"] / name), name
    unexpected = present - expected - {batch["names"][p] for p in batch["either"]}
    assert not unexpected, f"outputs of bad inputs: {sorted(unexpected)}"
    for p in batch["either"]:
        if (out / batch["names"][p]).exists():
            assert same_label(out / batch["names"][p], batch["clean"] / batch["names"][p])


def test_batch_with_every_failure_class(batch, tmp_path):
    out = tmp_path / "out"
    result = run_cli(batch, out)
    log = result.stdout + result.stderr
    assert result.returncode == 1, log[-4000:]
    check_outputs(batch, out)
    failed = dict(line.removeprefix("  failed: ").split(": ", 1)
                  for line in result.stdout.splitlines() if line.startswith("  failed: "))  # fmt: skip
    for path, reason in batch["bad"].items():
        assert path in failed, f"{path} not reported as failed:\n{log[-3000:]}"
        line = f"{path}: {failed[path]}"  # the line names the input once, then the reason
        assert reason in failed[path] and not failed[path].startswith(f"{path}: "), f"{line!r} lacks {reason!r}"
        assert "Traceback" not in failed[path]
    for path in batch["either"]:
        if path in failed:  # refused: named, with a reason, and not a library's internal error
            assert "grid_sampler" not in failed[path] and path in log
    n_good = len(batch["inputs"]) - len(batch["bad"])
    assert f"failed of {len(batch['inputs'])} inputs" in result.stdout
    # one line per input saying what was read: the two-series folder names both choices
    two = next(p for p in batch["inputs"] if p.endswith("two_series"))
    line = next(s for s in result.stdout.splitlines() if s.startswith(f"{two}: series "))
    assert "(10 file(s)); skipped 1 other series, 1 file(s) (not DICOM)" in line
    assert n_good >= 14
    if os.environ.get("FAULT_LOG"):  # the reasons, for the docs table (bundles/*/docs/inputs.md)
        Path(os.environ["FAULT_LOG"]).write_text(result.stdout)


def test_sigkill_mid_batch_then_rerun_completes_cleanly(batch, tmp_path):
    out = tmp_path / "out"
    proc = run_cli(batch, out, background=True)
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if out.is_dir() and sum(1 for p in out.iterdir() if not p.name.startswith(".")) >= 3:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    assert done_before, "the run was killed before it wrote anything"
    # what a kill inside a write leaves (the rename never happens): a hidden partial file beside the target
    pending = next(batch["names"][p] for p in batch["inputs"]
                   if p not in batch["bad"] and batch["names"][p] not in done_before)  # fmt: skip
    (out / f".{pending}.0123456789ab.partial.nii.gz").write_bytes(b"half a label map")
    result = run_cli(batch, out)
    assert result.returncode == 1, (result.stdout + result.stderr)[-4000:]
    check_outputs(batch, out)
    assert f"{len(done_before)} skipped (exist)" in result.stdout
