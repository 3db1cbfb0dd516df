"""The 3D bundle, model-zoo style: properties, metadata, train → evaluate → infer through ConfigWorkflow and the
MONAI bundle CLI, output geometry, resume after ``kill -9``, determinism, DDP with two CPU processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from conftest import FAST_3D, REPO

NAME = "resunet3d_segmentation"


def epochs_done(checkpoint: Path) -> int:
    trainer = torch.load(checkpoint, weights_only=True)["trainer"]  # ignite keeps iteration and epoch_length
    return trainer["iteration"] // trainer["epoch_length"]


def cli_overrides(overrides: dict) -> list[str]:
    args = []
    for key, value in overrides.items():
        args += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    return args


def run_cli(bundle: Path, run_id: str | None, configs: list[str], overrides: dict, timeout=300, extra=(), **popen):
    config_arg = (
        str(bundle / "configs" / configs[0])
        if len(configs) == 1
        else str([str(bundle / "configs" / c) for c in configs])
    )
    cmd = [sys.executable, "-m", "monai.bundle", "run"] + ([run_id] if run_id else [])
    cmd += ["--config_file", config_arg] + cli_overrides(overrides) + list(extra)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, **popen)


def workflow(bundle: Path, configs: list[str], workflow_type: str, **overrides) -> ConfigWorkflow:
    files = [str(bundle / "configs" / c) for c in configs]
    return ConfigWorkflow(
        config_file=files if len(files) > 1 else files[0],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        workflow_type=workflow_type,
        bundle_root=str(bundle),
        **overrides,
    )


def test_check_properties(bundle3d, msd_dataset):
    train = workflow(bundle3d, ["train.json"], "train", dataset_dir=str(msd_dataset))
    train.initialize()
    assert not train.check_properties()
    infer = workflow(bundle3d, ["inference.json"], "infer", dataset_dir=str(msd_dataset), load_pretrain=False)
    infer.initialize()
    assert not infer.check_properties()
    # as `--load_pretrain false` gives it: a string, which must not count as true
    as_typed = workflow(bundle3d, ["inference.json"], "infer", dataset_dir=str(msd_dataset), load_pretrain="false")
    as_typed.initialize()
    untrained = workflow(bundle3d, ["inference.json"], "infer", dataset_dir=str(msd_dataset))
    with pytest.raises(RuntimeError) as err:
        untrained.initialize()
    assert "no trained weights" in str(err.value.__cause__)


def test_metadata_verifies_against_shipped_schema(bundle3d, tmp_path):
    from monai.bundle import verify_metadata

    schema = REPO / "bundles" / "meta_schema_20240725.json"
    meta = json.loads((bundle3d / "configs" / "metadata.json").read_text())
    assert meta["schema"].endswith("/" + schema.name)  # the shipped file is the one the URL names
    assert "required_packages_version" in meta and "optional_packages_version" not in meta
    verify_metadata(meta_file=str(bundle3d / "configs" / "metadata.json"), filepath=str(schema))
    meta["optional_packages_version"] = {}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(meta))
    with pytest.raises(ValueError):
        verify_metadata(meta_file=str(bad), filepath=str(schema))


def test_inference_network_matches_training_network():
    # inference.json re-spells network_def (model-zoo convention); it must stay identical to train.json's
    train = json.loads((REPO / "bundles" / NAME / "configs" / "train.json").read_text())["network_def"]
    infer = json.loads((REPO / "bundles" / NAME / "configs" / "inference.json").read_text())["network_def"]
    assert train == infer


# preprocessing#transforms ids 0-5, the same in both bundles' inference.json, evaluate.json (preprocessing) and
# train.json (train#deterministic_transforms); the bundle README's table lists them
PRE_STEPS = [
    "LoadImageBySuffixd",
    "EnsureChannelFirstd",
    "Orientationd",
    "CropForegroundd",
    "SlabSpacingd",
    "NormalizeByModalityd",
]
BUNDLE_NAMES = [NAME, "resunet2d_segmentation"]


def bundle_config(name: str, config: str) -> dict:
    return json.loads((REPO / "bundles" / name / "configs" / config).read_text())


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_pipelines_are_transform_lists_with_the_documented_ids(name):
    lists = {
        "inference.json": bundle_config(name, "inference.json")["preprocessing"]["transforms"],
        "evaluate.json": bundle_config(name, "evaluate.json")["preprocessing"]["transforms"],
        "train.json": bundle_config(name, "train.json")["train"]["deterministic_transforms"],
    }
    for config, steps in lists.items():
        assert [step["_target_"].rpartition(".")[2] for step in steps[:6]] == PRE_STEPS, config
    train = bundle_config(name, "train.json")["train"]
    assert isinstance(train["random_transforms"], list) and all("_target_" in t for t in train["random_transforms"])
    for config in ("train.json", "inference.json", "evaluate.json"):
        text = (REPO / "bundles" / name / "configs" / config).read_text()
        assert "segmentation_preprocessing" not in text and "segmentation_augmentation" not in text, config


def _spacing_after(config_overrides: dict, image: Path, tmp_path: Path, entry: str = "preprocessing") -> list[float]:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / NAME / "configs" / "inference.json"))
    values = {"bundle_root": str(tmp_path), "modality": "MR", "pixdim": [1.0, 1.0, 1.0], "ct_window": [-175, 250]}
    for key, value in {**values, **config_overrides}.items():
        parser[key] = value
    out = parser.get_parsed_content(entry)({"image": str(image)})["image"]
    return [round(float(x), 4) for x in out.pixdim]


def test_one_preprocessing_step_is_overridden_by_id(tmp_path, msd_dataset):
    """``--preprocessing#transforms#4#pixdim "[1.5,1.5,2]"``, as a zoo bundle allows: that step changes, alone."""
    from monai.bundle import ConfigParser

    from monai_resunet.transforms import SlabSpacingd

    image = sorted((msd_dataset / "imagesTs").glob("*.nii.gz"))[0]
    assert _spacing_after({}, image, tmp_path) == [1.0, 1.0, 1.0]
    assert _spacing_after({"preprocessing#transforms#4#pixdim": [1.5, 1.5, 2.0]}, image, tmp_path) == [1.5, 1.5, 2.0]
    # in training, the deterministic steps are shared with validation (%train#deterministic_transforms)
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / NAME / "configs" / "train.json"))
    parser["dataset_dir"] = str(msd_dataset)
    parser["train#deterministic_transforms#4#pixdim"] = [2.0, 2.0, 2.0]
    for entry in ("train#preprocessing", "validate#preprocessing"):
        spacing = parser.get_parsed_content(entry).transforms[4]
        assert isinstance(spacing, SlabSpacingd) and list(spacing.spacing_transform.pixdim) == [2.0, 2.0, 2.0], entry
    # a step is switched off by id (no body crop: the output keeps the whole field of view)
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / NAME / "configs" / "inference.json"))
    parser.update({"bundle_root": str(tmp_path), "modality": "MR", "ct_window": [-175, 250], "pixdim": [1.0, 1.0, 1.0]})
    parser["preprocessing#transforms#3#_disabled_"] = True
    names = [type(t).__name__ for t in parser.get_parsed_content("preprocessing").transforms]
    assert names[:4] == ["LoadImageBySuffixd", "EnsureChannelFirstd", "Orientationd", "SlabSpacingd"]


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_evaluate_scores_what_inference_deploys(name, msd_dataset, tmp_path):
    """evaluate.json (on top of train.json) carries inference.json's inferer, pre-processing of the image and
    post-processing (less the file writer), and adds the one-hot step the metrics need."""
    from monai.bundle import ConfigParser
    from monai.inferers import SliceInferer

    from monai_resunet.inference import MirrorInferer, SlabArgmaxInferer
    from monai_resunet.transforms import InvertLabelMapd

    inference, evaluate = bundle_config(name, "inference.json"), bundle_config(name, "evaluate.json")
    for key in ("window_inferer", "mirror_axes", "inferer", "image_key", "cpu_bf16"):
        assert evaluate[key] == inference[key], key
    assert inference["postprocessing"]["transforms"][-1] == "@saver"
    assert evaluate["postprocessing"]["transforms"] == inference["postprocessing"]["transforms"][:-1]
    pre, deployed = evaluate["preprocessing"]["transforms"], inference["preprocessing"]["transforms"]
    assert pre[2:] == deployed[2:]  # the image's steps; the label is only loaded, channel first, on its own grid
    assert [{k: v for k, v in t.items() if k != "keys"} for t in pre[:2]] == [
        {k: v for k, v in t.items() if k != "keys"} for t in deployed[:2]
    ]
    assert evaluate["validate#inferer"] == "@inferer" and evaluate["validate#preprocessing"] == "@preprocessing"

    configs = [str(REPO / "bundles" / name / "configs" / c) for c in ("train.json", "evaluate.json")]
    for mirror_axes in ([], [0]):
        parser = ConfigParser()
        parser.read_config(configs)
        parser.update({"dataset_dir": str(msd_dataset), "bundle_root": str(tmp_path), "mirror_axes": mirror_axes})
        inferer = parser.get_parsed_content("validate#inferer")
        window = SlabArgmaxInferer if name == NAME else SliceInferer
        assert isinstance(inferer, MirrorInferer if mirror_axes else window)
        post = parser.get_parsed_content("validate#postprocessing").transforms
        assert post[0] is parser.get_parsed_content("postprocessing")
        if name == NAME:
            assert [type(t) for t in post[0].transforms] == [InvertLabelMapd]


