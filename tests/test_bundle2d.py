"""The 2D slice-wise bundle: the same MSD data and MONAI workflows as the 3D bundle, a 2D network trained on
slices (and 2.5D neighbour channels), SliceInferer over whole volumes, and config pieces shared with 3D."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.inferers import SliceInferer

from conftest import BUNDLES, FAST_2D, run_workflow
from monai_resunet.transforms import AddNeighbourSlicesd, slice_sampling

NAME = "resunet2d_segmentation"


def load(name: str, config: str):
    path = BUNDLES / name / "configs" / config
    return json.loads(path.read_text()) if path.suffix == ".json" else path.read_text()


# evaluate.json entries that are the bundle's own deployed pipeline (equal to its inference.json's, see
# tests/test_bundle3d.py::test_evaluate_scores_what_inference_deploys); the rest is shared by the two bundles
DEPLOYED = ("preprocessing", "window_inferer", "postprocessing", "sw_batch_size")


def test_shared_config_pieces_match_the_3d_bundle():
    # the engine wiring is written once in spirit: these parts must stay identical between the two bundles
    for config in ("evaluate.json", "multi_gpu_train.json", "multi_gpu_evaluate.json", "logging.conf"):
        two, three = load(NAME, config), load("resunet3d_segmentation", config)
        if config == "evaluate.json":
            two, three = ({k: v for k, v in c.items() if k not in DEPLOYED} for c in (two, three))
        assert two == three, config
    # the pre-processing steps 0-5 (load … normalise) are the same in both bundles, in every config
    lists = (
        ("train.json", "train#deterministic_transforms"),
        ("inference.json", "preprocessing#transforms"),
        ("evaluate.json", "preprocessing#transforms"),
    )
    for config, entry in lists:
        steps = [load(n, config) for n in (NAME, "resunet3d_segmentation")]
        for part in entry.split("#"):
            steps = [s[part] for s in steps]
        assert steps[0][:6] == steps[1][:6], config
    two, three = load(NAME, "train.json"), load("resunet3d_segmentation", "train.json")
    shared = ("losses", "loss", "optimizer", "lr_scheduler", "device", "amp", "is_rank0", "modality", "class_names",
              "use_plan", "plan")  # fmt: skip
    for key in shared:
        assert two[key] == three[key], key
    for section in ("handlers", "trainer", "dataset", "dataloader", "preprocessing"):
        assert two["train"][section] == three["train"][section], section
    validate_sections = ("handlers", "best_model_saver", "key_metric", "additional_metrics", "evaluator")
    for section in (*validate_sections, "postprocessing", "dataset"):
        assert two["validate"][section] == three["validate"][section], section
    assert two["network_def"] == load(NAME, "inference.json")["network_def"]


def test_model_properties_are_written_with_the_weights_in_single_and_multi_gpu_training():
    """The properties are one config entry, written by the best-model handler next to model.pt; no initialize list
    writes its own copy (the multi-GPU one used to, without the 2D bundle's slice_axis and num_neighbours)."""
    two = load(NAME, "train.json")
    assert two["model_properties"]["slice_axis"] == "@slice_axis"
    assert two["model_properties"]["num_neighbours"] == "@num_neighbours"
    three = set(load("resunet3d_segmentation", "train.json")["model_properties"])
    assert set(two["model_properties"]) > three  # the planned entries included (levels, mirroring)
    for name in (NAME, "resunet3d_segmentation"):
        train = load(name, "train.json")
        assert train["validate"]["best_model_saver"]["properties"] == "@model_properties"
        for config in ("train.json", "multi_gpu_train.json"):
            assert not [e for e in load(name, config)["initialize"] if "model_properties" in e], (name, config)


def test_slice_sampling_and_neighbour_channels():
    vol = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(1, 6, 4, 5)
    stacked = AddNeighbourSlicesd("image", slice_axis=2, num_neighbours=1)({"image": vol})["image"]
    assert stacked.shape == (3, 6, 4, 5)
    assert torch.equal(stacked[1], vol[0])
    assert torch.equal(stacked[0, :, :, 2], vol[0, :, :, 1]) and torch.equal(stacked[2, :, :, 2], vol[0, :, :, 3])
    assert torch.equal(stacked[0, :, :, 0], vol[0, :, :, 0])  # the edge repeats
    label = torch.zeros(1, 6, 4, 5)
    label[0, 2, 2, 3] = 1
    from monai.transforms import Compose

    samples = Compose(slice_sampling(patch_size=(4, 4), slice_axis=0, num_classes=2, num_samples=3))(
        {"image": stacked, "label": label}
    )
    assert len(samples) == 3 and all(s["image"].shape == (3, 4, 4) and s["label"].shape == (1, 4, 4) for s in samples)


@pytest.mark.parametrize("num_neighbours", [0, 1])
def test_train_and_infer_slice_wise(bundle2d, msd_dataset, num_neighbours):
    overrides = {**FAST_2D, "dataset_dir": str(msd_dataset), "epochs": 1, "num_neighbours": num_neighbours}
    train = ConfigWorkflow(
        config_file=str(bundle2d / "configs" / "train.json"), meta_file=str(bundle2d / "configs" / "metadata.json"),
        workflow_type="train", bundle_root=str(bundle2d), **overrides,
    )  # fmt: skip
    train.initialize()
    assert not train.check_properties()
    assert isinstance(train.parser.get_parsed_content("validate#inferer"), SliceInferer)
    assert (
        train.parser.get_parsed_content("network_def").encoder[0][0].body[0].conv.in_channels == 1 + 2 * num_neighbours
    )
    train.run()
    train.finalize()
    props = json.loads((bundle2d / "models" / "model_properties.json").read_text())
    assert props["num_neighbours"] == num_neighbours and props["slice_axis"] == 2

    out = bundle2d / "predictions"
    infer = run_workflow(
        bundle2d, ["inference.json"], "infer", dataset_dir=str(msd_dataset), output_dir=str(out),
        **{k: v for k, v in FAST_2D.items() if k.startswith("network_def")},
    )  # fmt: skip
    assert not infer.check_properties()
    assert isinstance(infer.parser.get_parsed_content("inferer"), SliceInferer)
    for image in sorted((msd_dataset / "imagesTs").glob("*.nii.gz")):
        pred, src = nib.load(out / image.name.replace(".nii.gz", "_seg.nii.gz")), nib.load(image)
        assert pred.shape == src.shape
        np.testing.assert_allclose(pred.affine, src.affine, atol=1e-4)


def test_evaluate_2d(bundle2d, msd_dataset):
    overrides = {**FAST_2D, "dataset_dir": str(msd_dataset), "epochs": 1}
    run_workflow(bundle2d, ["train.json"], "train", **overrides)
    run_workflow(bundle2d, ["train.json", "evaluate.json"], "eval", **overrides)
    assert (bundle2d / "eval" / "val_mean_dice_raw.csv").is_file()
