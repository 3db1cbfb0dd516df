"""``torchrun -m monai_resunet segment``: 2 gloo processes give the single-process outputs, one summary listing
every case once, a non-zero exit for a failed case, and a re-run that only does what is missing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from dicom_synth import AXIAL, write_series
from monai.bundle import ConfigParser

from conftest import FAST_3D, REPO, copy_bundle, segment_args
from monai_resunet.config_flags import config_override
from monai_resunet.data import DEMO_CLASS_NAMES, make_demo_dataset
from monai_resunet.inference.archive import balanced_shares, case_cost, read_input_list
from monai_resunet.inference.cli import output_name
from monai_resunet.inference.segmenter import Segmenter
from monai_resunet.model_properties import write_model_properties

NET = [f"{k}={json.dumps(v)}" for k, v in FAST_3D.items() if k.startswith("network_def")]
NET_OPTIONS = [a for item in NET for a in ("--override", item)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """A 3D bundle with a tiny random-weight network, 5 small demo cases (two sizes) and one broken input."""
    root = tmp_path_factory.mktemp("archive")
    bundle = copy_bundle("resunet3d_segmentation", root)
    write_model_properties(
        bundle / "models", class_names=DEMO_CLASS_NAMES, modality="MR", pixdim=[1.5] * 3, patch_size=[32] * 3
    )
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    for key, value in FAST_3D.items():
        parser[key] = value
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), bundle / "models" / "model.pt")
    small = make_demo_dataset(root / "small", num_train=0, num_test=3, size=(32, 32, 28), seed=2)
    large = make_demo_dataset(root / "large", num_train=0, num_test=2, size=(48, 40, 32), seed=3)
    cases = sorted((small / "imagesTs").glob("*.nii.gz")) + [
        p.rename(p.with_name(f"large_{p.name}")) for p in sorted((large / "imagesTs").glob("*.nii.gz"))
    ]
    broken = root / "broken.nii.gz"
    broken.write_bytes(b"not an image")
    # a DICOM folder with two series: --series-uid picks the smaller one (the default would take the larger)
    write_series(root / "two_series", n_slices=12, rows=24, cols=20, orientation=AXIAL, prefix="A", seed=1)
    small_series = write_series(
        root / "two_series", n_slices=8, rows=24, cols=20, orientation=AXIAL, series_number=2, prefix="B", seed=2
    )
    return {"bundle": bundle, "cases": cases, "broken": broken, "root": root, "series": small_series}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _segment(tiny: dict, out: Path, inputs: list[Path], nproc: int, *options: str) -> subprocess.CompletedProcess:
    """The CLI over ``inputs`` (as an input list file) under torchrun with ``nproc`` single-thread processes."""
    listing = out.parent / f"{out.name}_inputs.txt"
    listing.write_text("# cases\n\n" + "\n".join(str(p) for p in inputs) + "\n")
    port = _free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={port}",
           "-m", "monai_resunet", "segment", "--bundle", str(tiny["bundle"]), "--device", "cpu",
           "-o", str(out), "--input-list", str(listing), *NET_OPTIONS, *options]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)


def _labels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(folder.glob("*_seg.nii.gz"))}


def _series_options(tiny: dict) -> list[str]:
    return ["--series-uid", tiny["series"].series_uid]


def _single_process(tiny: dict, out: Path, with_series: bool = False) -> dict[str, np.ndarray]:
    """The cases (and the chosen DICOM series) segmented here, in one process with one thread (as each torchrun
    rank runs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    reader = f"$monai_resunet.data.DicomSeriesReader(series_uid={tiny['series'].series_uid!r})"
    try:
        seg = Segmenter.from_bundle(
            tiny["bundle"], device="cpu", image_reader=reader, **dict(config_override(o) for o in NET)
        )
        for path in [*tiny["cases"], *([tiny["series"].folder] if with_series else [])]:
            seg.segment_file(path, out / output_name(path, "nifti", "seg"))
    finally:
        torch.set_num_threads(threads)
    return _labels(out)


def test_two_ranks_match_one_process_with_one_summary_and_resume(tiny, tmp_path):
    inputs = [*tiny["cases"][:2], tiny["broken"], *tiny["cases"][2:], tiny["series"].folder]
    out = tmp_path / "ranks"
    out.mkdir()
    stale = out / f".{output_name(tiny['cases'][0], 'nifti', 'seg')}.1234.partial.nii.gz"  # a killed run's
    stale.write_bytes(b"half")
    # what a killed run left: one output written (a blank label here, so a rewrite would show)
    done = tiny["cases"][1]
    done_name = output_name(done, "nifti", "seg")
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4)), out / done_name)
    result = _segment(tiny, out, inputs, 2, *_series_options(tiny))
    assert result.returncode != 0, result.stdout + result.stderr  # the broken input failed
    reference, labels = _single_process(tiny, tmp_path / "single", with_series=True), _labels(out)
    assert sorted(labels) == sorted(reference) and len(labels) == len(tiny["cases"]) + 1
    series_label = labels[output_name(tiny["series"].folder, "nifti", "seg")]
    assert series_label.shape == (20, 24, 8)  # the chosen 8-slice series, on its own grid
    assert not labels.pop(done_name).any()  # skipped, not rewritten
    for name, label in labels.items():
        np.testing.assert_array_equal(label, reference[name], err_msg=name)

    summary = json.loads((out / "segment_summary.json").read_text())
    cases = summary["cases"]
    assert [c["input"] for c in cases] == [str(p) for p in inputs]  # every case once, in input order
    status = {c["input"]: c["status"] for c in cases}
    assert status.pop(str(tiny["broken"])) == "failed" and status.pop(str(done)) == "skipped"
    assert set(status.values()) == {"written"}
    assert {c["rank"] for c in cases if c["status"] == "written"} == {0, 1}  # both ranks worked
    assert all(c["seconds"] > 0 and Path(c["output"]).is_file() for c in cases if c["status"] == "written")
    failed = next(c for c in cases if c["status"] == "failed")
    assert failed["error"] and f"failed: {tiny['broken']}" in result.stdout
    assert summary["totals"]["world_size"] == 2
    assert (summary["totals"]["written"], summary["totals"]["skipped"], summary["totals"]["failed"]) == (5, 1, 1)
    dicom = next(c for c in cases if c["input"] == str(tiny["series"].folder))
    assert (dicom["series_uid"], dicom["series_files"]) == (tiny["series"].series_uid, 8)
    assert tiny["series"].series_uid in dicom["read"] and "skipped 1 other series" in dicom["read"]
    assert f"{tiny['series'].folder}: {dicom['read']}" in result.stdout  # one line per input, as the CLI prints
    assert all(c["read"] for c in cases if c["status"] == "written")
    csv_rows = (out / "segment_summary.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + len(inputs) and csv_rows[0].startswith("input,output,status,seconds,rank")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_a_rank_checks_each_input_before_inference(tiny, tmp_path, monkeypatch, capsys):
    """A rank's share goes through the CLI's checks first: ``--format dicom-seg`` on a NIfTI fails without any
    inference, naming the input once."""
    from monai_resunet.inference import archive

    args = segment_args(tiny["bundle"], tmp_path, "--format", "dicom-seg", *NET_OPTIONS)
    monkeypatch.setattr(archive._RecordingSegmenter, "segment_file", lambda *a, **k: pytest.fail("inference ran"))
    case = tiny["cases"][0]
    records = archive._segment_share(args, [(str(case), tmp_path / "case_seg.dcm", 1)], rank=0, show_progress=False)
    assert records[0]["status"] == "failed" and "needs a DICOM source" in records[0]["error"]
    assert not records[0]["error"].startswith(str(case))  # the summary line names the input already
    assert f"FAILED {case}: " in capsys.readouterr().err


def test_balanced_shares_are_disjoint_complete_and_balanced():
    rng = np.random.default_rng(0)
    costs = [int(c) for c in rng.integers(1, 1000, size=101)]
    shares = balanced_shares(costs, 4)
    assert shares == balanced_shares(costs, 4)  # the same on every rank
    assert sorted(i for share in shares for i in share) == list(range(len(costs)))
    loads = [sum(costs[i] for i in share) for share in shares]
    assert max(loads) - min(loads) <= max(costs)  # greedy largest-first: within one case of each other
    assert balanced_shares([10, 1, 1, 8], 2) == [[0], [1, 2, 3]]
    assert balanced_shares([5], 3) == [[0], [], []]
    with pytest.raises(ValueError, match="world_size"):
        balanced_shares([1], 0)


def test_input_list_and_case_cost(tiny, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("# archive\n\n  /data/a.nii.gz  \n#/data/skipped\nrel/b.nrrd\n")
    assert read_input_list(listing) == ["/data/a.nii.gz", "rel/b.nrrd"]
    with pytest.raises(ValueError, match="cannot read the input list"):
        read_input_list(tmp_path / "nope.txt")
    assert case_cost(tiny["cases"][0]) == 32 * 32 * 28  # voxels from the NIfTI header
    assert case_cost(tiny["cases"][-1]) == 48 * 40 * 32
    assert case_cost(tiny["broken"]) == len(b"not an image") // 2  # unreadable header: bytes / 2
    assert case_cost(tmp_path / "missing.nii.gz") == 0


def test_multi_gpu_inference_override_runs_a_rank_and_skips_existing_outputs(tiny, tmp_path, monkeypatch):
    """``multi_gpu_inference.json`` on a 1-rank gloo group in this process: the pending images only, through the
    DistributedSampler, labels as the Segmenter's."""
    from conftest import run_workflow

    data = tmp_path / "data"
    (data / "imagesTs").mkdir(parents=True)
    for path in tiny["cases"][:3]:
        (data / "imagesTs" / path.name).symlink_to(path)
    out = tmp_path / "out"
    out.mkdir()
    done_name = output_name(tiny["cases"][0], "nifti", "seg")
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4)), out / done_name)
    reference = _single_process({**tiny, "cases": tiny["cases"][:3]}, tmp_path / "single")
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_workflow(
            tiny["bundle"], ["inference.json", "multi_gpu_inference.json"], "infer",
            dataset_dir=str(data), output_dir=str(out), **FAST_3D,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert not torch.distributed.is_initialized()  # finalize left no process group behind
    labels = _labels(out)
    assert sorted(labels) == sorted(reference) and not labels.pop(done_name).any()  # skipped, not rewritten
    for name, label in labels.items():
        np.testing.assert_array_equal(label, reference[name], err_msg=name)


@pytest.mark.slow
def test_multi_gpu_inference_with_torchrun_two_ranks(tiny, tmp_path):
    """``torchrun --nproc_per_node=2 -m monai.bundle run`` with the override: each case written once, as one
    process writes it."""
    data = tmp_path / "data"
    (data / "imagesTs").mkdir(parents=True)
    for path in tiny["cases"]:
        (data / "imagesTs" / path.name).symlink_to(path)
    out = tmp_path / "out"
    configs = str([str(tiny["bundle"] / "configs" / c) for c in ("inference.json", "multi_gpu_inference.json")])
    overrides = [a for k, v in FAST_3D.items() for a in (f"--{k}", json.dumps(v))]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "monai.bundle", "run", "--config_file", configs, "--bundle_root", str(tiny["bundle"]),
           "--meta_file", str(tiny["bundle"] / "configs" / "metadata.json"), "--dataset_dir", str(data),
           "--output_dir", str(out), *overrides]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    reference, labels = _single_process(tiny, tmp_path / "single"), _labels(out)
    assert sorted(labels) == sorted(reference)
    for name, label in labels.items():
        np.testing.assert_array_equal(label, reference[name], err_msg=name)
