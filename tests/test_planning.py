"""The data-set planner (``monai_resunet.planning``): spacing, normalisation, patch/levels and mirroring from
synthetic data sets whose answers are known, the ``plan`` command, and both bundles trained from a plan."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_resunet.planning import (
    PLAN_FILE,
    activation_bytes_per_voxel,
    decide_mirror_axes,
    load_plan,
    mirror_overlaps,
    plan_dataset,
    slice_plan,
)

# a small network keeps the planner's memory probe quick; its divisor (stem 2 × 2²) is 8
SMALL_NET = {"features": (8, 16, 32), "encoder_blocks": 1}


def write_dataset(folder: Path, cases: list[tuple[np.ndarray, np.ndarray, tuple]], modality: str, names: list[str]):
    """An MSD folder: ``cases`` of (image, label, spacing), axis-aligned affines."""
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    training = []
    for i, (image, label, spacing) in enumerate(cases):
        affine = np.diag([*spacing, 1.0])
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), folder / "imagesTr" / f"c{i}.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), folder / "labelsTr" / f"c{i}.nii.gz")
        training.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
    meta = {"modality": {"0": modality}, "labels": {str(i): n for i, n in enumerate(names)}, "training": training}
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def body_case(shape, rng, classes=((1, slice(None)),)):
    """A positive-valued body filling the volume with noise, a cube of class 1 in the middle."""
    image = 100 + 10 * rng.rand(*shape)
    label = np.zeros(shape, np.uint8)
    c = [s // 2 for s in shape]
    label[c[0] - 4 : c[0] + 4, c[1] - 4 : c[1] + 4, max(0, c[2] - 2) : c[2] + 2] = 1
    image[label == 1] += 50
    return image, label


def test_isotropic_dataset_plan(tmp_path):
    rng = np.random.RandomState(0)
    cases = [(*body_case((48, 44, 40), rng), (1.2, 1.2, 1.2)) for _ in range(3)]
    folder = write_dataset(tmp_path / "iso", cases, "MR", ["background", "thing"])
    plan = plan_dataset(folder, memory_gib=1.0, network=SMALL_NET)
    assert plan["pixdim"] == pytest.approx([1.2, 1.2, 1.2], abs=1e-3)
    assert "isotropic" in plan["reasons"]["pixdim"]
    # all 3 levels (divisor 8); the median shape rounded up to multiples of 8, so 4+ voxels at the bottom
    assert plan["num_levels"] == 3 and plan["patch_size"] == [48, 48, 40]
    assert "ct_window" not in plan and "MR" in plan["reasons"]["normalisation"]
    assert plan["batch_size"] >= 2
    # written beside the data with DataAnalyzer's statistics, and readable back
    assert load_plan(folder) == plan and (folder / "datastats.yaml").is_file()


def test_anisotropic_dataset_takes_tenth_percentile_of_the_thick_axis(tmp_path):
    rng = np.random.RandomState(1)
    spacings = [(0.8, 0.8, 4.0), (0.8, 0.8, 4.0), (0.8, 0.8, 4.0), (0.8, 0.8, 3.0)]
    cases = [(*body_case((64, 60, 12), rng), s) for s in spacings]
    folder = write_dataset(tmp_path / "aniso", cases, "MR", ["background", "thing"])
    plan = plan_dataset(folder, memory_gib=1.0, network=SMALL_NET)
    # median (0.8, 0.8, 4.0): 5× anisotropic, so z at its 10th percentile: np.percentile([3, 4, 4, 4], 10) = 3.3
    assert plan["pixdim"] == pytest.approx([0.8, 0.8, 3.3], abs=1e-3)
    assert "low-resolution axis" in plan["reasons"]["pixdim"]
    # 12 slices × 4 mm / 3.3 mm ≈ 14.5 (median): the network keeps 2 levels (4 × 4 = 16 ≤ 1.5 × 14.5); no axis below 4
    assert plan["num_levels"] == 2
    assert plan["patch_size"] == [64, 60, 16]
    assert all(p // 4 >= 4 for p in plan["patch_size"])
    assert "isotropic strides only" in plan["reasons"]["num_levels"]


def test_ct_plan_windows_the_foreground_and_z_scores(tmp_path):
    """CT with air (-1000 HU) around the body, soft tissue, and a labelled organ and bone: the window comes from the
    labelled intensities (so bone is not clipped away as the fixed abdominal window does), z-scored."""
    from monai_resunet.transforms import NormalizeByModalityd

    rng = np.random.RandomState(2)
    cases, fg_values = [], []
    for _ in range(3):
        image = np.full((40, 40, 30), -1000.0) + 20 * rng.randn(40, 40, 30)
        label = np.zeros(image.shape, np.uint8)
        image[5:35, 5:35, 3:27] = 40 + 15 * rng.randn(30, 30, 24)  # body
        label[10:20, 10:25, 8:20] = 1
        image[label == 1] = 60 + 10 * rng.randn(int((label == 1).sum()))  # organ
        label[24:30, 12:28, 8:22] = 2
        image[label == 2] = 900 + 150 * rng.randn(int((label == 2).sum()))  # bone
        cases.append((image, label, (1.0, 1.0, 2.0)))
        fg_values.append(image[label > 0])
    folder = write_dataset(tmp_path / "ct", cases, "CT", ["background", "organ", "bone"])
    plan = plan_dataset(folder, memory_gib=1.0, network=SMALL_NET)
    low = np.mean([np.percentile(v, 0.5) for v in fg_values])
    high = np.mean([np.percentile(v, 99.5) for v in fg_values])
    assert plan["ct_window"] == pytest.approx([low, high], rel=0.02, abs=2.0)
    assert plan["ct_window"][1] > 1000  # bone kept, unlike the fixed (-175, 250) window
    # the normalisation the bundle builds from the plan: the labelled voxels come out near zero mean, unit std
    norm = NormalizeByModalityd("image", "CT", plan["ct_window"], ct_target_range=plan["ct_target_range"])
    out = np.concatenate(
        [np.asarray(norm({"image": c[0][None].astype(np.float32)})["image"])[0][c[1] > 0] for c in cases]
    )
    assert abs(out.mean()) < 0.05 and abs(out.std() - 1) < 0.1
    assert "CT" in plan["reasons"]["normalisation"]


def test_patch_shrinks_to_the_memory_budget(tmp_path):
    rng = np.random.RandomState(3)
    cases = [(*body_case((96, 80, 64), rng), (1.0, 1.0, 1.0)) for _ in range(2)]
    folder = write_dataset(tmp_path / "big", cases, "MR", ["background", "thing"])
    bpv = activation_bytes_per_voxel(SMALL_NET, num_classes=2)
    budget_gib = 2 * 48**3 * bpv / 2**30  # room for two 48³ patches
    plan = plan_dataset(folder, memory_gib=budget_gib, network=SMALL_NET)
    patch = plan["patch_size"]
    assert 2 * np.prod(patch) * bpv <= budget_gib * 2**30
    assert all(p % 8 == 0 and p >= 32 for p in patch) and patch != [96, 80, 64]
    assert patch[0] <= patch[1] + 8  # the longest axis gave up first


def lr_case(shape=(40, 32, 24), swap=False):
    """A body with two look-alike cubes: class 1 left of the middle along x, class 2 right (``swap`` reverses)."""
    image = np.full(shape, 100.0)
    label = np.zeros(shape, np.uint8)
    a, b = (1, 2) if not swap else (2, 1)
    label[6:14, 10:22, 8:16] = a
    label[26:34, 10:22, 8:16] = b
    image[label > 0] = 200.0
    return image, label


def symmetric_case(shape=(40, 32, 24)):
    """Two classes that differ in type, not side: a core (class 1) inside a shell (class 2), both centred."""
    image = np.full(shape, 100.0)
    label = np.zeros(shape, np.uint8)
    label[12:28, 8:24, 6:18] = 2
    label[16:24, 12:20, 9:15] = 1
    image[label == 2], image[label == 1] = 150.0, 250.0
    return image, label


def test_mirroring_measure_on_labels():
    names = ["background", "left_cube", "right_cube"]
    axes, reasons = decide_mirror_axes(mirror_overlaps([lr_case()[1]], 3), names)
    assert axes == [1, 2] and reasons["0"].startswith("not mirrored")
    axes, reasons = decide_mirror_axes(mirror_overlaps([symmetric_case()[1]], 3), ["background", "core", "shell"])
    assert axes == [0, 1, 2] and all(r.startswith("mirrored") for r in reasons.values())


def test_plan_mirroring_left_right_classes_vs_symmetric(tmp_path):
    lr = write_dataset(
        tmp_path / "lr", [(*lr_case(), (1.0, 1.0, 1.0)) for _ in range(2)], "MR", ["background", "left", "right"]
    )
    sym = write_dataset(
        tmp_path / "sym", [(*symmetric_case(), (1.0, 1.0, 1.0)) for _ in range(2)], "MR", ["background", "a", "b"]
    )
    assert plan_dataset(lr, network=SMALL_NET)["mirror_axes"] == [1, 2]
    assert plan_dataset(sym, network=SMALL_NET)["mirror_axes"] == [0, 1, 2]


def test_plan_command_prints_reasons_and_keeps_an_edited_plan(tmp_path, capsys):
    from monai_resunet.__main__ import main

    rng = np.random.RandomState(4)
    folder = write_dataset(tmp_path / "cli", [(*body_case((32, 32, 32), rng), (1, 1, 1))], "MR", ["bg", "thing"])
    assert main(["plan", "--dataset_dir", str(folder), "--memory_gib", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "pixdim: [1.0, 1.0, 1.0]" in out and "axis 0:" in out and (folder / PLAN_FILE).is_file()
    plan = load_plan(folder)
    plan["pixdim"] = [2.0, 2.0, 2.0]  # a user's edit survives a second `plan` without --force
    (folder / PLAN_FILE).write_text(json.dumps(plan))
    assert main(["plan", "--dataset_dir", str(folder)]) == 0
    assert load_plan(folder)["pixdim"] == [2.0, 2.0, 2.0]
    assert main(["plan", "--dataset_dir", str(tmp_path / "missing")]) == 2


def infer_on_another_grid(bundle: Path, tmp_path: Path, shape: tuple, affine: np.ndarray) -> None:
    """``inference.json`` on a random scan of ``shape`` and ``affine``: the label map comes back on that grid."""
    from conftest import run_workflow

    scans = tmp_path / "scans"
    (scans / "imagesTs").mkdir(parents=True)
    image = np.random.RandomState(5).rand(*shape).astype(np.float32)
    nib.save(nib.Nifti1Image(image, affine), scans / "imagesTs" / "odd.nii.gz")
    out = tmp_path / "out"
    run_workflow(bundle, ["inference.json"], "infer", dataset_dir=str(scans), output_dir=str(out))
    pred = nib.load(out / "odd_seg.nii.gz")
    assert pred.shape == shape
    np.testing.assert_allclose(pred.affine, affine, atol=1e-4)
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2}


def test_bundle_plans_trains_and_infers_on_another_grid(bundle3d, tmp_path):
    """``run training`` without a plan beside the data makes one, trains with it and records it; inference on a
    scan at another spacing and orientation returns labels on that scan's own grid; fixed values still override."""
    from monai.bundle import ConfigParser

    from conftest import run_workflow
    from monai_resunet.data import make_demo_dataset

    data = make_demo_dataset(tmp_path / "ds", num_train=3, num_test=1, size=(40, 40, 26), spacing=(1.0, 1.0, 3.0))
    run_workflow(bundle3d, ["train.json"], "train", dataset_dir=str(data), epochs=1, num_workers=0)
    plan = load_plan(data)
    assert plan["pixdim"][2] == pytest.approx(3.0, abs=0.01)  # 3× anisotropic: the thick axis is kept
    props = json.loads((bundle3d / "models" / "model_properties.json").read_text())
    for key in ("pixdim", "patch_size", "num_levels", "ct_target_range"):
        assert props[key] == plan.get(key, props[key]), key
    assert props["flip_axes"] == plan["mirror_axes"]  # training flips only where the labels allow them

    affine = np.array([[0.0, -0.7, 0.1, 20.0], [0.8, 0.0, 0.0, -5.5], [0.0, 0.05, 1.2, 30.25], [0, 0, 0, 1]])
    infer_on_another_grid(bundle3d, tmp_path, (37, 29, 23), affine)

    def parsed(**overrides):
        parser = ConfigParser()
        parser.read_config(str(bundle3d / "configs" / "train.json"))
        parser.update({"dataset_dir": str(data), **overrides})
        return {k: parser.get_parsed_content(k) for k in ("pixdim", "patch_size", "batch_size")}

    assert parsed()["pixdim"] == plan["pixdim"]
    assert parsed(use_plan=False) == {"pixdim": [1.0, 1.0, 1.0], "patch_size": [96, 96, 96], "batch_size": 2}
    assert parsed(pixdim=[1.5, 1.5, 1.5])["pixdim"] == [1.5, 1.5, 1.5]


