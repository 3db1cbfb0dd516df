"""The Model Zoo's own checks, offline, through MONAI's functions: the pre-commit JSON layout and final newline,
the metadata schema (the copy inside each bundle), version/changelog, required packages, the inference key
names, the unit-test runner pattern (``handlers#0#_disabled_`` to run untrained), self-consistency after training
on a data set with other classes, and the portability pieces (bundle_root from the config file, the wheel's
package list, ``copy-bundle``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import tomllib
from monai.bundle import ConfigParser, ConfigWorkflow, verify_metadata, verify_net_in_out

from conftest import BUNDLES, FAST_3D, REPO, copy_bundle, run_workflow

NAMES = ["resunet3d_segmentation", "resunet2d_segmentation"]
SCHEMA = "docs/meta_schema_20240725.json"


# the files a bundle ships (what the zoo's hooks see), not what training writes into models/ and eval/
SHIPPED_JSON = sorted(
    p.relative_to(REPO) for p in BUNDLES.rglob("*.json") if p.parent.name in ("configs", "docs") or p.parent == BUNDLES
)


@pytest.mark.parametrize("path", SHIPPED_JSON, ids=str)
def test_bundle_json_is_in_the_zoo_pre_commit_layout(path):
    """pretty-format-json --indent=4 --no-sort-keys and end-of-file-fixer."""
    text = (REPO / path).read_text()
    assert text == json.dumps(json.loads(text), indent=4) + "\n", f"{path}: not json.dumps(indent=4) + newline"


@pytest.mark.parametrize("name", NAMES)
def test_metadata_schema_version_and_requirements(tmp_path, name):
    bundle = BUNDLES / name
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    schema = bundle / SCHEMA
    assert schema.read_text() == (BUNDLES / "meta_schema_20240725.json").read_text()
    assert meta["schema"].rsplit("/", 1)[1] == schema.name
    verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(schema))
    assert meta["version"] in meta["changelog"] and next(iter(meta["changelog"])) == meta["version"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert meta["required_packages_version"]["monai_resunet"] == project["version"]
    inference = json.loads((bundle / "configs" / "inference.json").read_text())
    for key in ("bundle_root", "device", "network_def", "inferer", "output_dir"):
        assert key in inference, key
    assert inference["handlers"][0]["_target_"] == "CheckpointLoader"


def test_wheel_lists_every_subpackage_and_the_bundles():
    """pyproject lists the packages (the bundles are mapped in from bundles/); a new sub-package must be added."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "monai_resunet").rglob("__init__.py")}
    bundle_folders = {
        f"monai_resunet.bundles.{b.name}{sub}"
        for b in BUNDLES.iterdir()
        if (b / "configs").is_dir()
        for sub in ("", ".configs", ".docs")
    }
    assert found | {"monai_resunet.bundles"} | bundle_folders == set(setuptools["packages"])
    assert setuptools["package-dir"]["monai_resunet.bundles"] == "bundles"


def _dataset_with_classes(msd_dataset, tmp_path, num_classes):
    """The demo data set relabelled to ``num_classes`` classes (background included)."""
    out = tmp_path / f"msd_{num_classes}"
    subprocess.run(["cp", "-r", str(msd_dataset), str(out)], check=True)
    info = json.loads((out / "dataset.json").read_text())
    info["labels"] = {str(i): "background" if i == 0 else f"class_{i}" for i in range(num_classes)}
    (out / "dataset.json").write_text(json.dumps(info))
    for label in (out / "labelsTr").glob("*.nii.gz"):
        img = nib.load(label)
        data = np.minimum(np.asarray(img.dataobj), num_classes - 1).astype(np.uint8)
        nib.save(nib.Nifti1Image(data, img.affine), label)
    return out


@pytest.mark.parametrize("num_classes", [2, 7])
def test_metadata_follows_training_on_other_classes(msd_dataset, tmp_path, num_classes):
    """After training, verify_metadata and verify_net_in_out pass with no hand edit; the zoo's runner pattern
    (check_properties, handlers#0#_disabled_ for the untrained inference) runs."""
    bundle = copy_bundle("resunet3d_segmentation", tmp_path)
    data = _dataset_with_classes(msd_dataset, tmp_path, num_classes)
    run_workflow(bundle, ["train.json"], "train", dataset_dir=str(data), epochs=1, **FAST_3D)
    meta_file = str(bundle / "configs" / "metadata.json")
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == num_classes
    verify_metadata(meta_file=meta_file, filepath=str(bundle / SCHEMA))
    small = {k: v for k, v in FAST_3D.items() if k.startswith("network_def")}
    verify_net_in_out(
        net_id="network_def", meta_file=meta_file, config_file=str(bundle / "configs" / "inference.json"),
        bundle_root=str(bundle), **small,
    )  # fmt: skip
    infer = ConfigWorkflow(
        config_file=str(bundle / "configs" / "inference.json"), workflow_type="infer", dataset_dir=str(data),
        output_dir=str(tmp_path / "out"), **{"handlers#0#_disabled_": True}, **FAST_3D,
    )  # fmt: skip
    infer.initialize()
    assert not infer.check_properties()
    assert infer.bundle_root == str(bundle)  # from the config file's location, no bundle_root given
    infer.run()
    assert len(list((tmp_path / "out").glob("*.nii.gz"))) == 2


def test_bundle_root_is_never_another_bundles_folder(tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "inference.json").write_text((BUNDLES / NAMES[0] / "configs" / "inference.json").read_text())
    wf = ConfigWorkflow(config_file=str(loose / "inference.json"), workflow_type="infer", logging_file=False)
    with pytest.raises(Exception) as err:
        wf.initialize()
    assert "pass bundle_root" in _chain(err.value)
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / NAMES[0] / "configs" / "inference.json"))
    with pytest.raises(Exception) as err:  # a bare parser does not know its file
        parser.get_parsed_content("bundle_root")
    assert "pass bundle_root" in _chain(err.value)


def _chain(error: BaseException | None) -> str:
    text = ""
    while error is not None:
        text, error = text + str(error), error.__cause__ or error.__context__
    return text


def test_copy_bundle_command(tmp_path):
    cmd = [sys.executable, "-m", "monai_resunet", "copy-bundle", NAMES[1], str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    copied = tmp_path / NAMES[1]
    assert (copied / "configs" / "inference.json").is_file() and (copied / SCHEMA).is_file()
    assert not [p for p in (copied / "models").iterdir()]
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert again.returncode == 2 and re.search("already exists", again.stderr)
