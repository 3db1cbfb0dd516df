"""Shared fixtures: a small synthetic MSD dataset and throw-away copies of the bundles."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from monai_resunet.data import make_demo_dataset

REPO = Path(__file__).resolve().parent.parent
BUNDLES = REPO / "bundles"

# Overrides that keep a bundle run to seconds on 2 CPU cores: a tiny network, small patches, no workers.
FAST_3D = {
    "patch_size": [32, 32, 32],
    "pixdim": [1.5, 1.5, 1.5],
    "num_workers": 0,
    "network_def#features": [8, 16, 32],
    "network_def#encoder_blocks": 1,
}

FAST_2D = {
    "patch_size": [32, 32],
    "pixdim": [1.5, 1.5, -1.0],
    "num_workers": 0,
    "num_samples": 4,
    "network_def#features": [8, 16, 32],
    "network_def#encoder_blocks": 1,
}


@pytest.fixture(scope="session")
def msd_dataset(tmp_path_factory) -> Path:
    """6 labelled + 2 test cases of 40×40×32 voxels, anisotropic rotated affines, MR, 3 classes."""
    return make_demo_dataset(tmp_path_factory.mktemp("msd"), num_train=6, num_test=2, size=(40, 40, 32), seed=1)


def copy_bundle(name: str, dest: Path) -> Path:
    """A copy of ``bundles/<name>`` without trained outputs, so tests never write into the repository."""
    target = dest / name
    shutil.copytree(
        BUNDLES / name, target, ignore=shutil.ignore_patterns("*.pt", "*.ts", "eval", "model_properties.json")
    )
    return target


@pytest.fixture
def bundle3d(tmp_path) -> Path:
    return copy_bundle("resunet3d_segmentation", tmp_path)


@pytest.fixture
def bundle2d(tmp_path) -> Path:
    return copy_bundle("resunet2d_segmentation", tmp_path)


def run_workflow(bundle: Path, configs: list[str], workflow_type: str, **overrides):
    """Initialise, run and finalise a ConfigWorkflow of ``bundle`` (``bundle_root`` set to it)."""
    from monai.bundle import ConfigWorkflow

    files = [str(bundle / "configs" / c) for c in configs]
    wf = ConfigWorkflow(
        config_file=files if len(files) > 1 else files[0],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        workflow_type=workflow_type,
        bundle_root=str(bundle),
        **overrides,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    return wf


def tiny_bundle(root: Path) -> Path:
    """A copy of the 3D bundle with FAST_3D's network written into its inference.json, random (seeded) weights
    as its model.pt and properties beside them: for tests of the CLI's behaviour, not of accuracy."""
    import json

    import torch
    from monai.bundle import ConfigParser

    from monai_resunet.model_properties import write_model_properties

    bundle = copy_bundle("resunet3d_segmentation", root)
    config = bundle / "configs" / "inference.json"
    cfg = json.loads(config.read_text())
    cfg["network_def"]["features"] = FAST_3D["network_def#features"]
    cfg["network_def"]["encoder_blocks"] = FAST_3D["network_def#encoder_blocks"]
    config.write_text(json.dumps(cfg, indent=4))
    write_model_properties(
        bundle / "models", class_names=["background", "liver", "spleen"], modality="MR",
        patch_size=FAST_3D["patch_size"], pixdim=FAST_3D["pixdim"],
    )  # fmt: skip
    parser = ConfigParser()
    parser.read_config(str(config))
    parser["bundle_root"] = str(bundle)
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    torch.save(network.state_dict(), bundle / "models" / "model.pt")
    return bundle


def segment_args(bundle: Path, out: Path, *args: str):
    """``segment --bundle BUNDLE --device cpu -o OUT ARGS...`` as the CLI's own parser reads it."""
    import argparse

    from monai_resunet.inference.cli import add_segment_parser

    parser = argparse.ArgumentParser()
    add_segment_parser(parser.add_subparsers())
    return parser.parse_args(["segment", "--bundle", str(bundle), "--device", "cpu", "-o", str(out), *args])