def test_train_evaluate_infer_workflows(bundle3d, msd_dataset):
    overrides = {**FAST_3D, "dataset_dir": str(msd_dataset), "epochs": 1}
    train = workflow(bundle3d, ["train.json"], "train", **overrides)
    train.initialize()
    train.run()
    train.finalize()
    models = bundle3d / "models"
    assert (models / "model.pt").is_file() and (models / "last_state.pt").is_file()
    state = torch.load(models / "last_state.pt", weights_only=True)
    assert (
        set(state) >= {"network", "optimizer", "lr_scheduler", "trainer"} and epochs_done(models / "last_state.pt") == 1
    )
    # the best score travels with the resume state, so a resumed run does not overwrite a better model.pt
    assert state["best_model"]["best_metric_epoch"] == 1 and 0 <= state["best_model"]["best_metric"] <= 1
    assert (bundle3d / "eval" / "curves.png").is_file()
    props = json.loads((models / "model_properties.json").read_text())
    assert props["class_names"] == ["background", "dim_sphere", "bright_sphere"] and props["patch_size"] == [32, 32, 32]

    evaluate = workflow(bundle3d, ["train.json", "evaluate.json"], "eval", **overrides)
    evaluate.initialize()
    evaluate.run()
    evaluate.finalize()
    raw = (bundle3d / "eval" / "val_mean_dice_raw.csv").read_text().splitlines()
    assert len(raw) >= 2  # header + one row per validation case
    for name in ("val_hd95_summary.csv", "val_surface_distance_summary.csv", "metrics.csv"):
        assert (bundle3d / "eval" / name).is_file()
    # evaluate.json scores what inference.json deploys: each case's Dice is that of the Segmenter's label map (built
    # from inference.json) against the label file, on the input's own grid
    from monai.metrics import compute_dice
    from monai.networks.utils import one_hot

    from monai_resunet.inference.segmenter import Segmenter

    seg = Segmenter.from_bundle(
        bundle3d, device="cpu", **{k: v for k, v in FAST_3D.items() if k.startswith("network_def")}
    )
    for row in (line.split(",") for line in raw[1:]):
        truth = torch.as_tensor(np.asarray(nib.load(row[0].replace("imagesTr", "labelsTr")).dataobj))
        pred = seg(row[0])
        dice = compute_dice(
            one_hot(pred[None].long(), 3), one_hot(truth[None, None].long(), 3), include_background=False
        )
        np.testing.assert_allclose(dice[0].numpy(), [float(v) for v in row[1:3]], atol=1e-5)

    out = bundle3d / "predictions"
    infer = workflow(
        bundle3d, ["inference.json"], "infer", dataset_dir=str(msd_dataset), output_dir=str(out),
        **{k: v for k, v in FAST_3D.items() if k.startswith("network_def")},
    )  # fmt: skip
    infer.initialize()
    infer.run()
    infer.finalize()
    for image in sorted((msd_dataset / "imagesTs").glob("*.nii.gz")):
        pred = nib.load(out / image.name.replace(".nii.gz", "_seg.nii.gz"))
        src = nib.load(image)
        assert pred.shape == src.shape
        np.testing.assert_allclose(pred.affine, src.affine, atol=1e-4)
        assert pred.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2}


