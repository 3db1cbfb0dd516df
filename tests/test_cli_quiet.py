"""The CLI is quiet by default (known-harmless third-party warnings hidden, `-v` shows them with the INFO log) and
does not import mlflow, which it never uses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch

from conftest import FAST_3D, REPO, copy_bundle

NET_3D = [f"{k}={v}".replace(" ", "") for k, v in FAST_3D.items() if k.startswith("network_def")]
HARMLESS = ("nvImageCodec", "NvImgCodecPydicomReader", "Orientationd", "not writable")


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    """The 3D bundle with a tiny untrained network saved as its model: the CLI's output, not its accuracy, is tested."""
    from monai.bundle import ConfigParser

    bundle = copy_bundle("resunet3d_segmentation", tmp_path_factory.mktemp("quiet"))
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.update({"bundle_root": str(bundle), **{k: v for k, v in FAST_3D.items() if k.startswith("network_def")}})
    torch.save(parser.get_parsed_content("network_def").state_dict(), bundle / "models" / "model.pt")
    return bundle


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "monai_resunet", *args], capture_output=True, text=True, env=env)


def test_segment_is_quiet_by_default_and_verbose_with_v(tiny_bundle, msd_dataset, tmp_path):
    image = sorted((msd_dataset / "imagesTs").glob("*.nii.gz"))[0]
    nrrd = tmp_path / "case.nrrd"  # NRRD input: the read-only array warning
    sitk.WriteImage(sitk.ReadImage(str(image)), str(nrrd))
    common = [str(nrrd), "--bundle", str(tiny_bundle), "--device", "cpu"]
    for item in NET_3D:
        common += ["--override", item]
    quiet = _cli("segment", *common, "-o", str(tmp_path / "quiet"))
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert (tmp_path / "quiet" / "case_seg.nii.gz").exists()
    assert not [w for w in HARMLESS if w in quiet.stderr], quiet.stderr[-2000:]
    assert "INFO" not in quiet.stderr
    verbose = _cli("segment", *common, "-o", str(tmp_path / "verbose"), "-v")
    assert verbose.returncode == 0, verbose.stderr[-2000:]
    assert "INFO" in verbose.stderr
    assert "Orientationd" in verbose.stderr  # the hidden warnings are back with -v


def test_cli_process_does_not_import_mlflow():
    pytest.importorskip("mlflow")  # with mlflow absent there is nothing to keep out
    probe = (
        "import sys, runpy; sys.argv = ['monai-resunet', 'segment', '--help']\n"
        "try:\n    runpy.run_module('monai_resunet', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "loaded = sys.modules.get('mlflow') is not None\n"
        "print('MLFLOW', loaded, file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert "MLFLOW False" in result.stderr, result.stderr[-2000:]
