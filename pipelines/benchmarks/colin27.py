#!/usr/bin/env python
"""Real-data benchmark: the 3D bundle's default ResUNet against MONAI's segmentation networks, each trained
for the same CPU wall-clock budget on the Colin27 deep grey structures, scored on a held-out image.

It answers "on real anatomy and a fixed CPU time budget, how good does the bundle's default network get, and
how fast, next to the networks MONAI users already run?". The data (``pipelines/fetch_colin27.py``): the left
hemisphere of the Colin27 T1 MRI is the training image, the right hemisphere mirrored in x is the held-out
image, six AAL structures (caudate, putamen, pallidum, thalamus, hippocampus, amygdala). One brain: this
measures generalisation *within one subject* (left → right hemisphere), not across subjects or scanners.

    python pipelines/fetch_colin27.py                          # once: data into ~/.cache/monai_resunet/colin27
    python -m pipelines.benchmarks.colin27                     # 6 min per network → benchmarks/results/colin27/
    python -m pipelines.benchmarks.colin27 --minutes 20 --include-2d
    python -m pipelines.benchmarks.colin27 --networks resunet3d-bundle dynunet --eval-every 60
    python -m pipelines.benchmarks.colin27 --quick     # smoke test: 2 networks, 8 s each → $TMPDIR

Networks (``out_channels`` = 7 everywhere; ``--networks`` picks, ``--list`` prints them):

* ``resunet3d-bundle``: ``network_def`` of ``bundles/resunet3d_segmentation/configs/train.json``, instantiated
  with ``monai.bundle.ConfigParser`` from the config itself, so the benchmark always measures the bundle's real
  default (features 16…128 behind a stride-2 stem, encoder blocks 1,2,2,2, instance norm, leaky ReLU, strided
  down-sampling, stride-2 transposed-conv (kernel 2) up-sampling, logits interpolated to full resolution);
* ``monai-unet-spleen``: ``UNet`` as in MONAI's spleen bundle: channels 16…256, strides 2,2,2,2,
  ``num_res_units=2``, batch norm;
* ``monai-unet-ref``: ``UNet`` channels 16…128, strides 2,2,2, ``num_res_units=2``, MONAI's default (instance)
  norm;
* ``segresnet``: ``SegResNet`` with ``init_filters=16`` (MONAI's BraTS tutorial width; the class default is 8),
  other arguments default (blocks down 1,2,2,4, up 1,1,1);
* ``dynunet``: ``DynUNet``, kernels [3]*5, strides [1,2,2,2,2], ``res_block=True``, default filters
  (32,64,128,256,320), no deep supervision;
* ``basicunet``: ``BasicUNet``, default features (32,32,64,128,256,32);
* ``resunet2d-bundle`` (with ``--include-2d``): ``network_def`` of ``bundles/resunet2d_segmentation``, trained on
  axial slices (its ``train#random_transforms`` at ``patch_size=(128, 128)``) and inferred slice by slice with
  ``monai.inferers.SliceInferer``, both with the 2D bundle's own recipe.

Protocol, the same for every network:

* data: the 3D bundle's own ``train#deterministic_transforms`` (RAS, 1 mm ``pixdim``, crop to the brain, MR
  z-score, pad to the patch) and ``train#random_transforms`` at the benchmark's patch size (class-balanced 64³
  patches, flips on every axis, rotation/scaling of 30 % of the patches, intensity scale/shift; the 2D bundle's
  for the 2D network), read from ``train.json`` with ``monai.bundle.ConfigParser``, cached with ``CacheDataset``
  and served by MONAI's ``DataLoader`` in the main process (``num_workers=0``, so sampling time is part of training
  time, as it would be on a 2-core machine);
* recipe from the 3D bundle's config (the 2D bundle's for the 2D network): ``learning_rate`` (1e-3),
  ``batch_size`` (2) images × ``num_samples`` (1) patches each per iteration (the one training image is listed
  ``batch_size`` times), AdamW with the config's weight decay, the
  config's ``DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)``;
* execution: the bundle networks with their config's ``channels_last`` (off for the 3D bundle, whose network is
  faster contiguous), MONAI's networks channels-last (their faster layout here); float32 training for all (the
  recipe's ``cpu_bf16``);
* learning-rate schedule measured in *time*: the bundle's ``WarmupCosineSchedule`` shape (linear warm-up over
  the first 5 %, then cosine to 0) evaluated at ``training seconds / budget`` at the start of each iteration,
  so every network gets a complete schedule whatever its speed;
* budget: training stops at the first iteration that ends past ``--minutes`` of training time (so it can
  overrun by less than one iteration; the table gives the exact time). Only the training loop counts:
  evaluation is paused out of the clock;
* every ``--eval-every`` training seconds (and at the end) the held-out image is segmented with
  ``SlidingWindowInferer(roi_size=patch, overlap=0.5, mode="gaussian")`` (``SliceInferer`` for 2D), the
  prediction is taken back to the image's own grid with ``Invertd`` (as the bundle's inference does), and the
  Dice per structure is recorded: the curve. The reported scores are those of the *final* network (no
  selection on the held-out image); "time to Dice ≥ 0.84" is the first evaluation at or above it, so its
  resolution is the evaluation interval;
* HD95: ``monai.metrics.compute_hausdorff_distance(percentile=95)`` in mm, with the label's voxel spacing; a
  structure the network never predicts has no HD95 (the mean is then over the others, marked ``*``);
* inference time: the inferer call on the held-out image (pre-processing and inversion excluded), once;
* peak memory: each network runs in its own process (this script re-invoked with ``--only NAME``), and the
  table gives that process's peak resident set (``ru_maxrss``) and its rise over the value after the imports
  and the data loading;
* ``monai.utils.set_determinism(seed)`` before each network (``seed`` from the bundle config, 123) and
  ``torch.set_num_threads(os.cpu_count())``. Training for a wall-clock budget is not bit-reproducible: the
  number of iterations depends on the machine's load.

Outputs in ``--out`` (default ``pipelines/benchmarks/results/colin27/``, ignored by git): ``colin27_benchmark.md``
and ``.csv`` (the tables), ``colin27_curves.json`` (machine, settings, every row and its Dice curve),
``colin27_benchmark.png`` (Dice over training time for all networks; prediction vs truth on axial slices of the
held-out image for the ResUNet), ``predictions/<network>.nii.gz`` (final label maps on the held-out image's grid) and
``predictions/<network>.pt`` (final weights, a plain ``state_dict``: ``python -m
pipelines.benchmarks.bundle_2d_vs_3d --colin27`` runs them through the bundles' own inference).

``--override KEY=JSON`` changes a bundle config entry for the ResUNet rows only (``network_def#full_res='"conv"'``,
``learning_rate=2e-3``, or a transform: ``train#random_transforms#5#prob=0.5``), so a recipe can be measured against
the same peers before it becomes the default; the report's header lists the overrides. To give the peers a changed
recipe too, change the config itself (they read theirs from the 3D bundle's ``train.json``). ``python -m
pipelines.benchmarks.colin27_seeds`` pools runs over seeds.

``--quick``: 8 s per network, two networks, 48³ patches on 2 mm resampled data (the bundle's network pads them to
64³ inside, which keeps 2 voxels per axis at its bottom level), evaluation every 4 s: a smoke test of the whole
pipeline (a minute or so), not a measurement; it writes to ``$TMPDIR/monai_resunet_colin27_quick`` unless ``--out``
is given.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipelines import fetch_colin27  # numpy only; data locations and class names
from pipelines.benchmarks.common import (
    REPO,
    RESULTS,
    machine_info,
    machine_line,
    maxrss_mib,
    module_command,
    run_module,
    write_json,
)
from pipelines.benchmarks.training import train_steps

DEFAULT_OUT = RESULTS / "colin27"  # a run folder: ignored by git (see .gitignore)
QUICK_OUT = Path(tempfile.gettempdir()) / "monai_resunet_colin27_quick"  # smoke tests stay out of the repository
BUNDLE3D = REPO / "bundles" / "resunet3d_segmentation" / "configs" / "train.json"
BUNDLE2D = REPO / "bundles" / "resunet2d_segmentation" / "configs" / "train.json"
BUNDLE_CONFIGS: dict[str, Path] = {"resunet3d-bundle": BUNDLE3D, "resunet2d-bundle": BUNDLE2D}  # the ResUNet rows
STRUCTURES: tuple[str, ...] = fetch_colin27.CLASS_NAMES[1:]
NUM_CLASSES = len(fetch_colin27.CLASS_NAMES)
# how the reports name the split, by the training hemisphere recorded in dataset.json
HELD_OUT_SENTENCE = {
    "left": "trained on the left hemisphere of the Colin27 T1 MRI, scored on its right hemisphere mirrored",
    "right": "trained on the right hemisphere of the Colin27 T1 MRI (mirrored), scored on its left hemisphere",
}
FIGURE_SPLIT = {"left": "left hemisphere → mirrored right hemisphere", "right": "mirrored right → left hemisphere"}
TARGET_DICE = 0.84
WARMUP_FRACTION = 0.05  # the bundle's WarmupCosineSchedule: warmup_steps = epochs // 20

NETWORKS: dict[str, str] = {
    "resunet3d-bundle": "ResUNet, 3D bundle default (train.json network_def)",
    "monai-unet-spleen": "MONAI UNet, spleen bundle: 16..256, 4 strides, 2 res units, batch norm",
    "monai-unet-ref": "MONAI UNet reference: 16..128, 3 strides, 2 res units, instance norm",
    "segresnet": "MONAI SegResNet, init_filters=16",
    "dynunet": "MONAI DynUNet, res_block, kernels [3]*5, strides [1,2,2,2,2]",
    "basicunet": "MONAI BasicUNet, default features (32,32,64,128,256,32)",
    "resunet2d-bundle": "ResUNet, 2D bundle default, axial slices + SliceInferer",
}
DEFAULT_NETWORKS: tuple[str, ...] = tuple(n for n in NETWORKS if n != "resunet2d-bundle")
QUICK_NETWORKS: tuple[str, ...] = ("resunet3d-bundle", "monai-unet-spleen")
OVERLAY_NETWORK = "resunet3d-bundle"

# CSV columns (the Markdown tables show a selection, with the per-structure Dice/HD95 in a second table)
COLUMNS: tuple[str, ...] = (
    "network",
    "params",
    "iterations",
    "patches_per_iteration",
    "train_s",
    "s_per_iteration",
    "mean_dice",
    *(f"dice_{s}" for s in STRUCTURES),
    "mean_hd95_mm",
    *(f"hd95_{s}_mm" for s in STRUCTURES),
    "time_to_target_s",
    "inference_s",
    "peak_rss_mib",
    "rss_rise_mib",
    "error",
)
MD_COLUMNS: tuple[str, ...] = (
    "network",
    "params",
    "iterations",
    "train s",
    "mean Dice",
    "mean HD95 mm",
    f"train s to Dice ≥ {TARGET_DICE}",
    "inference s",
    "peak RSS MiB",
    "RSS rise MiB",
)


@dataclass
class Settings:
    """What every network is trained and evaluated with (forwarded to the per-network processes)."""

    dataset_dir: str
    budget_s: float
    eval_every_s: float
    patch_size: tuple[int, int, int]
    patch_size_2d: tuple[int, int]
    pixdim: tuple[float, float, float]
    threads: int
    seed: int
    quick: bool
    target_dice: float = TARGET_DICE
    modality: str = "MR"
    networks: list[str] = field(default_factory=list)
    clock: str = "wall"
    overrides: dict[str, Any] = field(default_factory=dict)  # bundle config entries changed (ResUNet rows only)
    train_side: str = "left"  # the training hemisphere (dataset.json's conversion), for the reports' wording


# --------------------------------------------------------------------------------------------- networks


def _bundle_parser(config: Path, dataset_dir: str, overrides: dict[str, Any] | None = None):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config))
    parser["bundle_root"] = str(config.parent.parent)
    parser["dataset_dir"] = dataset_dir  # so @num_classes comes from dataset.json's labels, as in training
    for key, value in (overrides or {}).items():  # --override, as `monai.bundle run --network_def#... X` does
        parent = key.rpartition("#")[0]
        if key not in parser and (not parent or parent not in parser):  # a new argument needs an existing parent
            raise KeyError(f"--override {key}: {config.name} has no such entry.")
        parser[key] = value
    return parser


def bundle_recipe(config: Path, dataset_dir: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The bundle's default recipe read from its ``train.json`` (with ``overrides``): learning rate, batch size,
    samples per image, weight decay, seed, validation ``sw_batch_size`` and the instantiated loss."""
    parser = _bundle_parser(config, dataset_dir, overrides)
    return {
        "learning_rate": float(parser.get_parsed_content("learning_rate")),
        "batch_size": int(parser.get_parsed_content("batch_size")),
        "num_samples": int(parser.get_parsed_content("num_samples")),
        "weight_decay": float(parser.get("optimizer#weight_decay", 0.0)),
        "seed": int(parser.get_parsed_content("seed")),
        "sw_batch_size": int(parser.get_parsed_content("validate#inferer#sw_batch_size")),
        "loss": parser.get_parsed_content("loss"),
        "channels_last": bool(parser.get("channels_last", False)),
        "cpu_bf16": bool(parser.get_parsed_content("cpu_bf16")) if "cpu_bf16" in parser else False,
    }