def test_slice_plan_keeps_the_slices_maps_mirroring_and_sizes_a_2d_patch():
    plan = {
        "pixdim": [0.8, 0.8, 4.0], "mirror_axes": [0, 2], "ct_window": [-400.0, 90.0], "ct_target_range": [-4.8, 0.9],
        "reasons": {"mirror_axes": {"0": "mirrored: why", "1": "not mirrored: why", "2": "mirrored: why"}},
        "statistics": {"median_resampled_shape": [300.0, 250.0, 40.0], "memory_budget_bytes": 2**30},
    }  # fmt: skip
    axial = slice_plan(plan, slice_axis=2, network=SMALL_NET)
    assert axial["pixdim"] == [0.8, 0.8, -1.0]  # in plane planned, slices at their own spacing
    assert axial["mirror_axes"] == [0]  # 2D axes (volume x, y): y is not mirrored
    assert axial["ct_window"] == [-400.0, 90.0] and axial["ct_target_range"] == [-4.8, 0.9]
    assert axial["num_levels"] == 3 and axial["patch_size"] == [304, 256]  # median shape up to the divisor 8
    assert "volume axis 1: not mirrored" in axial["reasons"]["mirror_axes"]["1"]
    coronal = slice_plan(plan, slice_axis=1, network=SMALL_NET)
    assert coronal["pixdim"] == [0.8, -1.0, 4.0] and coronal["mirror_axes"] == [0, 1]  # volume axes x and z
    small = slice_plan(plan, slice_axis=2, network=SMALL_NET, memory_gib=2e-3)  # 2 MiB for 2 slices
    assert all(p % 8 == 0 for p in small["patch_size"]) and np.prod(small["patch_size"]) < np.prod([304, 256])
    step = slice_plan(plan, slice_axis=2, network=SMALL_NET, memory_gib=2e-3, slices_per_step=8)  # for 8 slices
    assert all(p % 8 == 0 for p in step["patch_size"]) and np.prod(step["patch_size"]) < np.prod(small["patch_size"])
    assert slice_plan({}, slice_axis=2) == {}  # no plan: the configs keep their fixed values
    levels = slice_plan({**plan, "statistics": {"median_resampled_shape": [30.0, 40.0, 9.0]}}, 2)
    assert levels["num_levels"] == 3 and levels["patch_size"] == [32, 40]  # 5 levels would pad 30 px to 128