def test_cli_train_then_infer_on_anisotropic_shifted_grid(bundle3d, msd_dataset, tmp_path):
    overrides = {**FAST_3D, "dataset_dir": str(msd_dataset), "epochs": 1}
    result = run_cli(bundle3d, "training", ["train.json"], overrides)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (bundle3d / "models" / "model.pt").is_file()

    # a scan with strongly anisotropic voxels, an oblique direction and a far-off origin, in its own folder
    rng = np.random.RandomState(0)
    affine = np.array([[0.0, -0.7, 0.1, 120.0], [0.8, 0.0, 0.0, -45.5], [0.0, 0.05, 3.0, 300.25], [0, 0, 0, 1]])
    test_dir = tmp_path / "scans"
    (test_dir / "imagesTs").mkdir(parents=True)
    nib.save(nib.Nifti1Image(rng.rand(37, 29, 11).astype(np.float32), affine), test_dir / "imagesTs" / "odd.nii.gz")
    out = tmp_path / "out"
    net_overrides = {k: v for k, v in FAST_3D.items() if k.startswith("network_def")}
    result = run_cli(
        bundle3d, None, ["inference.json"], {"dataset_dir": str(test_dir), "output_dir": str(out), **net_overrides}
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    pred = nib.load(out / "odd_seg.nii.gz")
    assert pred.shape == (37, 29, 11)
    np.testing.assert_allclose(pred.affine, affine, atol=1e-4)


def test_resume_after_kill_9(bundle3d, msd_dataset):
    overrides = {**FAST_3D, "dataset_dir": str(msd_dataset), "epochs": 3, "val_interval": 3}
    last = bundle3d / "models" / "last_state.pt"
    config = str(bundle3d / "configs" / "train.json")
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", config, *cli_overrides(overrides)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while not last.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # kill -9, mid-training
    proc.wait()
    assert last.is_file(), "no last-state checkpoint was written before the kill"
    done = epochs_done(last)
    assert 1 <= done <= 3

    result = run_cli(bundle3d, "training", ["train.json"], {**overrides, "resume": "true"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    if done < 3:
        assert f"resumed from {last}: epoch {done} done, continuing at epoch {done + 1} of 3" in log
    assert epochs_done(last) == 3  # same epoch count as an uninterrupted run
    assert torch.load(last, weights_only=True)["best_model"]["best_metric_epoch"] == 3  # validated at epoch 3
    assert (bundle3d / "models" / "model.pt").is_file() and (bundle3d / "models" / "model_properties.json").is_file()
    history = json.loads((bundle3d / "eval" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_two_seeded_cpu_runs_give_identical_weights(tmp_path, msd_dataset):
    from conftest import copy_bundle

    weights = []
    for run in ("a", "b"):
        bundle = copy_bundle(NAME, tmp_path / run)
        wf = workflow(bundle, ["train.json"], "train", **{**FAST_3D, "dataset_dir": str(msd_dataset), "epochs": 2})
        wf.initialize()
        wf.run()
        wf.finalize()
        weights.append(torch.load(bundle / "models" / "last_state.pt", weights_only=True)["network"])
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


def test_ddp_two_cpu_processes(bundle3d, msd_dataset):
    overrides = {**FAST_3D, "dataset_dir": str(msd_dataset), "epochs": 1}
    configs = str([str(bundle3d / "configs" / "train.json"), str(bundle3d / "configs" / "multi_gpu_train.json")])
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
        "-m", "monai.bundle", "run", "training", "--config_file", configs, *cli_overrides(overrides),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    state = torch.load(bundle3d / "models" / "last_state.pt", weights_only=True)
    assert epochs_done(bundle3d / "models" / "last_state.pt") == 1
    assert not any(k.startswith("module.") for k in state["network"])  # saved unwrapped: loads without DDP
    # metrics are logged by rank 0 only
    assert (result.stdout + result.stderr).count("Key metric: val_mean_dice best value") == 1


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("mlflow") is None, reason="MLflow tracking needs the 'mlflow' extra"
)
def test_cli_tracking_mlflow_logs_scalar_per_class_metrics(bundle3d, msd_dataset):
    import mlflow

    overrides = {**FAST_3D, "dataset_dir": str(msd_dataset), "epochs": 1}
    result = run_cli(bundle3d, "training", ["train.json"], overrides, extra=["--tracking", "mlflow"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{bundle3d / 'eval' / 'mlruns.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert runs
    keys = set(runs[0].data.metrics)
    assert {"train_loss", "val_mean_dice", "val_class_dice/dim_sphere", "val_class_dice/bright_sphere"} <= keys


@pytest.mark.parametrize("name", [NAME, "resunet2d_segmentation"])
@pytest.mark.parametrize("device,loader,workers", [("cpu", "ThreadDataLoader", 0), ("cuda", "DataLoader", 2)])
def test_training_loader_follows_the_device(msd_dataset, name, device, loader, workers):
    """On a CPU the network's threads use every core, so augmentation runs in one background thread
    (``ThreadDataLoader``); with a GPU doing the compute, ``num_workers`` processes prepare the batches."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / name / "configs" / "train.json"))
    parser["dataset_dir"] = str(msd_dataset)
    parser["device"] = f"$torch.device('{device}')"
    parser["cache_rate"] = 0.0
    parsed = parser.get_parsed_content("train#dataloader")
    assert (type(parsed).__name__, parsed.num_workers, parsed.persistent_workers) == (loader, workers, workers > 0)


def test_bundle_trains_with_deep_supervision(bundle3d, msd_dataset):
    """``network_def#deep_supervision`` on: the config's ``StackedDeepSupervisionLoss`` takes the stacked output."""
    overrides = {**FAST_3D, "dataset_dir": str(msd_dataset), "epochs": 1, "network_def#deep_supervision": True}
    train = workflow(bundle3d, ["train.json"], "train", **overrides)
    train.initialize()
    network = train.parser.get_parsed_content("network")
    assert len(network.deep_heads) == 1
    heads = [p.clone() for p in network.deep_heads.parameters()]
    train.run()
    # the head's weights moved: its output reached the loss (eval-mode validation sees the main output only)
    assert any(not torch.equal(a, b) for a, b in zip(heads, network.deep_heads.parameters()))
    assert train.parser.get_parsed_content("validate#evaluator").state.metrics["val_mean_dice"] >= 0.0
    train.finalize()
