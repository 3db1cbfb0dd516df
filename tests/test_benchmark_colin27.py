"""Tests of the Colin27 benchmark pipeline: ``pipelines/fetch_colin27.py`` (conversion into an MSD dataset),
``pipelines/benchmarks/colin27.py`` (time-budgeted training, held-out scores, reports) and ``colin27_seeds.py``.

The conversion and report tests use a small synthetic "AAL" volume and always run. The real-data tests are marked
``realdata`` (``.ci/run`` runs them after ``python pipelines/fetch_colin27.py``) and skip when the cache is absent:
nothing is downloaded here.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # pipelines/ is run from the repository root: python -m pipelines.benchmarks.colin27
    sys.path.insert(0, str(REPO))

from pipelines import fetch_colin27 as fetch  # noqa: E402
from pipelines.benchmarks import colin27 as bench  # noqa: E402
from pipelines.benchmarks import colin27_seeds as summarise  # noqa: E402
from pipelines.benchmarks.common import machine_info  # noqa: E402

COLIN_FETCHED = fetch.is_fetched()
needs_colin27 = pytest.mark.skipif(
    not COLIN_FETCHED,
    reason=f"Colin27 not in the cache ({fetch.templates_dir()}): run python pipelines/fetch_colin27.py "
    "(the tests never download)",
)


# --------------------------------------------------------------------------------- synthetic conversion

SHAPE = (41, 30, 24)  # world x = i - 20: the midline (x = 0) is voxel 20
# (AAL code, x range, y range, z range), half-open; right-hemisphere boxes are NOT mirror images of the left ones
BOXES = [
    (71, (10, 15), (5, 10), (5, 10)),  # caudate L
    (72, (27, 32), (12, 17), (8, 13)),  # caudate R → mirrored x 9..13
    (37, (3, 6), (20, 24), (3, 6)),  # hippocampus L
    (38, (34, 37), (2, 5), (15, 18)),  # hippocampus R → mirrored x 4..6
    (77, (16, 21), (14, 18), (10, 14)),  # thalamus L, touching the midline plane (x = 20)
    (78, (20, 24), (18, 22), (10, 14)),  # thalamus R, from the midline plane
    (5, (5, 30), (0, 30), (0, 24)),  # a cortical region elsewhere: not one of ours
]


def fake_volumes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    aal = np.zeros(SHAPE, dtype=np.uint8)
    aal[5:30] = 5
    for code, (x0, x1), (y0, y1), (z0, z1) in BOXES[:-1]:
        aal[x0:x1, y0:y1, z0:z1] = code
    # image intensity encodes the source voxel: 100 + x, plus y and z in the decimals, to follow the mirroring
    i, j, k = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    image = (100 + i + j / 100 + k / 10000).astype(np.float32)
    affine = np.array([[1.0, 0, 0, -20], [0, 1.0, 0, -15], [0, 0, 1.0, -10], [0, 0, 0, 1]])
    return image, aal, affine


def write_templates(folder: Path, image: np.ndarray, aal: np.ndarray, affine: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image, affine), str(folder / "ch2bet.nii.gz"))
    nib.save(nib.Nifti1Image(aal, affine), str(folder / "aal.nii.gz"))
    return folder


def world_x(affine: np.ndarray, nx: int) -> np.ndarray:
    return affine[0, 0] * np.arange(nx) + affine[0, 3]


def test_midline_and_box_on_synthetic_atlas():
    image, aal, affine = fake_volumes()
    assert fetch.midline_index(affine) == 20.0
    half = affine.copy()
    half[0, 3] = -19.5
    assert fetch.midline_index(half) == 19.5  # half-way between two voxels is fine too
    bad = affine.copy()
    bad[0, 3] = -19.3
    with pytest.raises(ValueError, match="neither a voxel centre"):
        fetch.midline_index(bad)
    oblique = affine.copy()
    oblique[0, 1] = 0.2
    with pytest.raises(ValueError, match="world x axis"):
        fetch.midline_index(oblique)
    flipped = affine.copy()
    flipped[0, 0] = -1
    with pytest.raises(ValueError, match="RAS"):
        fetch.midline_index(flipped)

    (x0, x1), (y0, y1), (z0, z1) = fetch.crop_box(aal, 20.0, margin=2)
    # x: lowest structure voxel is the hippocampus L at 3 (its mirrored R twin starts at 40 - 36 = 4) → 1;
    # ends just below the midline; y and z: union of both sides ± 2, clipped
    assert (x0, x1) == (1, 20)
    assert (y0, y1) == (0, 26)
    assert (z0, z1) == (1, 20)


def test_split_hemispheres_mirrors_the_right_side():
    image, aal, affine = fake_volumes()
    parts = fetch.split_hemispheres(image, aal, affine, margin=2)
    (x0, x1), (y0, y1), (z0, z1) = parts["box"]
    shape = (x1 - x0, y1 - y0, z1 - z0)
    for key in ("train_image", "train_label", "test_image", "test_label"):
        assert parts[key].shape == shape, key
    # training side: the left structures in place, nothing of the right
    np.testing.assert_array_equal(parts["train_label"], fetch.relabel(aal, "left")[x0:x1, y0:y1, z0:z1])
    # held-out side: voxel k comes from source x = 2 * 20 - (x0 + k)
    for k in range(shape[0]):
        src = 40 - (x0 + k)
        np.testing.assert_array_equal(parts["test_image"][k], image[src, y0:y1, z0:z1])
        np.testing.assert_array_equal(parts["test_label"][k], fetch.relabel(aal, "right")[src, y0:y1, z0:z1])
    caudate = np.argwhere(parts["test_label"] == 1) + [x0, y0, z0]
    assert caudate[:, 0].min() == 40 - 31 and caudate[:, 0].max() == 40 - 27  # R caudate x 27..31 mirrored
    assert caudate[:, 1].min() == 12  # and it kept its own y, not the left caudate's
    # the crop's affine: the source affine moved to the box; every voxel is left of the midline
    np.testing.assert_allclose(parts["affine"][:3, 3], [x0 - 20, y0 - 15, z0 - 10])
    assert world_x(parts["affine"], shape[0]).max() < 0
    # the thalamus voxels on the midline plane belong to neither image, and are counted
    assert parts["lost_voxels"]["thalamus"] == {"left": 16, "right": 16}
    assert parts["lost_voxels"]["caudate"] == {"left": 0, "right": 0}


def test_convert_writes_an_msd_dataset_the_bundle_reads(tmp_path):
    from monai.transforms import LoadImage

    from monai_resunet.data import msd_class_names, msd_datalist, msd_modality

    image, aal, affine = fake_volumes()
    templates = write_templates(tmp_path / "templates", image, aal, affine)
    out = tmp_path / "msd"
    meta = fetch.convert(templates, out, margin=2)
    assert msd_modality(out) == "MR"
    assert msd_class_names(out) == list(fetch.CLASS_NAMES)
    train = msd_datalist(out, "training")
    val = msd_datalist(out, "validation")
    assert train == val and len(train) == 1 and train[0]["image"].endswith("imagesTr/colin27_left.nii.gz")
    assert meta["test"] == ["./imagesTs/colin27_right_mirrored.nii.gz"]
    assert meta["test_labels"] == ["./labelsTs/colin27_right_mirrored.nii.gz"]
    assert fetch.is_converted(out)

    loader = LoadImage(image_only=True)
    images = {
        "train": loader(train[0]["image"]),
        "train_label": loader(train[0]["label"]),
        "test": loader(str(out / meta["test"][0])),
        "test_label": loader(str(out / meta["test_labels"][0])),
    }
    parts = fetch.split_hemispheres(image, aal, affine, margin=2)
    for name, img in images.items():
        np.testing.assert_allclose(img.affine.numpy(), parts["affine"], atol=1e-5, err_msg=name)
        assert tuple(img.shape) == parts["train_image"].shape
    np.testing.assert_array_equal(images["test_label"].numpy(), parts["test_label"])
    np.testing.assert_allclose(images["test"].numpy(), parts["test_image"], rtol=1e-6)

    # a second call finds the dataset complete and leaves it alone
    stamp = (out / "dataset.json").stat().st_mtime_ns
    assert fetch.convert(templates, out, margin=2) == meta
    assert (out / "dataset.json").stat().st_mtime_ns == stamp


def test_convert_the_other_way_round_trains_on_the_right_hemisphere(tmp_path):
    """train_side="right" swaps the roles on the same grid: the mirrored right hemisphere is trained on, the left
    one held out; converting the folder back to "left" leaves no file of the other split behind."""
    image, aal, affine = fake_volumes()
    templates = write_templates(tmp_path / "templates", image, aal, affine)
    out = tmp_path / "msd"
    meta = fetch.convert(templates, out, margin=2, train_side="right")
    assert meta["training"][0]["image"] == "./imagesTr/colin27_right_mirrored.nii.gz"
    assert meta["test_labels"] == ["./labelsTs/colin27_left.nii.gz"]
    assert fetch.train_side_of(out) == "right" and "Training: right hemisphere mirrored" in meta["description"]
    parts = fetch.split_hemispheres(image, aal, affine, margin=2)
    train = nib.load(str(out / meta["training"][0]["image"]))
    test_label = nib.load(str(out / meta["test_labels"][0]))
    np.testing.assert_allclose(np.asarray(train.dataobj), parts["test_image"], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(test_label.dataobj), parts["train_label"])
    np.testing.assert_allclose(train.affine, parts["affine"], atol=1e-5)
    assert meta["conversion"]["label_voxels"]["test"]["caudate"] == int((parts["train_label"] == 1).sum())

    back = fetch.convert(templates, out, margin=2)  # the other side: converted again, not reused
    assert fetch.train_side_of(out) == "left" and back["training"][0]["image"].endswith("colin27_left.nii.gz")
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/*.nii.gz")) == [
        "imagesTr/colin27_left.nii.gz", "imagesTs/colin27_right_mirrored.nii.gz",
        "labelsTr/colin27_left.nii.gz", "labelsTs/colin27_right_mirrored.nii.gz",
    ]  # fmt: skip
    assert fetch.default_dataset_dir(tmp_path, "right") != fetch.default_dataset_dir(tmp_path)
    with pytest.raises(ValueError, match="train_side"):
        fetch.case_names("both")


def test_convert_reorients_a_left_pointing_source(tmp_path):
    """The same atlas stored with x flipped (LAS) converts to the same dataset: the midline comes from the
    affine, after reorientation to RAS."""
    image, aal, affine = fake_volumes()
    flip = np.diag([-1.0, 1, 1, 1])
    flip[0, 3] = SHAPE[0] - 1
    las_affine = affine @ flip  # voxel i of the flipped array is voxel (40 - i) of the original
    ras = fetch.convert(write_templates(tmp_path / "ras", image, aal, affine), tmp_path / "a", margin=2)
    las = fetch.convert(write_templates(tmp_path / "las", image[::-1], aal[::-1], las_affine), tmp_path / "b", 2)
    assert ras["conversion"]["crop_box_xyz"] == las["conversion"]["crop_box_xyz"]
    for rel in (ras["training"][0]["label"], ras["test"][0], ras["test_labels"][0]):
        a, b = nib.load(str(tmp_path / "a" / rel)), nib.load(str(tmp_path / "b" / rel))
        np.testing.assert_allclose(a.affine, b.affine, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))


# ------------------------------------------------------------------------------------------- reports


def test_lr_schedule_and_reports(tmp_path):
    assert bench.lr_factor(0.0) == 0.0
    assert bench.lr_factor(bench.WARMUP_FRACTION) == pytest.approx(1.0)
    assert bench.lr_factor(1.0) == pytest.approx(0.0)
    assert bench.lr_factor(0.525) == pytest.approx(0.5)

    settings = bench.Settings(
        dataset_dir=str(tmp_path), budget_s=60, eval_every_s=30, patch_size=(64, 64, 64), patch_size_2d=(128, 128),
        pixdim=(1.0, 1.0, 1.0), threads=2, seed=0, quick=False,
    )  # fmt: skip
    dice = dict.fromkeys(bench.STRUCTURES, 0.9)
    hd = dict.fromkeys(bench.STRUCTURES, 2.0) | {"amygdala": None}
    rows = [
        {"network": "dynunet", "params": 123, "iterations": 10, "patches_per_iteration": 4, "train_s": 61.0,
         "s_per_iteration": 6.1, "mean_dice": 0.9, "dice": dice, "mean_hd95_mm": 2.0, "hd95_missing": 1,
         "hd95_mm": hd, "time_to_target_s": 30.5, "inference_s": 1.5, "peak_rss_mib": 900.0, "rss_rise_mib": 400.0,
         "curve": [{"train_s": 30.5, "mean_dice": 0.85}, {"train_s": 61.0, "mean_dice": 0.9}], "error": ""},
        {"network": "basicunet", "error": "RuntimeError: out of memory"},
    ]  # fmt: skip
    machine = machine_info(threads=2) | {"cpu": "Test CPU"}
    text = bench.write_reports(rows, machine, settings, tmp_path)
    assert "generalisation within one subject" in text and "Test CPU" in text and "1 min" in text
    assert "trained on the left hemisphere" in text
    swapped = bench.markdown(rows, machine, dataclasses.replace(settings, train_side="right"))
    assert "trained on the right hemisphere of the Colin27 T1 MRI (mirrored), scored on its left" in swapped
    header = next(line for line in text.splitlines() if line.startswith("| network | params"))
    assert [c.strip() for c in header.strip("|").split("|")] == list(bench.MD_COLUMNS)
    assert "| dynunet | 123 | 10 | 61 | 0.900 | 2.0* | 30 |" in text
    assert "RuntimeError: out of memory" in text
    with (tmp_path / "colin27_benchmark.csv").open() as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == bench.COLUMNS
        table = list(reader)
    assert table[0]["hd95_amygdala_mm"] == "" and float(table[0]["dice_caudate"]) == 0.9
    assert table[1]["error"] == "RuntimeError: out of memory"
    assert json.loads((tmp_path / "colin27_curves.json").read_text())["results"][0]["curve"][1]["mean_dice"] == 0.9
    assert (tmp_path / "colin27_benchmark.png").stat().st_size > 10_000


def test_two_voxel_periodicity_tells_checkerboards_from_smooth_maps():
    x, y = np.meshgrid(np.linspace(0, 3, 40), np.linspace(0, 2, 36), indexing="ij")
    smooth = np.sin(x) * np.cos(y)
    (ratio_x, nyq_x), (ratio_y, _) = bench.two_voxel_periodicity(smooth)
    assert 0.9 < ratio_x < 1.1 and 0.9 < ratio_y < 1.1 and nyq_x < 1e-3
    # nearest ×2 along x only: no step inside a block along x, the y axis untouched
    (ratio_x, _), (ratio_y, _) = bench.two_voxel_periodicity(np.repeat(smooth[::2], 2, axis=0))
    assert ratio_x == 0.0 and 0.9 < ratio_y < 1.1
    # a checkerboard on top: steps inside and across blocks differ, and the Nyquist share jumps
    board = smooth + 0.05 * np.repeat(np.tile([[1.0], [-1.0]], (10, 36)), 2, axis=0)[: smooth.shape[0]]
    (ratio_x, nyq_x), _ = bench.two_voxel_periodicity(board)
    assert not 0.8 < ratio_x < 1.25
    alternating = smooth + 0.05 * (-1.0) ** np.arange(40)[:, None]
    assert bench.two_voxel_periodicity(alternating)[0][1] > 100 * bench.two_voxel_periodicity(smooth)[0][1]


def test_overrides_reach_the_bundle_rows_and_the_report(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"conversion": {"train_side": "left"}}))  # no cache needed
    args = bench.parse_args(
        ["--override", 'network_def#full_res="conv"', "--override", "learning_rate=2e-3", "--out", str(tmp_path),
         "--dataset-dir", str(tmp_path)]
    )  # fmt: skip
    assert args.override == [("network_def#full_res", "conv"), ("learning_rate", 0.002)]
    child = bench._child_command("resunet3d-bundle", args, tmp_path / "r.json")
    assert child[1:3] == ["-m", "pipelines.benchmarks.colin27"]
    assert bench.parse_args(child[3:]).override == args.override  # forwarded to the per-network process
    parser = bench._bundle_parser(bench.BUNDLE3D, str(tmp_path), dict(args.override))
    assert parser["network_def"]["full_res"] == "conv" and parser.get_parsed_content("learning_rate") == 0.002
    with pytest.raises(KeyError, match="no such entry"):
        bench._bundle_parser(bench.BUNDLE3D, str(tmp_path), {"network_dfe#full_res": "conv"})
    with pytest.raises(SystemExit):
        bench.parse_args(["--override", "learning_rate=fast"])  # not JSON
    settings = bench.settings_from_args(args)
    text = bench.markdown([], machine_info(threads=2), settings)
    assert 'Not the bundle default**: the ResUNet rows ran with `network_def#full_res="conv"`' in text


# ----------------------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def colin27_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("colin27") / fetch.DATASET_NAME
    fetch.convert(fetch.templates_dir(), out)
    return out


@pytest.mark.realdata
@needs_colin27
def test_colin27_conversion(colin27_dataset):
    meta = json.loads((colin27_dataset / "dataset.json").read_text())
    conv = meta["conversion"]
    src_aal = np.asarray(nib.load(str(fetch.templates_dir() / "aal.nii.gz")).dataobj).astype(np.int32)
    src_affine = nib.load(str(fetch.templates_dir() / "aal.nii.gz")).affine
    assert src_aal.shape == (181, 217, 181) and conv["midline_voxel_x"] == 90.0
    (x0, x1), (y0, y1), (z0, z1) = conv["crop_box_xyz"]
    assert x1 == 90  # the training half ends just below the midline

    train_img = nib.load(str(colin27_dataset / meta["training"][0]["image"]))
    train_lab = np.asarray(nib.load(str(colin27_dataset / meta["training"][0]["label"])).dataobj)
    test_img = nib.load(str(colin27_dataset / meta["test"][0]))
    test_lab = np.asarray(nib.load(str(colin27_dataset / meta["test_labels"][0])).dataobj)
    shape = (x1 - x0, y1 - y0, z1 - z0)
    assert train_img.shape == test_img.shape == train_lab.shape == test_lab.shape == shape
    np.testing.assert_allclose(train_img.affine, test_img.affine)
    np.testing.assert_allclose(train_img.affine[:3, 3], src_affine[:3, :3] @ [x0, y0, z0] + src_affine[:3, 3])
    assert world_x(train_img.affine, shape[0]).max() < 0  # the left image is left of the midline (MNI x < 0)

    # labels: all six structures, left codes in the training image, right codes (mirrored) in the held-out one
    assert set(np.unique(train_lab)) == set(np.unique(test_lab)) == set(range(7))
    np.testing.assert_array_equal(train_lab, fetch.relabel(src_aal[x0:x1, y0:y1, z0:z1], "left"))
    right = src_aal[180 - (x1 - 1) : 180 - x0 + 1, y0:y1, z0:z1][::-1]
    np.testing.assert_array_equal(test_lab, fetch.relabel(right, "right"))
    for value, (_, left_code, right_code) in enumerate(fetch.STRUCTURES, start=1):
        lost = conv["structure_voxels_left_out"][fetch.CLASS_NAMES[value]]
        assert (train_lab == value).sum() == (src_aal == left_code).sum() - lost["left"]
        assert (test_lab == value).sum() == (src_aal == right_code).sum() - lost["right"]
        assert lost["left"] + lost["right"] <= 50  # only the thalamus touches the midline plane
    # the images are the skull-stripped T1, non-empty in the structures
    train_data = np.asarray(train_img.dataobj)
    assert train_data.dtype == np.uint8 and (train_data[train_lab > 0] > 0).all()


@pytest.mark.realdata
@needs_colin27
@pytest.mark.timeout(300)
def test_colin27_quick_benchmark(colin27_dataset, tmp_path):
    out = tmp_path / "results"
    start = time.perf_counter()
    code = bench.main(["--quick", "--dataset-dir", str(colin27_dataset), "--out", str(out)])
    elapsed = time.perf_counter() - start
    assert code == 0
    with (out / "colin27_benchmark.csv").open() as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == bench.COLUMNS
        table = list(reader)
    assert [r["network"] for r in table] == list(bench.QUICK_NETWORKS)
    for row in table:
        assert row["error"] == "", row["error"]
        assert int(row["params"]) > 0 and int(row["iterations"]) >= 1
        assert float(row["train_s"]) >= 8.0  # the quick budget, overrun by at most an iteration
        assert 0.0 <= float(row["mean_dice"]) <= 1.0
        assert float(row["inference_s"]) > 0 and float(row["peak_rss_mib"]) > 100
    text = (out / "colin27_benchmark.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| network | params"))
    assert [c.strip() for c in header.strip("|").split("|")] == list(bench.MD_COLUMNS)
    assert "Quick mode" in text and "generalisation within one subject" in text
    assert "No-learning reference: the training label copied onto the held-out image scores mean Dice 0.79" in text
    curves = json.loads((out / "colin27_curves.json").read_text())
    assert all(len(r["curve"]) >= 1 for r in curves["results"])
    assert (out / "colin27_benchmark.png").is_file()
    for name in bench.QUICK_NETWORKS:
        pred = nib.load(str(out / "predictions" / f"{name}.nii.gz"))
        assert pred.shape == nib.load(str(colin27_dataset / "labelsTs" / "colin27_right_mirrored.nii.gz")).shape
    # the saved weights scored again, without and with test-time mirroring: "none" reproduces the final Dice
    quick = ["--quick", "--dataset-dir", str(colin27_dataset), "--out", str(out), "--networks", *bench.QUICK_NETWORKS]
    assert bench.main([*quick, "--mirroring-report"]) == 0
    report = (out / "colin27_mirroring.md").read_text().splitlines()
    for row in table:
        cells = next(line for line in report if line.startswith(f"| {row['network']} |")).strip("|").split("|")
        dice = [float(c.split("(")[0]) for c in cells[1::2]]
        assert len(dice) == len(bench.MIRRORINGS) and all(0.0 <= d <= 1.0 for d in dice)
        assert abs(dice[0] - float(row["mean_dice"])) < 1e-3
    assert bench.main([*quick, "--checkerboard-report"]) == 0
    report = (out / "colin27_checkerboard.md").read_text().splitlines()
    for row in table:
        cells = next(line for line in report if line.startswith(f"| {row['network']} |")).strip("|").split("|")
        ratios, shares = ([float(v) for v in c.split(",")] for c in cells[1:3])
        assert len(ratios) == len(shares) == 3 and all(r >= 0 for r in ratios) and all(0 <= v <= 100 for v in shares)
    print(f"quick benchmark: {elapsed:.0f} s")  # ~30 s on 2 shared cores; designed to stay under a minute


def _write_run(
    folder: Path, seed: int, rows: list[tuple[str, float]], overrides: dict | None = None, **extra_settings
) -> Path:
    results = [
        {"network": name, "mean_dice": dice, "dice": {"caudate": dice + 0.01, "amygdala": dice - 0.01}, "error": ""}
        for name, dice in rows
    ]
    folder.mkdir(parents=True)
    settings = {"seed": seed, "overrides": overrides or {}, **extra_settings}
    (folder / "colin27_curves.json").write_text(json.dumps({"settings": settings, "results": results}))
    return folder


def test_seed_summary_pools_runs_per_recipe(tmp_path, capsys):
    """Runs of one recipe over seeds are pooled (mean, sample SD); an override makes another recipe, unless an
    empty tag says it is the default since; a tag names every row of its run; a failed row is left out; bad input
    is named."""
    a = _write_run(tmp_path / "s123", 123, [("resunet3d-bundle", 0.84), ("monai-unet-ref", 0.85)])
    b = _write_run(tmp_path / "s7", 7, [("resunet3d-bundle", 0.86), ("monai-unet-ref", 0.83)])
    tried = _write_run(tmp_path / "lr", 7, [("resunet3d-bundle", 0.90)], {"learning_rate": 0.002})
    old = _write_run(tmp_path / "old", 42, [("resunet3d-bundle", 0.85), ("monai-unet-ref", 0.80)], {"x": 1})
    failed = json.loads((b / "colin27_curves.json").read_text())
    failed["results"].append({"network": "dynunet", "mean_dice": None, "dice": {}, "error": "Killed"})
    (b / "colin27_curves.json").write_text(json.dumps(failed))

    peers = _write_run(tmp_path / "peers", 7, [("monai-unet-ref", 0.88)])  # a recipe changed in the config
    right = _write_run(tmp_path / "right", 7, [("resunet3d-bundle", 0.70)], train_side="right")  # the other split
    runs = [a, b, tried, f"{old}=", f"{peers}=lr 2e-3", f"{right}="]
    entries = {e["recipe"]: e for e in summarise.summarise(summarise.load_runs(runs))}
    assert set(entries) == {
        "resunet3d-bundle", "monai-unet-ref", "resunet3d-bundle (learning_rate=0.002)", "monai-unet-ref (lr 2e-3)",
        "resunet3d-bundle [right → other hemisphere]",
    }  # fmt: skip
    res = entries["resunet3d-bundle"]
    assert res["runs"] == [(123, 0.84), (7, 0.86), (42, 0.85)]
    assert res["mean"] == pytest.approx(0.85) and res["sd"] == pytest.approx(0.01)
    assert res["structures"]["amygdala"] == pytest.approx(0.84)
    assert entries["monai-unet-ref"]["runs"] == [(123, 0.85), (7, 0.83), (42, 0.80)]
    assert entries["resunet3d-bundle (learning_rate=0.002)"]["sd"] is None
    assert entries["monai-unet-ref (lr 2e-3)"]["runs"] == [(7, 0.88)]

    out = tmp_path / "table" / "seeds.md"
    assert summarise.main([str(a), str(b), "--out", str(out)]) == 0
    table = out.read_text()
    assert table == capsys.readouterr().out
    assert "| resunet3d-bundle | 0.840 (123), 0.860 (7) | 2 | 0.850 | 0.014 |" in table
    assert summarise.main([str(tmp_path / "missing")]) == 2
    assert "missing: no colin27_curves.json" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{")
    assert summarise.main([str(tmp_path / "broken.json")]) == 2
    assert "broken.json: not a pipelines.benchmarks.colin27 result" in capsys.readouterr().err