def bundle_transforms(
    is_2d: bool, settings: Settings, overrides: dict[str, Any] | None = None
) -> tuple[tuple[int, ...], list[Any], list[Any]]:
    """The training patch and the bundle's own ``train#deterministic_transforms`` and ``train#random_transforms``
    (with ``overrides``) at this benchmark's patch, spacing and modality, so the benchmark trains with the transforms
    the bundle trains with and ``--override`` reaches them too."""
    patch = tuple(settings.patch_size_2d) if is_2d else tuple(settings.patch_size)
    benchmark = {"patch_size": list(patch), "pixdim": list(settings.pixdim), "modality": settings.modality}
    parser = _bundle_parser(BUNDLE2D if is_2d else BUNDLE3D, settings.dataset_dir, {**(overrides or {}), **benchmark})
    return (
        patch,
        parser.get_parsed_content("train#deterministic_transforms"),
        parser.get_parsed_content("train#random_transforms"),
    )


def build_network(name: str, dataset_dir: str, overrides: dict[str, Any] | None = None):
    """The network ``name`` (see :data:`NETWORKS`) with 1 input channel and 7 output channels; ``overrides``
    change the bundle networks' config entries."""
    from monai.networks.nets import BasicUNet, DynUNet, SegResNet, UNet

    if name in BUNDLE_CONFIGS:
        parser = _bundle_parser(BUNDLE_CONFIGS[name], dataset_dir, overrides)
        net = parser.get_parsed_content("network_def")
        if getattr(net, "out_channels", NUM_CLASSES) != NUM_CLASSES:
            raise RuntimeError(f"{name}: the bundle config gave {net.out_channels} output channels.")
        return net
    builders: dict[str, Callable[[], Any]] = {
        "monai-unet-spleen": lambda: UNet(
            3, 1, NUM_CLASSES, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2, norm="batch"
        ),
        "monai-unet-ref": lambda: UNet(
            3, 1, NUM_CLASSES, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2
        ),
        "segresnet": lambda: SegResNet(spatial_dims=3, init_filters=16, in_channels=1, out_channels=NUM_CLASSES),
        "dynunet": lambda: DynUNet(
            3,
            1,
            NUM_CLASSES,
            kernel_size=[3] * 5,
            strides=[1, 2, 2, 2, 2],
            upsample_kernel_size=[2, 2, 2, 2],
            res_block=True,
        ),
        "basicunet": lambda: BasicUNet(spatial_dims=3, in_channels=1, out_channels=NUM_CLASSES),
    }
    if name not in builders:
        raise ValueError(f"unknown network {name!r}; choose from {sorted(NETWORKS)}.")
    return builders[name]()


