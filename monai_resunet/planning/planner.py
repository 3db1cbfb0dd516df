"""A training plan derived from the data set, nnU-Net's way: target spacing, intensity normalisation, mirroring
axes, patch and batch size, each with the reason it was chosen. The statistics come from MONAI's own
``monai.apps.auto3dseg.DataAnalyzer`` (written beside the data as ``datastats.yaml``); only the mirroring
measurement on the labels (:mod:`monai_resunet.planning.mirroring`) is this package's."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from monai_resunet.atomic_files import atomic_write_bytes
from monai_resunet.planning.mirroring import decide_mirror_axes, mirror_overlaps

__all__ = [
    "PLAN_FILE",
    "DATASTATS_FILE",
    "DEFAULT_NETWORK",
    "DEFAULT_NETWORK_2D",
    "CPU_MEMORY_BUDGET_GIB",
    "plan_dataset",
    "slice_plan",
    "load_plan",
    "ensure_plan",
    "plan_from_statistics",
    "activation_bytes_per_voxel",
    "print_plan",
]

logger = logging.getLogger(__name__)

PLAN_FILE = "resunet_plan.json"
DATASTATS_FILE = "datastats.yaml"
PLAN_VERSION = 1
# the 3D bundle's network (``configs/train.json`` network_def) without its channels: what the memory model probes
DEFAULT_NETWORK: dict[str, Any] = {
    "features": (16, 32, 64, 128),
    "encoder_blocks": (1, 2, 2, 2),
    "decoder_blocks": 1,
    "norm": ("instance", {"affine": True}),
    "act": ("leakyrelu", {"negative_slope": 0.01, "inplace": True}),
    "downsample": "conv",
    "upsample": "deconv",
    "stem_stride": 2,
    "full_res": "interpolate",
    "up_kernel_size": 1,
}
# the 2D bundle's network (``resunet2d_segmentation/configs/train.json`` network_def) without its channels
DEFAULT_NETWORK_2D: dict[str, Any] = {
    **DEFAULT_NETWORK,
    "features": (32, 64, 128, 256, 512),
    "encoder_blocks": (1, 2, 2, 2, 2),
    "upsample": "nontrainable",
}
# on a CPU the step time, not the memory, limits training: a budget of training activations that keeps the patch
# near the 64³ the bundle trains with on CPU (2 patches of 64³ for the default network): larger patches cost
# steps that a CPU training budget does not have (docs/planning.md)
CPU_MEMORY_BUDGET_GIB = 0.0625
GPU_MEMORY_FRACTION = 0.5  # of the device's memory: room for the optimiser, cuDNN workspaces and fragmentation
ANISOTROPY_RATIO = 3.0  # nnU-Net: max/min median spacing at or above this is anisotropic
MIN_BOTTOM = 4  # voxels per axis at the network's lowest level
MAX_PAD_FRACTION = 1.5  # the patch may exceed the median shape by this factor to keep MIN_BOTTOM voxels
MAX_BATCH_FRACTION = 0.05  # nnU-Net: one batch covers at most 5 % of the data set's voxels (but at least 2 patches)


def _ensure_dir_writable(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".plan_probe_{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return folder
    except OSError:
        fallback = Path(tempfile.gettempdir()) / "monai_resunet_plans" / folder.resolve().name
        fallback.mkdir(parents=True, exist_ok=True)
        logger.warning("%s is not writable: the plan and statistics go to %s", folder, fallback)
        return fallback


def _loading_chain(keys: Sequence[str], modality: str) -> list:
    """The bundle's loading steps up to the body crop (readers, RAS, crop to the body), so the statistics describe
    what training resamples."""
    from monai.apps.auto3dseg.transforms import EnsureSameShaped
    from monai.transforms import CropForegroundd, EnsureChannelFirstd, EnsureTyped, LoadImaged, Orientationd

    from monai_resunet.data.nifti_reader import FastNibabelReader
    from monai_resunet.data.sitk_reader import SimpleITKReader
    from monai_resunet.transforms.intensity import foreground_select_fn

    keys = list(keys)
    load = LoadImaged(keys, image_only=True, ensure_channel_first=False)
    for reader in (FastNibabelReader(), SimpleITKReader()):
        load.register(reader)
    chain = [load, EnsureChannelFirstd(keys), EnsureTyped(keys, data_type="tensor", dtype=np.float32)]
    chain.append(Orientationd(keys, axcodes="RAS"))
    if "label" in keys:
        chain.append(EnsureSameShaped("label", source_key="image", allowed_shape_difference=5))
    chain.append(CropForegroundd(keys, source_key="image", select_fn=foreground_select_fn(modality)))
    return chain


def _network_kwargs(network: dict | None) -> dict[str, Any]:
    return {**DEFAULT_NETWORK, **(network or {})}


def activation_bytes_per_voxel(network: dict | None = None, num_classes: int = 2, spatial_dims: int = 3) -> float:
    """Bytes that one training sample's forward pass keeps for the backward pass, per input voxel (pixel in 2D),
    measured on the ResUNet itself (the tensors autograd saves, for a probe patch of two samples minus one, so the
    weights cancel).

    Args:
        network: ``ResUNet`` arguments other than ``spatial_dims``/channels (default: :data:`DEFAULT_NETWORK`).
        num_classes: output channels.
        spatial_dims: 3 for the 3D network, 2 for a slice-wise one.

    Example::

        activation_bytes_per_voxel({"features": (8, 16, 32), "encoder_blocks": 1})
    """
    return _probe(json.dumps(_network_kwargs(network), sort_keys=True), int(num_classes), int(spatial_dims))


@lru_cache(maxsize=16)
def _probe(kwargs_json: str, num_classes: int, spatial_dims: int = 3) -> float:
    import torch

    from monai_resunet.networks import ResUNet

    kwargs = json.loads(kwargs_json)
    net = ResUNet(spatial_dims=spatial_dims, in_channels=1, out_channels=num_classes, **kwargs)
    size = 2 * 2 ** (len(kwargs["features"]) - 1) * int(kwargs.get("stem_stride", 1))

    def saved_bytes(batch: int) -> int:
        seen: dict[tuple[int, int], int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            seen[(t.data_ptr(), t.numel())] = t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            net(torch.zeros(batch, 1, *[size] * spatial_dims))
        return sum(seen.values())

    return max(1.0, (saved_bytes(2) - saved_bytes(1)) / size**spatial_dims)


def _memory_budget_bytes(memory_gib: float | None) -> tuple[float, str]:
    import torch

    if memory_gib is not None:
        return memory_gib * 2**30, f"{memory_gib:g} GiB given"
    if torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory
        return GPU_MEMORY_FRACTION * total, f"{GPU_MEMORY_FRACTION:.0%} of the GPU's {total / 2**30:.1f} GiB"
    return CPU_MEMORY_BUDGET_GIB * 2**30, f"CPU default {CPU_MEMORY_BUDGET_GIB:g} GiB (no CUDA device)"


def _target_spacing(median: Sequence[float], p10: Sequence[float]) -> tuple[list[float], str]:
    median = [float(s) for s in median]
    ratio = max(median) / max(min(median), 1e-6)
    if ratio < ANISOTROPY_RATIO:
        return median, f"median spacing of the training cases (max/min {ratio:.2f} < {ANISOTROPY_RATIO:g}: isotropic)"
    low = int(np.argmax(median))
    target = list(median)
    target[low] = float(p10[low])
    return target, (
        f"median spacing, except axis {low} (the low-resolution axis, max/min {ratio:.2f} ≥ {ANISOTROPY_RATIO:g}) "
        f"at its 10th percentile {target[low]:.3g} mm, as nnU-Net plans anisotropic data"
    )


def _normalisation(modality: str, fg: dict) -> tuple[dict[str, Any], str]:
    if modality.upper() == "CT":
        low, high = float(fg["percentile_00_5"]), float(fg["percentile_99_5"])
        mean, std = float(fg["mean"]), max(float(fg["stdev"]), 1e-6)
        out = {"ct_window": [low, high], "ct_target_range": [(low - mean) / std, (high - mean) / std]}
        return out, (
            f"CT: clip to the 0.5/99.5 percentiles of the foreground (labelled) intensities [{low:.1f}, {high:.1f}] HU "
            f"and z-score with their mean {mean:.1f} and std {std:.1f} (nnU-Net's CT scheme; ScaleIntensityRanged "
            f"maps the window onto [{out['ct_target_range'][0]:.3f}, {out['ct_target_range'][1]:.3f}])"
        )
    return {}, f"{modality}: z-score of each image over its body (non-zero voxels), as nnU-Net does for non-CT"


def _levels_and_patch(
    median_shape: Sequence[float],
    spacing: Sequence[float],
    bytes_per_voxel: float,
    budget: float,
    max_levels: int,
    stem_stride: int,
    patches: int = 2,
) -> tuple[list[int], int, list[int]]:
    """Patch (multiple of the network's divisor on every axis) of which ``patches`` fit the budget, levels, and the
    voxels at the bottom level."""
    shape = [max(1.0, float(s)) for s in median_shape]
    levels = max_levels
    while levels > 2 and MIN_BOTTOM * stem_stride * 2 ** (levels - 1) > MAX_PAD_FRACTION * min(shape):
        levels -= 1
    divisor = stem_stride * 2 ** (levels - 1)
    smallest = MIN_BOTTOM * divisor
    patch = [max(smallest, int(math.ceil(s / divisor)) * divisor) for s in shape]
    # shrink the physically longest axis (relative to its spacing) one divisor step at a time until the patches fit
    while patches * math.prod(patch) * bytes_per_voxel > budget:
        candidates = [a for a in range(len(patch)) if patch[a] - divisor >= smallest]
        if not candidates:
            break
        axis = max(candidates, key=lambda a: patch[a] * spacing[a])
        patch[axis] -= divisor
    return patch, levels, [p // divisor for p in patch]


def plan_from_statistics(
    stats: dict,
    modality: str,
    class_names: Sequence[str],
    mirror_counts: Sequence[dict] | None,
    memory_gib: float | None = None,
    network: dict | None = None,
) -> dict[str, Any]:
    """The plan from DataAnalyzer's result (``get_all_case_stats()``) and :func:`mirror_overlaps`'s counts.

    Args:
        stats: DataAnalyzer's result (``stats_summary`` and ``stats_by_case``).
        modality: ``"CT"``, ``"MR"``, ...
        class_names: class names, background first.
        mirror_counts: per-axis mirroring counts; ``None`` mirrors every axis.
        memory_gib: training-activation budget; default: a share of the GPU's memory, or the CPU default.
        network: ``ResUNet`` arguments (default :data:`DEFAULT_NETWORK`).

    Example::

        plan = plan_from_statistics(DataAnalyzer(...).get_all_case_stats(), "MR", names, counts)
    """
    from monai.utils.enums import DataStatsKeys as D
    from monai.utils.enums import ImageStatsKeys as I

    summary = stats[D.SUMMARY]
    spacing_stats = summary[D.IMAGE_STATS][I.SPACING]
    target, spacing_reason = _target_spacing(spacing_stats["median"], spacing_stats["percentile_10_0"])

    # per case: body-cropped shape × spacing / target spacing; the median over cases
    resampled = []
    for case in stats[D.BY_CASE]:
        shape = np.asarray(case[D.IMAGE_STATS][I.SHAPE], dtype=float).reshape(-1, 3)[0]
        spacing = np.asarray(case[D.IMAGE_STATS][I.SPACING], dtype=float).reshape(-1)[:3]
        resampled.append(shape * spacing / np.asarray(target))
    median_shape = np.median(np.stack(resampled), axis=0).tolist()

    kwargs = _network_kwargs(network)
    bpv = activation_bytes_per_voxel(kwargs, num_classes=max(2, len(class_names)))
    budget, budget_reason = _memory_budget_bytes(memory_gib)
    stem = int(kwargs.get("stem_stride", 1))
    max_levels = len(kwargs["features"])
    patch, levels, bottom = _levels_and_patch(median_shape, target, bpv, budget, max_levels, stem)
    dataset_voxels = len(resampled) * math.prod(median_shape)
    batch_memory = max(2, int(budget // (math.prod(patch) * bpv)))
    batch_data = max(2, int(MAX_BATCH_FRACTION * dataset_voxels // math.prod(patch)))
    batch_size = min(batch_memory, batch_data)
    divisor = stem * 2 ** (levels - 1)
    level_reason = (
        f"the ResUNet halves every axis at each level (isotropic strides only, stem stride {stem}), so the patch "
        f"is a multiple of {divisor} per axis and at least {MIN_BOTTOM * divisor} voxels on every axis "
        f"(bottom level {bottom} voxels, ≥ {MIN_BOTTOM})"
    )
    if levels < max_levels:
        level_reason += (
            f"; {levels} of the network's {max_levels} levels, because the smallest median axis "
            f"({min(median_shape):.0f} voxels) cannot hold {MIN_BOTTOM} voxels below {max_levels} levels without "
            f"padding it more than {MAX_PAD_FRACTION:g}×"
        )
    else:
        level_reason += f"; all {levels} levels of the network"
    anisotropic = max(target) / min(target) >= ANISOTROPY_RATIO
    if anisotropic:
        level_reason += (
            "; anisotropic spacing would call for fewer halvings along the low-resolution axis, which this "
            "network does not offer: the plan keeps the network as it is and sizes the patch for it"
        )
    patch_reason = (
        f"the median body-cropped shape resampled to the target spacing {[round(s) for s in median_shape]}, rounded "
        f"to the network's divisor and shrunk (longest physical axis first) until 2 patches fit the memory budget "
        f"({budget_reason}; {bpv:.0f} bytes of training activations per voxel, measured on the network)"
    )
    batch_reason = (
        f"as many patches as the memory budget holds ({batch_memory}), at most {MAX_BATCH_FRACTION:.0%} of the data "
        f"set's voxels per batch ({batch_data}), at least 2"
    )

    norm, norm_reason = _normalisation(modality, summary[D.FG_IMAGE_STATS][I.INTENSITY])
    if mirror_counts is None:
        mirror_axes, mirror_reasons = [0, 1, 2], {str(a): "mirrored: no labels measured" for a in range(3)}
    else:
        mirror_axes, mirror_reasons = decide_mirror_axes(mirror_counts, class_names)

    plan: dict[str, Any] = {
        "version": PLAN_VERSION,
        "modality": modality.upper(),
        "pixdim": [round(float(s), 4) for s in target],
        "patch_size": [int(p) for p in patch],
        "batch_size": int(batch_size),
        "num_levels": int(levels),
        "mirror_axes": [int(a) for a in mirror_axes],
        **norm,
        "reasons": {
            "pixdim": spacing_reason,
            "normalisation": norm_reason,
            "mirror_axes": mirror_reasons,
            "patch_size": patch_reason,
            "batch_size": batch_reason,
            "num_levels": level_reason,
        },
        "statistics": {
            "n_cases": int(summary.get("n_cases", len(resampled))),
            "median_spacing": [float(s) for s in spacing_stats["median"]],
            "spacing_percentile_10": [float(s) for s in spacing_stats["percentile_10_0"]],
            "median_resampled_shape": [round(float(s), 1) for s in median_shape],
            "foreground_intensity": {
                k: float(v) for k, v in summary[D.FG_IMAGE_STATS][I.INTENSITY].items() if np.isscalar(v)
            },
            "mirror_counts": list(mirror_counts) if mirror_counts is not None else None,
            "memory_budget_bytes": int(budget),
            "activation_bytes_per_voxel": round(bpv, 1),
            "network": {"stem_stride": stem, "levels_available": max_levels},
        },
    }
    return plan


def slice_plan(
    plan: dict[str, Any],
    slice_axis: int = 2,
    network: dict | None = None,
    num_classes: int = 2,
    memory_gib: float | None = None,
    slices_per_step: int = 2,
) -> dict[str, Any]:
    """The data set's plan (:func:`plan_dataset`) for a slice-wise 2D network: the same normalisation, the in-plane
    target spacing with the slices at their own spacing, the in-plane mirroring axes (as 2D axes), and a 2D patch
    and number of levels from the median in-plane shape and the memory budget, which must hold the slices of one
    training step. ``{}`` for an empty plan (a config then keeps its fixed values).

    Args:
        plan: the 3D plan (``resunet_plan.json``), or ``{}``.
        slice_axis: the volume axis (after RAS) the 2D network slices along.
        network: 2D ``ResUNet`` arguments the patch is sized for (default :data:`DEFAULT_NETWORK_2D`).
        num_classes: output channels, for the memory probe.
        memory_gib: training-activation budget (default: the one the plan was made with).
        slices_per_step: 2D patches in one training step (the bundle's ``batch_size × num_samples``).

    Example (the 2D bundle's ``train.json``)::

        "slice_plan": "$monai_resunet.planning.slice_plan(@plan, @slice_axis, num_classes=@num_classes, ...)"
    """
    if not plan:
        return {}
    in_plane = [a for a in range(3) if a != slice_axis]
    stats = plan.get("statistics", {})
    kwargs = _network_kwargs(network or DEFAULT_NETWORK_2D)
    pixdim = [float(s) for s in plan["pixdim"]]
    pixdim[slice_axis] = -1.0
    shape = [float(stats.get("median_resampled_shape", [128.0] * 3)[a]) for a in in_plane]
    bpp = activation_bytes_per_voxel(kwargs, num_classes=max(2, num_classes), spatial_dims=2)
    if memory_gib is not None:
        budget, budget_reason = _memory_budget_bytes(memory_gib)
    else:
        budget = float(stats.get("memory_budget_bytes", CPU_MEMORY_BUDGET_GIB * 2**30))
        budget_reason = f"the plan's budget, {budget / 2**30:.3g} GiB"
    stem = int(kwargs.get("stem_stride", 1))
    max_levels = len(kwargs["features"])
    spacing = [pixdim[a] for a in in_plane]
    patch, levels, bottom = _levels_and_patch(shape, spacing, bpp, budget, max_levels, stem, slices_per_step)
    mirror = [k for k, a in enumerate(in_plane) if a in plan.get("mirror_axes", [0, 1, 2])]
    reasons = plan.get("reasons", {})
    axis_reasons = reasons.get("mirror_axes", {})
    out: dict[str, Any] = {
        "pixdim": pixdim,
        "patch_size": [int(p) for p in patch],
        "num_levels": int(levels),
        "mirror_axes": mirror,
        **{k: plan[k] for k in ("ct_window", "ct_target_range") if k in plan},
        "reasons": {
            "pixdim": f"in plane: {reasons.get('pixdim', 'the plan')}; along the slices (axis {slice_axis}): each "
            "scan's own spacing, since the 2D network never mixes slices",
            "normalisation": reasons.get("normalisation", ""),
            "mirror_axes": {
                str(k): f"volume axis {a}: {axis_reasons.get(str(a), 'as planned')}" for k, a in enumerate(in_plane)
            },
            "patch_size": f"the median in-plane shape {[round(s) for s in shape]} at the target spacing, rounded to "
            f"the 2D network's divisor {stem * 2 ** (levels - 1)} and shrunk until the {slices_per_step} slices of "
            "a training step fit the memory budget "
            f"({budget_reason}; {bpp:.0f} bytes of training activations per pixel, measured on the network)",
            "num_levels": f"{levels} of the 2D network's {max_levels} levels (bottom level {bottom} pixels, "
            f"≥ {MIN_BOTTOM}, without padding the smaller in-plane axis more than {MAX_PAD_FRACTION:g}×)",
        },
    }
    return out


def _training_items(dataset_dir: Path) -> list[dict]:
    from monai_resunet.data import msd_datalist

    return msd_datalist(dataset_dir, "training", val_fraction=0.0)


def plan_dataset(
    dataset_dir: str | os.PathLike,
    memory_gib: float | None = None,
    network: dict | None = None,
    output: str | os.PathLike | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Analyse an MSD-layout data set's training cases with MONAI's ``DataAnalyzer`` and write the plan (JSON a user
    can edit) beside the data (``dataset_dir/resunet_plan.json``; DataAnalyzer's ``datastats.yaml`` beside it).

    Args:
        dataset_dir: folder with ``dataset.json`` (its ``training`` list; its modality and labels).
        memory_gib: training-activation budget in GiB (default: half the GPU's memory, or the CPU default).
        network: ``ResUNet`` arguments the plan is sized for (default: the 3D bundle's network).
        output: where to write the plan (default ``dataset_dir/resunet_plan.json``).
        device: DataAnalyzer's device (default ``cuda`` when available).

    Example::

        plan = plan_dataset("/data/Task09_Spleen")
        print(plan["pixdim"], plan["reasons"]["pixdim"])
    """
    import torch
    from monai.apps.auto3dseg import DataAnalyzer
    from monai.transforms import Compose

    from monai_resunet.data import msd_class_names, msd_modality

    dataset_dir = Path(dataset_dir)
    items = _training_items(dataset_dir)
    modality = msd_modality(dataset_dir)
    class_names = msd_class_names(dataset_dir)
    out_path = Path(output) if output is not None else _ensure_dir_writable(dataset_dir) / PLAN_FILE
    stats_path = out_path.parent / DATASTATS_FILE
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    analyzer = DataAnalyzer({"training": items}, "", output_path=str(stats_path), device=device, worker=0, fmt="yaml")
    stats = analyzer.get_all_case_stats(transform_list=_loading_chain(["image", "label"], modality))
    from monai.utils.enums import DataStatsKeys as D

    if len(stats[D.BY_CASE]) < len(items):
        raise ValueError(
            f"{dataset_dir}: DataAnalyzer could read {len(stats[D.BY_CASE])} of {len(items)} training cases; "
            "check that every image and label in dataset.json exists and has the same shape."
        )
    load = Compose(_loading_chain(["image", "label"], modality))
    labels = (np.asarray(load(item)["label"][0]).round().astype(np.int64) for item in items)
    counts = mirror_overlaps(labels, max(len(class_names), 2))
    plan = plan_from_statistics(stats, modality, class_names, counts, memory_gib=memory_gib, network=network)
    plan["statistics"]["datastats"] = str(stats_path)
    atomic_write_bytes(out_path, (json.dumps(plan, indent=4) + "\n").encode())
    return plan


def load_plan(path: str | os.PathLike) -> dict[str, Any]:
    """Read a plan: ``path`` is the JSON file or the data-set folder holding ``resunet_plan.json``."""
    path = Path(path)
    if path.is_dir():
        path = path / PLAN_FILE
    try:
        plan = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); fix it or delete it to plan again.") from None
    if not isinstance(plan, dict):
        raise ValueError(f"{path}: a plan is a JSON object, got {type(plan).__name__}.")
    return plan


def ensure_plan(dataset_dir: str | os.PathLike, enabled: Any = True, **kwargs: Any) -> dict[str, Any]:
    """The plan beside the data, made first when there is none (``plan_dataset``); ``{}`` when ``enabled`` is false,
    so configs fall back to their fixed values (``"$@plan.get('pixdim', [1.0, 1.0, 1.0])"``).

    Example (``train.json``)::

        "plan": "$monai_resunet.planning.ensure_plan(@dataset_dir, @use_plan)"
    """
    from monai_resunet.config_flags import as_bool

    if not as_bool(enabled):
        return {}
    dataset_dir = Path(dataset_dir)
    for folder in (dataset_dir, Path(tempfile.gettempdir()) / "monai_resunet_plans" / dataset_dir.resolve().name):
        if (folder / PLAN_FILE).is_file():
            return load_plan(folder / PLAN_FILE)
    logger.warning("no %s in %s: planning from the training data (DataAnalyzer)", PLAN_FILE, dataset_dir)
    plan = plan_dataset(dataset_dir, **kwargs)
    print_plan(plan)
    return plan


def print_plan(plan: dict[str, Any], file=None) -> None:
    """Print each planned value and its reason."""
    import sys

    file = file or sys.stdout
    reasons = plan.get("reasons", {})
    for key in ("pixdim", "patch_size", "batch_size", "num_levels", "mirror_axes"):
        print(f"{key}: {plan.get(key)}", file=file)
        why = reasons.get(key)
        if isinstance(why, dict):
            for axis, text in why.items():
                print(f"    axis {axis}: {text}", file=file)
        elif why:
            print(f"    {why}", file=file)
    norm = {k: plan[k] for k in ("ct_window", "ct_target_range") if k in plan}
    print(f"normalisation: {norm or 'z-score over the body'}", file=file)
    if reasons.get("normalisation"):
        print(f"    {reasons['normalisation']}", file=file)