def test_2d_bundle_plans_trains_and_infers_on_another_grid(bundle2d, tmp_path):
    """The 2D bundle reads the data set's plan (in plane: spacing, patch, levels, mirroring), records it for
    inference, and returns labels on another scan's own grid; ``use_plan=False`` keeps the fixed recipe."""
    from monai.bundle import ConfigParser

    from conftest import run_workflow
    from monai_resunet.data import make_demo_dataset

    data = make_demo_dataset(tmp_path / "ds", num_train=3, num_test=1, size=(40, 36, 26), spacing=(1.2, 1.2, 3.0))
    run_workflow(bundle2d, ["train.json"], "train", dataset_dir=str(data), epochs=1, num_workers=0, num_samples=2)
    expected = slice_plan(load_plan(data), slice_axis=2, num_classes=3)
    props = json.loads((bundle2d / "models" / "model_properties.json").read_text())
    assert props["pixdim"] == expected["pixdim"] and props["pixdim"][2] == -1.0
    assert props["patch_size"] == expected["patch_size"] and props["num_levels"] == expected["num_levels"] < 5
    assert props["flip_axes"] == expected["mirror_axes"]

    affine = np.array([[0.0, -0.9, 0.0, 12.0], [1.1, 0.0, 0.0, -3.5], [0.0, 0.0, 2.5, 7.0], [0, 0, 0, 1]])
    infer_on_another_grid(bundle2d, tmp_path, (33, 27, 9), affine)

    parser = ConfigParser()
    parser.read_config(str(bundle2d / "configs" / "train.json"))
    parser.update({"dataset_dir": str(data), "use_plan": False})
    fixed = {k: parser.get_parsed_content(k) for k in ("pixdim", "patch_size", "flip_axes", "num_levels")}
    assert fixed == {"pixdim": [1.0, 1.0, -1.0], "patch_size": [128, 128], "flip_axes": [0, 1], "num_levels": 5}