# ---------------------------------------------------------------------------------------- one network


def lr_factor(fraction: float, warmup: float = WARMUP_FRACTION) -> float:
    """``monai.optimizers.WarmupCosineSchedule``'s factor (linear warm-up, then half a cosine to 0) at
    ``fraction`` ∈ [0, 1] of the schedule."""
    if fraction < warmup:
        return fraction / warmup
    progress = min(1.0, (fraction - warmup) / max(1e-12, 1.0 - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


MIRRORINGS = {"none": (), "x": (0,), "x, y, z": (0, 1, 2)}  # window axes; the 2D network's window is (x, y)


def _saved_networks(settings: Settings, out: Path):
    """``(name, network, held_out)`` for every network of ``settings.networks`` whose final weights a run saved in
    ``out/predictions`` (eval mode, on the held-out image's pipeline); ``(name, None, path)`` where none were saved."""
    import torch

    torch.set_num_threads(settings.threads)
    held_outs: dict[tuple[bool, int, str], HeldOut] = {}  # pre-processed once per pipeline, not per network
    for name in settings.networks:
        weights = out / "predictions" / f"{name}.pt"
        if not weights.is_file():
            yield name, None, weights
            continue
        is_2d = name == "resunet2d-bundle"
        overrides = settings.overrides if name in BUNDLE_CONFIGS else {}  # as run_network
        recipe = bundle_recipe(BUNDLE_CONFIGS.get(name, BUNDLE3D), settings.dataset_dir, overrides)
        key = (is_2d, recipe["sw_batch_size"], json.dumps(overrides, sort_keys=True))
        if key not in held_outs:
            patch, preprocessing, _ = bundle_transforms(is_2d, settings, overrides)
            held_outs[key] = HeldOut(settings, is_2d, patch, preprocessing, recipe["sw_batch_size"])
        held_out = held_outs[key]
        network = build_network(name, settings.dataset_dir, overrides)
        network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        yield name, network.eval(), held_out


def mirroring_report(settings: Settings, out: Path) -> str:
    """The saved final weights of a run (``out/predictions/<network>.pt``) scored on the held-out image without
    and with test-time mirroring (``monai_resunet.inference.MirrorInferer``), every network alike; Markdown."""
    lines = [
        "# Colin27: test-time mirroring on the saved final weights",
        "",
        f"Weights: `{out / 'predictions'}` (each network's state after its {settings.budget_s:g} s of training). "
        "Mirroring = the logits of every combination of flips along the listed window axes, flipped back and "
        "averaged (nnU-Net's test-time augmentation); the 2D network's window is the axial slice, so its "
        "'x, y, z' row mirrors x and y. Held-out mean Dice (per structure in brackets) and inference seconds.",
        "",
        "| network | " + " | ".join(f"mirroring {m}: Dice | s" for m in MIRRORINGS) + " |",
        "| --- |" + " ---: | ---: |" * len(MIRRORINGS),
    ]
    for name, network, held_out in _saved_networks(settings, out):
        if network is None:
            lines.append(f"| {name} | no saved weights: {held_out} |")
            continue
        cells = []
        for axes in MIRRORINGS.values():
            ev = held_out.evaluate(network, final=False, mirror_axes=axes[:2] if held_out.is_2d else axes)
            per = ", ".join(f"{v:.3f}" for v in ev["dice"].values())
            cells += [f"{ev['mean_dice']:.4f} ({per})", f"{ev['inference_s']:.1f}"]
            print(f"  {name} mirroring {axes}: mean Dice {ev['mean_dice']:.4f}", file=sys.stderr, flush=True)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def two_voxel_periodicity(p: Any) -> list[tuple[float, float]]:
    """Per axis of the array ``p``: (mean |p[x+1] - p[x]| over pairs inside an aligned 2-voxel block (x even) /
    the same over pairs across blocks (x odd), the share of the variation along the axis at the Nyquist frequency).

    A checkerboard pattern of a stride-2 up-sampling shows as a ratio far from 1 and a larger Nyquist share; a
    smooth map has a ratio near 1, a map up-sampled ×2 by interpolation somewhat below 1 (neighbours in a block
    come from one coarse voxel), a map repeated ×2 (nearest) 0.
    """
    import numpy as np

    p = np.asarray(p, dtype=np.float64)
    result = []
    for axis in range(p.ndim):
        step = np.abs(np.diff(p, axis=axis))
        inside = np.take(step, range(0, step.shape[axis], 2), axis=axis).mean()
        across = np.take(step, range(1, step.shape[axis], 2), axis=axis).mean()
        power = np.abs(np.fft.rfft(p - p.mean(axis=axis, keepdims=True), axis=axis)) ** 2
        nyquist = np.take(power, [power.shape[axis] - 1], axis=axis).sum() / max(power.sum(), 1e-30)
        result.append((float(inside / across) if across > 0 else float("nan"), float(nyquist)))
    return result


def checkerboard_report(settings: Settings, out: Path) -> str:
    """Whether the saved final weights of a run produce a 2-voxel periodic pattern on the held-out image: the
    foreground probability (1 - softmax background) on the network's grid, per axis (:func:`two_voxel_periodicity`);
    Markdown. It answers "does this up-sampling leave checkerboard artefacts in real predictions?"."""
    import torch

    lines = [
        "# Colin27: checkerboard check on the saved final weights",
        "",
        f"Weights: `{out / 'predictions'}`. Map: foreground probability (1 - softmax background) of the held-out "
        "image on the network's grid (sliding window as in the benchmark; the windows start on even voxels, so "
        "2-voxel blocks line up across windows). Per axis x, y, z: mean |step| inside aligned 2-voxel blocks / "
        "across blocks (1 = no block structure; ×2 linear up-sampling alone gives somewhat less), and the share "
        "of the variation at the Nyquist frequency (%).",
        "",
        "| network | inside / across x, y, z | Nyquist share % x, y, z |",
        "| --- | --- | --- |",
    ]
    for name, network, held_out in _saved_networks(settings, out):
        if network is None:
            lines.append(f"| {name} | no saved weights: {held_out} | |")
            continue
        logits, _ = held_out.logits(network)
        foreground = 1.0 - torch.softmax(logits[0].float(), dim=0)[0]
        axes = two_voxel_periodicity(foreground.numpy())
        ratios = ", ".join(f"{r:.3f}" for r, _ in axes)
        shares = ", ".join(f"{100 * n:.3f}" for _, n in axes)
        print(f"  {name}: inside/across {ratios}; Nyquist % {shares}", file=sys.stderr, flush=True)
        lines.append(f"| {name} | {ratios} | {shares} |")
    return "\n".join(lines) + "\n"


class HeldOut:
    """The held-out image, pre-processed like the training data, its label, and how a network is scored on it:
    the inferer on the pre-processed image, softmax, ``Invertd`` back to the label's grid, arg-max, Dice (and HD95
    with ``final``)."""

    def __init__(
        self, settings: Settings, is_2d: bool, patch: Sequence[int], preprocessing: list[Any], sw_batch_size: int
    ) -> None:
        from monai.inferers import SliceInferer, SlidingWindowInferer
        from monai.networks.utils import one_hot
        from monai.transforms import Compose, Invertd, LoadImage

        from monai_resunet.data import read_dataset_json

        meta = read_dataset_json(settings.dataset_dir)
        self.is_2d = is_2d
        # the training data's own deterministic transforms (image and label keys; the label only rides along: the
        # crop follows the image, and the scores are taken on the label's own grid after Invertd)
        self.preprocessing = Compose(preprocessing)
        image, label = (str(Path(settings.dataset_dir) / meta[k][0]) for k in ("test", "test_labels"))
        self.test = self.preprocessing({"image": image, "label": label})
        self.label = LoadImage(image_only=True, ensure_channel_first=True)(label)
        self.spacing = [float(s) for s in self.label.pixdim[:3]]
        self.label_onehot = one_hot(self.label[None].long(), NUM_CLASSES)
        self.invert = Invertd(
            keys="pred", transform=self.preprocessing, orig_keys="image", nearest_interp=False, to_tensor=True
        )
        if is_2d:
            self.inferer = SliceInferer(
                spatial_dim=2, roi_size=patch, sw_batch_size=sw_batch_size, overlap=0.5, mode="gaussian",
                progress=False,
            )  # fmt: skip
        else:
            self.inferer = SlidingWindowInferer(
                roi_size=patch, sw_batch_size=sw_batch_size, overlap=0.5, mode="gaussian"
            )

    def logits(self, network, mirror_axes: Sequence[int] = ()) -> tuple[Any, float]:
        """``network``'s (in eval mode) logits on the pre-processed held-out image, on its grid, and the seconds the
        inferer took; ``mirror_axes``: test-time mirroring."""
        import torch

        from monai_resunet.inference import MirrorInferer

        inferer = MirrorInferer(self.inferer, mirror_axes) if mirror_axes else self.inferer
        with torch.inference_mode():
            start = time.perf_counter()
            logits = inferer(self.test["image"][None], network)
            return logits, time.perf_counter() - start

    def evaluate(self, network, final: bool, mirror_axes: Sequence[int] = ()) -> dict[str, Any]:
        """Scores of ``network`` (in eval mode) on the held-out image; ``mirror_axes``: test-time mirroring."""
        import numpy as np
        import torch
        from monai.metrics import compute_dice, compute_hausdorff_distance
        from monai.networks.utils import one_hot

        logits, seconds = self.logits(network, mirror_axes)
        restored = self.invert({"image": self.test["image"], "pred": torch.softmax(logits[0], dim=0)})["pred"]
        pred = restored.argmax(dim=0, keepdim=True)
        pred_oh = one_hot(pred[None].as_tensor().long(), NUM_CLASSES)
        truth = self.label_onehot.as_tensor()
        dice = compute_dice(pred_oh, truth, include_background=False)[0].tolist()
        result: dict[str, Any] = {"dice": dict(zip(STRUCTURES, dice)), "mean_dice": float(np.nanmean(dice))}
        result["inference_s"] = seconds
        if final:
            hd = compute_hausdorff_distance(
                pred_oh, truth, include_background=False, percentile=95, spacing=self.spacing
            )[0].tolist()
            result["hd95_mm"] = {s: (float(v) if math.isfinite(v) else None) for s, v in zip(STRUCTURES, hd)}
            result["prediction"] = pred
        return result


def run_network(name: str, settings: Settings, out_dir: Path) -> dict[str, Any]:
    """Train ``name`` for the budget, evaluating the held-out image on the way; return its result row."""
    import nibabel as nib
    import numpy as np
    import torch
    from monai.data import CacheDataset, DataLoader
    from monai.transforms import Compose
    from monai.utils import set_determinism
    from tqdm import tqdm

    from monai_resunet.data import msd_datalist
    from monai_resunet.networks import configure_execution

    torch.set_num_threads(settings.threads)
    is_2d = name == "resunet2d-bundle"
    dataset_dir = settings.dataset_dir
    is_bundle = name in BUNDLE_CONFIGS
    overrides = settings.overrides if is_bundle else {}
    recipe = bundle_recipe(BUNDLE_CONFIGS.get(name, BUNDLE3D), dataset_dir, overrides)  # peers: the 3D recipe
    recipe["seed"] = settings.seed  # --seed replaces the config's: the row records the seed it ran with
    set_determinism(seed=settings.seed)

    # data: the bundle's own transform lists, the deterministic part cached once
    patch, train_pre, aug = bundle_transforms(is_2d, settings, overrides)
    train_items = msd_datalist(dataset_dir, "training")
    # batch_size images per iteration: with one training image, the same image batch_size times
    data = [train_items[i % len(train_items)] for i in range(max(recipe["batch_size"], len(train_items)))]
    dataset = CacheDataset(data, Compose(train_pre + aug), cache_rate=1.0, num_workers=0, progress=False)
    loader = DataLoader(dataset, batch_size=recipe["batch_size"], shuffle=True, num_workers=0)

    held_out = HeldOut(settings, is_2d, patch, train_pre, recipe["sw_batch_size"])
    baseline_rss = maxrss_mib()

    # execution flags change how fast a network runs, not what it is. The bundle networks run with their config's;
    # MONAI's networks in channels-last, their faster layout on this CPU (a UNet step 0.56 → 0.38 s), so no peer is
    # timed slower than it could run. bf16 autocast follows the recipe for every network (off for CPU training).
    network = configure_execution(
        build_network(name, dataset_dir, overrides),
        "cpu",
        channels_last=recipe["channels_last"] if is_bundle else True,
        cpu_bf16=recipe["cpu_bf16"],
    )
    params = sum(p.numel() for p in network.parameters() if p.requires_grad)
    loss_fn = recipe["loss"]
    optimizer = torch.optim.AdamW(network.parameters(), lr=recipe["learning_rate"], weight_decay=recipe["weight_decay"])

    def evaluate(final: bool) -> dict[str, Any]:
        network.eval()
        result = held_out.evaluate(network, final)
        network.train()
        return result

    def set_lr(train_s: float) -> None:  # the bundle's schedule shape, over the time budget
        for group in optimizer.param_groups:
            group["lr"] = recipe["learning_rate"] * lr_factor(train_s / settings.budget_s)

    curve: list[dict[str, Any]] = []
    train_s, iterations, next_eval = 0.0, 0, settings.eval_every_s
    losses: list[float] = []
    durations: list[float] = []
    set_lr(train_s)
    steps = train_steps(network, loss_fn, optimizer, loader, clock=_training_clock(settings), as_tensor=True)
    with tqdm(
        total=round(settings.budget_s),
        desc=name,
        unit="s",
        leave=False,
        file=sys.stderr,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total} s train {postfix}",
    ) as bar:
        for step in steps:  # evaluation between steps is off the clock
            train_s += step.seconds
            iterations = step.iteration
            durations.append(step.seconds)
            losses.append(step.loss)
            bar.update(min(step.seconds, settings.budget_s - bar.n))
            if train_s >= next_eval or train_s >= settings.budget_s:
                final = train_s >= settings.budget_s
                ev = evaluate(final)
                curve.append(
                    {
                        "train_s": round(train_s, 3),
                        "iteration": iterations,
                        "loss": losses[-1],
                        "mean_dice": ev["mean_dice"],
                        "dice": ev["dice"],
                    }
                )
                next_eval = (math.floor(train_s / settings.eval_every_s) + 1) * settings.eval_every_s
                bar.set_postfix_str(f"it {iterations} loss {losses[-1]:.3f} held-out Dice {ev['mean_dice']:.3f}")
                if final:
                    break
            set_lr(train_s)
    # the last curve point is the final evaluation (the loop ends right after it)

    pred_dir = out_dir / "predictions"
    pred_dir.mkdir(parents=True, exist_ok=True)
    nib.save(
        nib.Nifti1Image(ev["prediction"][0].numpy().astype(np.uint8), held_out.label.affine.numpy()),
        str(pred_dir / f"{name}.nii.gz"),
    )
    # the final weights, so bundle_2d_vs_3d.py --colin27 can run them through the bundles' inference
    torch.save({k: v.contiguous() for k, v in network.state_dict().items()}, pred_dir / f"{name}.pt")
    reached = next((p["train_s"] for p in curve if p["mean_dice"] >= settings.target_dice), None)
    hd_values = [v for v in ev["hd95_mm"].values() if v is not None]
    return {
        "network": name,
        "description": NETWORKS[name],
        "params": params,
        "iterations": iterations,
        "patches_per_iteration": recipe["batch_size"] * recipe["num_samples"],
        "train_s": round(train_s, 2),
        "s_per_iteration": round(train_s / max(1, iterations), 3),
        "first_iteration_s": round(durations[0], 3),
        "median_iteration_s": round(float(np.median(durations)), 3),
        "mean_dice": ev["mean_dice"],
        "dice": ev["dice"],
        "mean_hd95_mm": float(np.mean(hd_values)) if hd_values else None,
        "hd95_missing": len(STRUCTURES) - len(hd_values),
        "hd95_mm": ev["hd95_mm"],
        "time_to_target_s": reached,
        "inference_s": round(ev["inference_s"], 3),
        "peak_rss_mib": round(maxrss_mib(), 1),
        "rss_rise_mib": round(maxrss_mib() - baseline_rss, 1),
        "recipe": {k: v for k, v in recipe.items() if k != "loss"} | {"loss": _loss_name(recipe["loss"])},
        "patch_size": list(patch),
        "prediction": str(pred_dir / f"{name}.nii.gz"),
        "curve": curve,
        "final_loss": losses[-1] if losses else None,
        "error": "",
    }


# ------------------------------------------------------------------------------------------------ reports


def _loss_name(loss: Any) -> str:
    """``StackedDeepSupervisionLoss(DiceCELoss)`` for a wrapped loss, the class name otherwise."""
    inner = getattr(loss, "loss", None)
    return f"{type(loss).__name__}({type(inner).__name__})" if inner is not None else type(loss).__name__


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """A result row flattened to :data:`COLUMNS`."""
    out = {c: row.get(c, "") for c in COLUMNS}
    for s in STRUCTURES:
        out[f"dice_{s}"] = (row.get("dice") or {}).get(s, "")
        hd = (row.get("hd95_mm") or {}).get(s)
        out[f"hd95_{s}_mm"] = "" if hd is None else hd
    for key in ("mean_dice", "mean_hd95_mm", "time_to_target_s"):
        out[key] = "" if row.get(key) is None else row[key]
    return out


def copy_label_baseline(dataset_dir: str | os.PathLike) -> dict[str, Any]:
    """Scores of a prediction without learning: the training label copied onto the held-out image (same grid).
    The two hemispheres of this single-subject atlas are nearly mirror-symmetric, so this is the floor a
    network must beat to show it learnt anything from the image."""
    import nibabel as nib
    import numpy as np
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance
    from monai.networks.utils import one_hot

    dataset_dir = Path(dataset_dir)
    meta = json.loads((dataset_dir / "dataset.json").read_text())
    train = nib.load(str(dataset_dir / meta["training"][0]["label"]))
    test = nib.load(str(dataset_dir / meta["test_labels"][0]))
    if train.shape != test.shape:
        raise ValueError("training and held-out labels are on different grids")
    pred, truth = (one_hot(torch.from_numpy(np.asarray(x.dataobj).astype(np.int64))[None, None], NUM_CLASSES)
                   for x in (train, test))  # fmt: skip
    dice = compute_dice(pred, truth, include_background=False)[0].tolist()
    spacing = [float(v) for v in test.header.get_zooms()[:3]]
    hd = compute_hausdorff_distance(pred, truth, include_background=False, percentile=95, spacing=spacing)[0].tolist()
    return {
        "network": "copy training label",
        "mean_dice": float(np.mean(dice)),
        "dice": dict(zip(STRUCTURES, dice)),
        "mean_hd95_mm": float(np.mean(hd)),
        "hd95_mm": dict(zip(STRUCTURES, hd)),
    }


def markdown(
    rows: list[dict[str, Any]], machine: dict[str, Any], settings: Settings, baseline: dict[str, Any] | None = None
) -> str:
    """The header, the main table and the per-structure table (with the no-learning ``baseline`` if given)."""
    budget = f"{settings.budget_s / 60:g} min" if settings.budget_s >= 60 else f"{settings.budget_s:g} s"
    lines = [
        f"# Colin27 deep grey structures: {budget} of CPU training per network",
        "",
        machine_line(machine),
        "",
        f"Budget: {budget} of training time per network (evaluation excluded; clock: "
        f"{'process CPU seconds / threads' if settings.clock == 'cpu' else 'wall'}), one network after another. "
        f"Patch {'×'.join(map(str, settings.patch_size))} (2D: {'×'.join(map(str, settings.patch_size_2d))}), "
        f"pixdim {tuple(settings.pixdim)} mm, the 3D bundle's recipe (AdamW, DiceCE, lr schedule over the time "
        f"budget), seed {settings.seed}, held-out Dice every "
        f"{settings.eval_every_s:g} s of training."
        + (" **Quick mode: a smoke test, not a measurement.**" if settings.quick else "")
        + (
            " **Not the bundle default**: the ResUNet rows ran with "
            + ", ".join(f"`{k}={json.dumps(v)}`" for k, v in settings.overrides.items())
            + "."
            if settings.overrides
            else ""
        ),
        "",
        "**This measures generalisation within one subject**: "
        + HELD_OUT_SENTENCE[settings.train_side]
        + " (AAL labels: caudate, putamen, pallidum, thalamus, hippocampus, amygdala). It says nothing about "
        "other subjects, scanners or pathology. Scores are those of the final network; nothing was selected on "
        "the held-out image.",
        "",
        "| " + " | ".join(MD_COLUMNS) + " |",
        "| --- | " + " | ".join("---:" for _ in MD_COLUMNS[1:]) + " |",
    ]
    for r in rows:
        if r.get("error"):
            error = str(r["error"]).replace("|", "/").replace("\n", " ")
            lines.append(f"| {r['network']} | error: {error} | " + " | ".join("—" for _ in MD_COLUMNS[2:]) + " |")
            continue
        hd = _fmt(r.get("mean_hd95_mm"), 1) + ("*" if r.get("hd95_missing") else "")
        reached = "not reached" if r.get("time_to_target_s") is None else _fmt(float(r["time_to_target_s"]), 0)
        cells = [
            r["network"],
            _fmt(r["params"]),
            _fmt(r["iterations"]),
            _fmt(r["train_s"], 0),
            _fmt(r["mean_dice"]),
            hd,
            reached,
            _fmt(r["inference_s"], 1),
            _fmt(r["peak_rss_mib"], 0),
            _fmt(r["rss_rise_mib"], 0),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Per structure, final network: Dice / HD95 mm (— : structure not predicted).",
        "",
        "| network | " + " | ".join(STRUCTURES) + " |",
        "| --- | " + " | ".join("---:" for _ in STRUCTURES) + " |",
    ]
    for r in rows:
        if r.get("error"):
            continue
        cells = [f"{_fmt(r['dice'][s])} / {_fmt(r['hd95_mm'][s], 1)}" for s in STRUCTURES]
        lines.append(f"| {r['network']} | " + " | ".join(cells) + " |")
    if baseline:
        cells = [f"{_fmt(baseline['dice'][s])} / {_fmt(baseline['hd95_mm'][s], 1)}" for s in STRUCTURES]
        lines.append("| *copy training label* | " + " | ".join(cells) + " |")
        lines += [
            "",
            f"No-learning reference: the training label copied onto the held-out image scores mean Dice "
            f"{baseline['mean_dice']:.3f} (HD95 {baseline['mean_hd95_mm']:.1f} mm): the hemispheres of this "
            "single-subject atlas are nearly mirror images, so a network has learnt from the image only where it "
            "beats this.",
        ]
    lines += [
        "",
        "Networks: " + "; ".join(f"`{r['network']}`: {NETWORKS[r['network']]}" for r in rows) + ".",
        "",
        "\\* mean over the structures the network predicted. Time to Dice: first evaluation at or above the "
        "target (resolution: the evaluation interval). Inference: the inferer call on the held-out image. Peak "
        "RSS: the network's own process; rise: over the value after imports and data loading.",
        "",
    ]
    return "\n".join(lines)


def figure(rows: list[dict[str, Any]], settings: Settings, path: Path, baseline: dict[str, Any] | None = None) -> None:
    """Dice curves of every network, and prediction vs truth on axial slices for the ResUNet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib
    import numpy as np

    ok = [r for r in rows if not r.get("error")]
    overlay = next((r for r in ok if r["network"] == OVERLAY_NETWORK), None)
    n_slices = 4
    rows_in_figure = 2 if overlay is not None else 1
    fig = plt.figure(figsize=(4 * n_slices, 4.8 * rows_in_figure), constrained_layout=True)
    grid = fig.add_gridspec(rows_in_figure, n_slices, height_ratios=[1.1, 1][:rows_in_figure])
    ax = fig.add_subplot(grid[0, :])
    for r in ok:
        curve = r["curve"]
        ax.plot(
            [p["train_s"] for p in curve],
            [p["mean_dice"] for p in curve],
            marker="o",
            ms=3,
            label=f"{r['network']} ({r['params'] / 1e6:.1f} M)",
        )
    ax.axhline(settings.target_dice, color="grey", ls=":", lw=1)
    if baseline:
        ax.axhline(baseline["mean_dice"], color="grey", ls="--", lw=1)
        ax.text(0, baseline["mean_dice"], " copy training label (no learning)", va="bottom", fontsize=8, color="grey")
    ax.set_xlabel("training time (s), evaluation excluded")
    ax.set_ylabel("held-out mean Dice (6 structures)")
    ax.set_ylim(0, 1)
    ax.set_xlim(0, max([settings.budget_s] + [r["train_s"] for r in ok]) * 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"Colin27: {FIGURE_SPLIT[settings.train_side]} (one subject)")
    if overlay is not None:
        dataset = Path(settings.dataset_dir)
        meta = json.loads((dataset / "dataset.json").read_text())
        image_nii = nib.load(str(dataset / meta["test"][0]))
        image = np.asarray(image_nii.dataobj, dtype=float)
        truth = np.asarray(nib.load(str(dataset / meta["test_labels"][0])).dataobj)
        pred = np.asarray(nib.load(overlay["prediction"]).dataobj)
        zs = np.nonzero(truth.any(axis=(0, 1)))[0]
        picks = np.linspace(zs.min(), zs.max(), n_slices + 2)[1:-1].round().astype(int)
        z_world = [float((image_nii.affine @ [0, 0, z, 1])[2]) for z in picks]
        colours = plt.get_cmap("tab10")(np.arange(len(STRUCTURES)))
        for k, z in enumerate(picks):
            a = fig.add_subplot(grid[1, k])
            a.imshow(image[:, :, z].T, cmap="gray", origin="lower")
            for v in range(1, NUM_CLASSES):
                if (truth[:, :, z] == v).any():
                    a.contour((truth[:, :, z] == v).T, levels=[0.5], colors=[colours[v - 1]], linewidths=1.2)
                if (pred[:, :, z] == v).any():
                    a.contour(
                        (pred[:, :, z] == v).T, levels=[0.5], colors=[colours[v - 1]], linewidths=1.0, linestyles="--"
                    )
            a.set_title(f"held-out, axial slice {z} (MNI z = {z_world[k]:+.0f} mm), medial → right", fontsize=9)
            a.set_axis_off()
        handles = [plt.Line2D([], [], color=colours[i], label=s) for i, s in enumerate(STRUCTURES)]
        handles += [
            plt.Line2D([], [], color="k", label="truth"),
            plt.Line2D([], [], color="k", ls="--", label=f"{OVERLAY_NETWORK} (Dice {overlay['mean_dice']:.2f})"),
        ]
        fig.legend(
            handles=handles,
            loc="lower center",
            ncol=len(handles),
            fontsize=8,
            frameon=False,
            bbox_to_anchor=(0.5, -0.03),
        )
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_reports(
    rows: list[dict[str, Any]],
    machine: dict[str, Any],
    settings: Settings,
    out: Path,
    baseline: dict[str, Any] | None = None,
) -> str:
    """Write the Markdown, CSV, JSON and PNG into ``out``; return the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, machine, settings, baseline)
    (out / "colin27_benchmark.md").write_text(text)
    with open(out / "colin27_benchmark.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
        writer.writeheader()
        for r in rows:
            writer.writerow(csv_row(r))
    (out / "colin27_curves.json").write_text(
        json.dumps({"machine": machine, "settings": asdict(settings), "baseline": baseline, "results": rows}, indent=1)
        + "\n"
    )
    try:
        figure(rows, settings, out / "colin27_benchmark.png", baseline)
    except Exception as e:  # a figure problem must not lose the measurements
        print(f"figure not written: {type(e).__name__}: {e}", file=sys.stderr)
    return text


# ------------------------------------------------------------------------------------------------- driver


def _training_clock(settings: Settings):
    """Seconds counted against the budget: wall clock, or CPU time of this process spread over its threads
    (on a shared machine a network slowed by other jobs is not charged for their time)."""
    if settings.clock == "cpu":
        return lambda: time.process_time() / max(1, settings.threads)
    return time.perf_counter


def _child_command(name: str, args: argparse.Namespace, result: Path) -> list[str]:
    cmd = module_command(
        "colin27",
        "--only",
        name,
        "--result-json",
        str(result),
        "--dataset-dir",
        str(args.dataset_dir),
        "--out",
        str(args.out),
        "--seconds",
        str(args.seconds),
        "--eval-every",
        str(args.eval_every),
        "--threads",
        str(args.threads),
        "--clock",
        args.clock,
    )
    if args.seed is not None:
        cmd += ["--seed", str(args.seed)]
    if args.quick:
        cmd.append("--quick")
    for key, value in args.override:
        cmd += ["--override", f"{key}={json.dumps(value)}"]
    return cmd


def settings_from_args(args: argparse.Namespace) -> Settings:
    quick = bool(args.quick)
    seed = args.seed
    if seed is None:
        seed = int(json.loads(BUNDLE3D.read_text())["seed"])  # the bundle's seed (123)
    return Settings(
        dataset_dir=str(args.dataset_dir),
        budget_s=float(args.seconds),
        eval_every_s=float(args.eval_every),
        patch_size=(48, 48, 48) if quick else (64, 64, 64),
        patch_size_2d=(48, 48) if quick else (128, 128),
        pixdim=(2.0, 2.0, 2.0) if quick else (1.0, 1.0, 1.0),
        threads=int(args.threads),
        seed=seed,
        quick=quick,
        networks=list(args.networks),
        clock=args.clock,
        overrides=dict(args.override),
        train_side=fetch_colin27.train_side_of(args.dataset_dir),
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from monai_resunet.config_flags import add_override_option

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--dataset-dir",
        default=None,
        help="MSD folder from fetch_colin27.py (default: <cache>/colin27/Colin27DeepGrey)",
    )
    parser.add_argument("--out", default=None, help=f"output folder (default: {DEFAULT_OUT}; quick: {QUICK_OUT})")
    parser.add_argument("--minutes", type=float, default=None, help="training budget per network (default 6)")
    parser.add_argument("--seconds", type=float, default=None, help="the budget in seconds (overrides --minutes)")
    parser.add_argument(
        "--eval-every", type=float, default=None, help="seconds of training between evaluations (default 30; quick: 4)"
    )
    parser.add_argument(
        "--networks",
        nargs="+",
        default=None,
        choices=list(NETWORKS),
        metavar="NAME",
        help=f"networks to run, in order (default: {' '.join(DEFAULT_NETWORKS)})",
    )
    parser.add_argument("--include-2d", action="store_true", help="also the 2D slice-wise bundle network")
    parser.add_argument("--quick", action="store_true", help="smoke test: 8 s, 2 networks, 48³ patches, 2 mm")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all)")
    parser.add_argument("--seed", type=int, default=None, help="default: the bundle config's seed")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="what the budget counts: wall-clock seconds (default), or this process's CPU seconds divided by "
        "--threads, which equals wall time on an idle machine and stays fair when other jobs share the CPU",
    )
    add_override_option(
        parser,
        "change a bundle config entry for the ResUNet rows, e.g. network_def#full_res='\"conv\"' or "
        "learning_rate=2e-3 (repeatable; the report lists them): to try a recipe before it becomes the default",
    )
    parser.add_argument("--list", action="store_true", help="print the networks and exit")
    parser.add_argument(
        "--report-from",
        default=None,
        metavar="DIR",
        help="write the reports from the per-network results (.NAME.result.json) kept in DIR, training nothing "
        "(the header names --seed: give the seed the rows ran with)",
    )
    parser.add_argument(
        "--mirroring-report",
        action="store_true",
        help="score the final weights a run saved in OUT/predictions with and without test-time mirroring (every "
        "network of --networks alike), write OUT/colin27_mirroring.md; trains nothing",
    )
    parser.add_argument(
        "--checkerboard-report",
        action="store_true",
        help="measure 2-voxel periodic patterns (checkerboard artefacts) in the held-out predictions of the final "
        "weights a run saved in OUT/predictions, write OUT/colin27_checkerboard.md; trains nothing",
    )
    parser.add_argument("--only", default=None, help=argparse.SUPPRESS)  # internal: one network, in this process
    parser.add_argument("--result-json", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 8.0 if args.quick and args.minutes is None else 60.0 * (args.minutes or 6.0)
    if args.eval_every is None:
        args.eval_every = 4.0 if args.quick else 30.0
    if args.networks is None:
        args.networks = list(QUICK_NETWORKS if args.quick else DEFAULT_NETWORKS)
    if args.include_2d and "resunet2d-bundle" not in args.networks:
        args.networks.append("resunet2d-bundle")
    if args.dataset_dir is None:
        args.dataset_dir = str(fetch_colin27.default_dataset_dir())
    args.out = str(Path(args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)).expanduser().resolve())
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for name, description in NETWORKS.items():
            print(f"{name:<20} {description}")
        return 0
    if not fetch_colin27.is_converted(args.dataset_dir):
        if fetch_colin27.is_fetched() and Path(args.dataset_dir) == fetch_colin27.default_dataset_dir():
            fetch_colin27.convert(fetch_colin27.templates_dir(), args.dataset_dir)
        else:
            print(
                f"{args.dataset_dir}: no Colin27 dataset. Run: python pipelines/fetch_colin27.py "
                f"--dataset-dir {args.dataset_dir}",
                file=sys.stderr,
            )
            return 2
    settings = settings_from_args(args)
    out = Path(args.out)

    if args.only:  # child: one network, result as JSON
        try:
            row = run_network(args.only, settings, out)
        except Exception as e:
            traceback.print_exc()
            row = {"network": args.only, "error": f"{type(e).__name__}: {e}"[:300]}
        write_json(args.result_json, row)
        return 0 if not row.get("error") else 1

    machine = machine_info(threads=settings.threads)
    if args.mirroring_report:  # the saved weights of a run, scored with and without test-time mirroring
        text = mirroring_report(settings, out)
        (out / "colin27_mirroring.md").write_text(text)
        print(text)
        return 0
    if args.checkerboard_report:  # the saved weights of a run: 2-voxel periodic patterns in their predictions
        text = checkerboard_report(settings, out)
        (out / "colin27_checkerboard.md").write_text(text)
        print(text)
        return 0
    if args.report_from:  # rows kept from an interrupted run: write the reports only
        rows = [json.loads(p.read_text()) for p in sorted(Path(args.report_from).glob(".*.result.json"))]
        order = {name: k for k, name in enumerate(NETWORKS)}
        rows.sort(key=lambda r: order.get(r["network"], len(order)))
        settings.networks = [r["network"] for r in rows]
        out.mkdir(parents=True, exist_ok=True)
        print(write_reports(rows, machine, settings, out, copy_label_baseline(settings.dataset_dir)))
        return 0
    try:
        baseline = copy_label_baseline(settings.dataset_dir)
    except Exception as e:
        print(f"no-learning baseline not computed: {type(e).__name__}: {e}", file=sys.stderr)
        baseline = None
    rows: list[dict[str, Any]] = []
    out.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(settings.networks, start=1):
        print(f"[{k}/{len(settings.networks)}] {name}: {NETWORKS[name]}", file=sys.stderr, flush=True)
        result = out / f".{name}.result.json"
        result.unlink(missing_ok=True)
        start = time.perf_counter()
        error = run_module(_child_command(name, args, result), timeout=10 * settings.budget_s + 1800, capture=False)
        if result.is_file():  # kept, so --report-from can rebuild the tables of an interrupted run
            row = json.loads(result.read_text())
        else:
            row = {"network": name, "error": f"{error or 'exit 0'} and no result"}
        print(
            f"    done in {time.perf_counter() - start:.0f} s: "
            + (row["error"] if row.get("error") else f"mean Dice {row['mean_dice']:.3f}"),
            file=sys.stderr,
            flush=True,
        )
        rows.append(row)
    text = write_reports(rows, machine, settings, out, baseline)
    print(text)
    print(f"written: {out}/colin27_benchmark.md, .csv, colin27_curves.json, colin27_benchmark.png, predictions/")
    return 0 if all(not r.get("error") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
