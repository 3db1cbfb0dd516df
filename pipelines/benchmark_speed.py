#!/usr/bin/env python
"""Where the time and the memory of the 3D bundle go: inference stage by stage on a CT-sized volume, the
stitching options for huge scans, network and pre-processing knobs, and training throughput.

It answers "how close to the machine's limit does the bundle run, and what holds peak memory?". Every measured
configuration runs in a fresh Python process (this script re-invoked with ``--child``), so its peak resident set
(``ru_maxrss``) is its own and an out-of-memory failure becomes that row's error. Each child also gets an
address-space limit (``--max-memory-gb``), so a configuration that would need more fails with a MemoryError
instead of waking the kernel's OOM killer on a shared machine.

    python pipelines/benchmark_speed.py                          # everything, default sizes -> pipelines/results/
    python pipelines/benchmark_speed.py --sections inference --shape 512 512 300 --classes 3
    python pipelines/benchmark_speed.py --sections memory --memory-shape 512 512 1000
    python pipelines/benchmark_speed.py --checkpoint models/model.pt   # agreement on a trained network
    python pipelines/benchmark_speed.py --quick --out /tmp/speed       # a smoke test: tiny sizes, in-process

Sections (``--sections``, default all):

The network everywhere is the 3D bundle's as its config builds it: ``network_def`` (ResUNet, ``stem_stride`` 2,
``upsample`` deconv) through ``monai_resunet.networks.configure_execution`` with the config's ``channels_last``
and ``cpu_bf16`` flags (``cpu_bf16`` = ``cpu_has_bf16()``: bfloat16 autocast on CPUs with bf16 units).

* ``inference``: the bundle's inference on a synthetic int16 CT NIfTI (``--shape``, 0.7×0.7×1.0 mm, written
  first): each transform of ``segmentation_preprocessing`` timed on its own, the network (sum of its calls
  inside the sliding window, timed by a wrapper), window stitching (inferer time minus network time),
  inversion, arg-max and writing (``SaveImaged``), with the peak RSS after every stage; the network's GFLOP/s
  (``FlopCounterMode`` FLOPs of one window × windows / network time) next to a plain ``Conv3d(32, 32, 3)`` on a
  96³ tensor measured in the same process, in float32 and under bf16 autocast (where the CPU has bf16 units).
  Three pipelines: ``bundle``, the bundle's label path (``SlabArgmaxInferer`` with the config's ``slab_dim`` →
  ``InvertLabelMapd`` → ``SaveImaged``); ``scores``, the class-score path it replaced (``SlidingWindowInferer``
  → softmax → ``Invertd`` bilinear → arg-max); ``labels + Invertd`` (``SlabArgmaxInferer`` → ``Invertd``
  nearest, the label path before ``InvertLabelMapd``).
* ``memory``: the same three pipelines on ``--memory-shape`` (``--memory-network stub`` puts ``ScoreStub``, a
  per-class scaling of the input, in the network's place: minutes instead of hours on a CPU; the real network's
  activations, measured in ``knobs``, are added to the network stage as an estimate).
* ``inferers``: stitching alone (``ScoreStub`` stands in for the network) on the resampled grid of
  ``--shape`` and ``--memory-shape``: ``SlidingWindowInferer`` (+ arg-max), with ``buffer_steps``, and
  ``SlabArgmaxInferer`` with several slab sizes and both slab axes.
* ``knobs``: the network on ``sw_batch_size`` windows: the bundle's execution flags (baseline) vs float32
  contiguous, channels-last only and bf16 only; threads, ``torch.inference_mode`` vs ``no_grad``,
  ``sw_batch_size``.
* ``preprocessing``: ``segmentation_preprocessing`` as the library builds it (body crop, then float32
  resampling slab by slab) vs the chains it replaced, one change undone at a time: MONAI's whole-volume
  ``Spacingd``, float32 loading, float64 resampling of the whole field of view before the crop: time, peak RSS,
  difference to the library's output.
* ``training``: the bundle's ``train.json`` transforms, network (with its execution flags), loss and optimizer on
  the demo data (``monai_resunet.data.make_demo_dataset``): iterations/s and the split of each iteration into
  waiting for the data loader and forward/backward/step, for ``Dataset``/``CacheDataset`` × ``DataLoader`` (0 or
  2 workers)/``ThreadDataLoader``.
* ``agreement``: ``SlabArgmaxInferer`` labels vs the ``SlidingWindowInferer`` arg-max (model grid), the bundle's
  label path vs the class-score path on the input grid (+ Dice against the ground truth), and ``InvertLabelMapd``
  vs ``Invertd`` nearest, on demo volumes, with ``--checkpoint`` weights if given (random weights otherwise, said
  so in the table).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "pipelines") not in sys.path:
    sys.path.insert(0, str(REPO / "pipelines"))

import torch  # noqa: E402
from bench_common import loadavg, machine_info, maxrss_mib, optional_packages_imported  # noqa: E402

BUNDLE = REPO / "bundles" / "resunet3d_segmentation"
DEFAULT_OUT = REPO / "pipelines" / "results"
SECTIONS = ("inference", "memory", "inferers", "knobs", "preprocessing", "training", "agreement")
CT_SPACING = (0.7, 0.7, 1.0)
PIXDIM = (1.0, 1.0, 1.0)  # the bundle's default model spacing
CT_WINDOW = (-175.0, 250.0)

# ----------------------------------------------------------------------------------------------------------------
# Small helpers (children and parent)
# ----------------------------------------------------------------------------------------------------------------


def rss_mib() -> float:
    """The current resident set (``ru_maxrss`` is the peak so far)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return float("nan")


def float32_mib(shape: Sequence[int]) -> float:
    n = 1
    for s in shape:
        n *= int(s)
    return 4 * n / 2**20


class Clock:
    """Wall and process-CPU time of named stages, and the peak RSS after each (``ru_maxrss`` only grows, so the
    first stage whose value jumps is the one that set the peak)."""

    def __init__(self) -> None:
        self.stages: list[dict[str, Any]] = []

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        self.add(name, time.perf_counter() - w0, time.process_time() - c0)
        return out

    def add(self, name: str, seconds: float, cpu_s: float | None = None) -> None:
        self.stages.append(
            {"stage": name, "s": seconds, "cpu_s": cpu_s, "peak_mib": maxrss_mib(), "rss_mib": rss_mib()}
        )


class TimedNetwork:
    """Wraps the network to add up the wall time of its calls and the windows it saw, so that the sliding
    window's own stitching time is the inferer's time minus this."""

    def __init__(self, network: Any) -> None:
        self.network = network
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.windows = 0
        self.calls = 0

    def __call__(self, x, *args, **kwargs):
        w0, c0 = time.perf_counter(), time.process_time()
        out = self.network(x, *args, **kwargs)
        self.seconds += time.perf_counter() - w0
        self.cpu_seconds += time.process_time() - c0
        self.windows += int(x.shape[0])
        self.calls += 1
        return out


def bundle_parser(config: str = "inference.json"):
    """A ``ConfigParser`` on one of the 3D bundle's configs, with ``device`` set to the CPU."""
    from monai.bundle import ConfigParser

    import monai_resunet  # noqa: F401 - registers the package's names (ResUNet, ...) for the config parser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / config))
    parser["device"] = "cpu"
    return parser


def bundle_execution_flags() -> dict[str, bool]:
    """``channels_last`` and ``cpu_bf16`` as the 3D bundle's ``inference.json`` evaluates them on this machine
    (``cpu_bf16`` is ``$monai_resunet.networks.cpu_has_bf16()`` there)."""
    parser = bundle_parser()
    return {key: bool(parser.get_parsed_content(key)) for key in ("channels_last", "cpu_bf16")}


def build_network(
    classes: int,
    overrides: dict | None = None,
    channels_last: bool | None = None,
    cpu_bf16: bool | None = None,
):
    """The 3D bundle's network as its ``inference.json`` runs it on the CPU (random weights): ``network_def``
    with ``out_channels=classes`` and ``overrides`` of its arguments (``--quick`` only), in eval mode, through
    ``monai_resunet.networks.configure_execution`` with the bundle's ``channels_last`` and ``cpu_bf16`` flags, or
    with either flag overridden here (``None``: the bundle's value; the knobs section measures each)."""
    from monai_resunet.networks import configure_execution

    parser = bundle_parser()
    parser["num_classes"] = classes
    for key, value in (overrides or {}).items():
        parser[f"network_def#{key}"] = value
    flags = bundle_execution_flags()
    if channels_last is not None:
        flags["channels_last"] = channels_last
    if cpu_bf16 is not None:
        flags["cpu_bf16"] = cpu_bf16
    network = parser.get_parsed_content("network_def", instantiate=True).eval()
    return configure_execution(network, "cpu", **flags)


def bundle_inferer_settings() -> dict[str, Any]:
    """``sw_batch_size``, ``overlap``, ``mode``, ``slab_dim`` and ``slab_size`` of the 3D bundle's inferer (a
    ``SlabArgmaxInferer``), as its ``inference.json`` builds it."""
    inferer = bundle_parser().get_parsed_content("inferer")
    return {
        "sw_batch_size": int(inferer.sw_batch_size),
        "overlap": inferer.overlap,
        "mode": str(getattr(inferer.mode, "value", inferer.mode)),  # a BlendMode, stored by look_up_option
        "slab_dim": int(inferer.slab_dim),
        "slab_size": inferer.slab_size,  # None: one window's depth
    }


def bundle_label_writer() -> Any:
    """The ``writer`` of the 3D bundle's ``SaveImaged`` step (``inference.json``'s postprocessing), or ``None``
    for MONAI's default writer by extension."""
    parser = bundle_parser()
    steps = parser.get("postprocessing#transforms")
    save = next(i for i, t in enumerate(steps) if str(t.get("_target_", "")).endswith("SaveImaged"))
    key = f"postprocessing#transforms#{save}#writer"
    return parser.get_parsed_content(key) if key in parser else None


def network_description(overrides: dict | None = None) -> str:
    """The network of this benchmark in words, from the bundle's ``network_def`` and execution flags."""
    parser = bundle_parser()
    net = dict(parser.get("network_def"))
    net.update(overrides or {})
    features = net.get("features", [])
    blocks = net.get("encoder_blocks")
    norm = net.get("norm")
    stem = int(net.get("stem_stride", 1))
    upsample = net.get("upsample", "nontrainable")  # ResUNet's default; up_kernel_size only applies to it
    parts = [
        f"{net.get('_target_', '?')} features {features[0]}…{features[-1]}" if features else str(net.get("_target_")),
        "encoder blocks " + ("-".join(map(str, blocks)) if isinstance(blocks, list) else str(blocks)),
        f"{norm[0] if isinstance(norm, (list, tuple)) else norm} norm",
        f"{net.get('downsample', '?')} down-sampling",
        f"stem_stride {stem}" + (" (the top level runs at half resolution)" if stem == 2 else ""),
        *([f"full_res {net.get('full_res', 'block')}"] if stem == 2 else []),
        f"{upsample} up-sampling"
        + (f", up_kernel_size {net.get('up_kernel_size', 2)}" if upsample == "nontrainable" else ""),
    ]
    flags = bundle_execution_flags()
    raw_bf16 = parser.get("cpu_bf16")
    bf16 = f"`{raw_bf16.lstrip('$')}`" if isinstance(raw_bf16, str) and raw_bf16.startswith("$") else "set"
    return (
        f"{', '.join(parts)}; execution flags (`configure_execution`): channels_last={flags['channels_last']}, "
        f"cpu_bf16={flags['cpu_bf16']} ({bf16} in the config: bfloat16 autocast of the network's forward on CPU "
        "inputs, float32 outputs)"
    )


class ScoreStub(torch.nn.Module):
    """A stand-in network for measuring stitching: ``classes`` scores per voxel, the window times one weight per
    class. Nearly free and allocates only its output."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.linspace(-1.0, 1.0, classes).reshape(1, classes, 1, 1, 1))

    def forward(self, x):
        return x * self.weight


def count_flops(network: Any, shape: Sequence[int]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        network(torch.zeros(*shape))
    return counter.get_total_flops()


def conv_reference(size: int, threads: int, repeats: int = 3) -> dict[str, float]:
    """GFLOP/s of one plain ``Conv3d(32, 32, 3, padding=1)`` on a contiguous ``(1, 32, size³)`` tensor: what this
    machine's convolution kernels reach right now, the yardstick for the network's rate. In float32, and under
    ``torch.autocast("cpu", bfloat16)`` too where the CPU has bf16 units (the bundle's network then runs so)."""
    from monai_resunet.networks import cpu_has_bf16

    torch.set_num_threads(threads)
    conv = torch.nn.Conv3d(32, 32, 3, padding=1).eval()
    x = torch.randn(1, 32, size, size, size)
    flops = count_flops(conv, x.shape)  # the same FLOPs in either precision
    precisions = [("", False)] + ([("_bf16", True)] if cpu_has_bf16() else [])
    result = {"conv_gflop": flops / 1e9}
    for suffix, bf16 in precisions:
        times = []
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            conv(x)  # warm-up: oneDNN creates the primitive for this precision
            for _ in range(repeats):
                t0 = time.perf_counter()
                conv(x)
                times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        result[f"conv{suffix}_s"] = med
        result[f"conv{suffix}_gflops_per_s"] = flops / 1e9 / med
    return result


def write_synthetic_ct(path: Path, shape: Sequence[int], spacing: Sequence[float] = CT_SPACING, seed: int = 0) -> Path:
    """An int16 NIfTI that looks like an abdominal CT to the pre-processing: air (-1000 HU) around an elliptic
    body (40 HU) with a liver (60 HU), lungs (-850 HU) in the upper third, a spine (700 HU) and 20 HU noise.
    The affine is diagonal with negative x and y (LPS-like, as DICOM conversions give), so ``Orientationd`` to
    RAS really flips. Written z-chunk by z-chunk so that a 512×512×1000 volume needs no float copy."""
    import nibabel as nib
    import numpy as np

    nx, ny, nz = (int(s) for s in shape)
    sx, sy, sz = spacing
    rng = np.random.default_rng(seed)
    x = (np.arange(nx) - nx / 2)[:, None] * sx
    y = (np.arange(ny) - ny / 2)[None, :] * sy
    fx, fy = nx * sx, ny * sy

    def ellipse(cx, cy, ax, ay):
        return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1

    body = ellipse(0, 0.03 * fy, 0.40 * fx, 0.30 * fy)
    base = np.where(body, 40, -1000).astype(np.int16)
    base[ellipse(0, 0.2 * fy, 0.04 * fx, 0.04 * fx)] = 700  # spine
    abdomen = base.copy()
    abdomen[ellipse(-0.15 * fx, -0.02 * fy, 0.16 * fx, 0.14 * fy)] = 60  # liver
    thorax = base.copy()
    for side in (-1, 1):
        thorax[ellipse(side * 0.17 * fx, -0.02 * fy, 0.13 * fx, 0.17 * fy)] = -850  # lungs
    data = np.empty((nx, ny, nz), dtype=np.int16)
    chunk = 16
    for z0 in range(0, nz, chunk):
        z1 = min(nz, z0 + chunk)
        noise = rng.normal(0, 20, size=(nx, ny, z1 - z0)).astype(np.float32)
        for z in range(z0, z1):
            template = thorax if z >= nz * 2 // 3 else abdomen
            data[:, :, z] = np.clip(template + noise[:, :, z - z0], -1024, 3071)
    affine = np.diag([-sx, -sy, sz, 1.0])
    affine[:3, 3] = [fx / 2, fy / 2, -nz * sz / 2]
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm")
    nib.save(image, str(path))
    return path


def _stage_name(transform: Any) -> str:
    names = {
        "LoadImaged": "load",
        "EnsureChannelFirstd": "load: channel first",
        "Orientationd": "pre: orientation (RAS)",
        "Spacingd": "pre: spacing",
        "SlabSpacingd": "pre: spacing",
        "CropForegroundd": "pre: crop foreground",
        "NormalizeByModalityd": "pre: intensity",
        "EnsureTyped": "pre: ensure type",
        "SpatialPadd": "pre: pad",
    }
    return names.get(type(transform).__name__, f"pre: {type(transform).__name__}")


PREPROCESSING_VARIANTS = ("library", "whole_volume_spacing", "float32_load", "float64_resample_first")


def preprocessing_chain(variant: str = "library", modality: str = "CT", pixdim: Sequence[float] = PIXDIM) -> list:
    """``segmentation_preprocessing`` for one image key, as the library builds it, or one of the chains it replaced,
    each variant undoing one more change.

    ``library``: as is (``LoadImaged`` in the file's dtype, the body crop, then ``SlabSpacingd`` resampling into
    float32 one slab at a time). ``whole_volume_spacing``: the same with MONAI's ``Spacingd`` (one ``grid_sample``
    over the whole output). ``float32_load``: that with MONAI's default ``LoadImaged`` dtype (float32 at once).
    ``float64_resample_first``: that with ``Spacingd`` in MONAI's default dtype (float64) before
    ``CropForegroundd``, so the whole field of view is resampled and the crop is taken on the resampled grid (which
    therefore starts elsewhere, within a voxel of the library's).
    """
    import numpy as np
    from monai.transforms import CropForegroundd, LoadImaged, Spacingd

    from monai_resunet.transforms import segmentation_preprocessing

    chain = segmentation_preprocessing(
        keys=["image"], image_key="image", pixdim=pixdim, modality=modality, ct_window=CT_WINDOW
    )
    if variant not in PREPROCESSING_VARIANTS:
        raise ValueError(f"unknown pre-processing variant {variant!r}")
    steps = PREPROCESSING_VARIANTS.index(variant)
    if steps >= 1:  # MONAI's whole-volume Spacingd
        chain = [Spacingd("image", pixdim=pixdim, mode="bilinear", dtype=np.float32) if isinstance(t, Spacingd)
                 else t for t in chain]  # fmt: skip
    if steps >= 2:  # float32 loading
        chain = [LoadImaged("image", image_only=True) if isinstance(t, LoadImaged) else t for t in chain]
    if steps >= 3:  # float64, and the whole field of view resampled before the crop
        chain = [Spacingd("image", pixdim=pixdim, mode="bilinear") if isinstance(t, Spacingd) else t for t in chain]
        crop = next(i for i, t in enumerate(chain) if isinstance(t, CropForegroundd))
        spacing = next(i for i, t in enumerate(chain) if isinstance(t, Spacingd))
        chain.insert(crop, chain.pop(spacing))
    return chain


def run_preprocessing(chain: list, path: str, clock: Clock) -> dict:
    from monai.transforms import apply_transform

    data: Any = {"image": path}
    for t in chain:
        data = clock.run(_stage_name(t), lambda t=t, d=data: apply_transform(t, d))
    return data


def chunked_argmax(pred, out_dtype=None):
    """``pred.argmax(1, keepdim=True)`` as uint8, a few slices at a time (no int64 copy of a whole volume)."""

    out = torch.empty((pred.shape[0], 1, *pred.shape[2:]), dtype=out_dtype or torch.uint8)
    step = max(1, pred.shape[-1] // 16)
    for z in range(0, pred.shape[-1], step):
        out[..., z : z + step] = pred[..., z : z + step].argmax(1, keepdim=True)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Children: one configuration each
# ----------------------------------------------------------------------------------------------------------------


# the pipelines of child_inference: the bundle's label path, the class-score path it replaced, and the label path
# with MONAI's Invertd in place of InvertLabelMapd (what the label path was before it), so that its effect shows
PIPELINES = ("bundle", "scores", "labels_invertd")


def child_inference(p: dict) -> dict:
    """One end-to-end inference of ``p["image"]``; ``p["pipeline"]`` (see ``PIPELINES``) is ``"bundle"`` (the
    bundle's ``SlabArgmaxInferer`` → ``InvertLabelMapd`` → ``SaveImaged``), ``"scores"`` (``SlidingWindowInferer``
    → softmax → ``Invertd`` bilinear → arg-max → ``SaveImaged``) or ``"labels_invertd"`` (``SlabArgmaxInferer`` →
    ``Invertd(nearest_interp=True)`` → ``SaveImaged``)."""
    import numpy as np
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import Activationsd, AsDiscreted, Compose, Invertd, SaveImaged

    from monai_resunet.inference.inferers import SlabArgmaxInferer
    from monai_resunet.transforms import InvertLabelMapd

    pipeline = p["pipeline"]
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown pipeline {pipeline!r}")
    torch.set_num_threads(p["threads"])
    result: dict[str, Any] = {
        "baseline_mib": maxrss_mib(),
        "baseline_packages": optional_packages_imported(),
        "load_start": loadavg(),
    }
    clock = Clock()
    chain = preprocessing_chain(p.get("preprocessing", "library"))
    data = run_preprocessing(chain, p["image"], clock)
    result["model_grid"] = list(data["image"].shape[1:])

    torch.manual_seed(0)  # the same random weights in every pipeline's process, so their labels compare
    if p.get("network_stub"):
        # memory runs on long scans: the stitching, resampling and writing are what grow with the scan; the
        # network's activations are per window batch (the knobs section measures them)
        network = ScoreStub(p["classes"])
    else:
        result["execution"] = bundle_execution_flags()
        network = build_network(p["classes"], p.get("network"), **result["execution"])
    timed = TimedNetwork(network)
    roi = p["roi"]
    settings = bundle_inferer_settings()
    if pipeline == "scores":
        inferer = SlidingWindowInferer(roi, settings["sw_batch_size"], settings["overlap"], mode=settings["mode"])
    else:  # both label pipelines run the bundle's inferer as its config sets it up
        inferer = SlabArgmaxInferer(
            roi,
            settings["sw_batch_size"],
            settings["overlap"],
            mode=settings["mode"],
            slab_size=settings["slab_size"],
            slab_dim=settings["slab_dim"],
        )
    inputs = data["image"][None]
    w0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():  # as the bundle's SupervisedEvaluator runs it
        pred = inferer(inputs, timed)
    total, total_cpu = time.perf_counter() - w0, time.process_time() - c0
    clock.add("network", timed.seconds, timed.cpu_seconds)
    clock.add("stitching", total - timed.seconds, total_cpu - timed.cpu_seconds)
    del inputs
    if p.get("save_model_grid"):  # for the agreement of the two inferers; after the inferer, outside the stages
        grid = chunked_argmax(pred) if pipeline == "scores" else pred.as_tensor()
        np.save(p["save_model_grid"], grid.numpy().astype(np.uint8))
        del grid
    data["pred"] = pred[0]
    del pred
    save = SaveImaged(
        "pred",
        output_dir=p["out_dir"],
        output_ext=".nii.gz",
        output_dtype=np.uint8,
        output_postfix=pipeline,
        resample=False,
        separate_folder=False,
        print_log=False,
        # the bundle's writer for its own path (LabelMapWriter: atomic, x-fastest copy); MONAI's for the paths before
        writer=bundle_label_writer() if pipeline == "bundle" else None,
    )
    if pipeline == "bundle":
        invert = InvertLabelMapd("pred", transform=Compose(chain), orig_key="image")
        data = clock.run("inversion (InvertLabelMapd)", lambda d=data: invert(d))
    elif pipeline == "scores":
        invert = Invertd("pred", transform=Compose(chain), orig_keys="image", nearest_interp=False, to_tensor=True)
        data = clock.run("softmax", lambda d=data: Activationsd("pred", softmax=True)(d))
        data = clock.run("inversion (Invertd, bilinear)", lambda d=data: invert(d))
        data = clock.run("arg-max", lambda d=data: AsDiscreted("pred", argmax=True)(d))
    else:
        invert = Invertd("pred", transform=Compose(chain), orig_keys="image", nearest_interp=True, to_tensor=True)
        data = clock.run("inversion (Invertd, nearest)", lambda d=data: invert(d))
    clock.run("write (NIfTI)", lambda d=data: save(d))
    result["output_shape"] = list(data["pred"].shape[1:])
    peak = maxrss_mib()
    del data
    gc.collect()
    result.update(
        stages=clock.stages, peak_mib=peak, windows=timed.windows, network_calls=timed.calls, out_dir=p["out_dir"]
    )
    result["network_cpu_share"] = timed.cpu_seconds / max(timed.seconds, 1e-9) / p["threads"]
    if not p.get("network_stub"):
        result["window_gflop"] = count_flops(network, (1, 1, *roi)) / 1e9
        result["network_gflops_per_s"] = result["window_gflop"] * timed.windows / max(timed.seconds, 1e-9)
        result.update(conv_reference(p["conv_size"], p["threads"]))
    result["load_end"] = loadavg()
    return result


def child_inferer(p: dict) -> dict:
    """Stitching alone on a float32 volume of ``p["shape"]``: ``ScoreStub`` is the network."""
    from monai.inferers import SlidingWindowInferer

    from monai_resunet.inference.inferers import SlabArgmaxInferer

    torch.set_num_threads(p["threads"])
    torch.manual_seed(0)
    stub = ScoreStub(p["classes"])
    x = torch.randn(1, 1, *p["shape"])
    base = maxrss_mib()
    timed = TimedNetwork(stub)
    settings = bundle_inferer_settings()
    args = (p["roi"], settings["sw_batch_size"], settings["overlap"])
    kind = p["variant"]["kind"]
    w0 = time.perf_counter()
    with torch.no_grad():
        if kind == "sliding":
            buffer = {k: p["variant"][k] for k in ("buffer_steps", "buffer_dim") if k in p["variant"]}
            pred = SlidingWindowInferer(*args, mode=settings["mode"], **buffer)(x, timed)
            labels = chunked_argmax(pred)
            del pred
        else:
            labels = SlabArgmaxInferer(
                *args,
                mode=settings["mode"],
                slab_size=p["variant"].get("slab_size"),
                slab_dim=p["variant"].get("slab_dim", -1),
            )(x, timed)
    total = time.perf_counter() - w0
    return {
        "s": total,
        "network_s": timed.seconds,
        "stitch_s": total - timed.seconds,
        "windows": timed.windows,
        "rise_mib": maxrss_mib() - base,
        "input_mib": float32_mib(p["shape"]),
        "label_dtype": str(labels.dtype).replace("torch.", ""),
    }


def child_knob(p: dict) -> dict:
    """The network on one batch of ``sw_batch_size`` windows under one setting; ``p["channels_last"]`` and
    ``p["cpu_bf16"]`` override the bundle's execution flags (absent: the bundle's)."""

    torch.set_num_threads(p["threads"])
    torch.manual_seed(0)
    flags = bundle_execution_flags()
    flags.update({k: bool(p[k]) for k in flags if p.get(k) is not None})
    network = build_network(p["classes"], p.get("network"), **flags)
    # a contiguous input, as the inferers cut windows: channels-last weights make the first convolution's output
    # channels-last, and every later layer follows
    x = torch.randn(p["sw_batch_size"], 1, *p["roi"])
    grad_mode = torch.inference_mode if p.get("inference_mode") else torch.no_grad
    base = maxrss_mib()
    times = []
    cpu0 = None
    with grad_mode():
        for i in range(1 + p["repeats"]):  # the first call is the warm-up (oneDNN primitive creation)
            if i == 1:
                cpu0 = time.process_time()
            t0 = time.perf_counter()
            out = network(x)
            times.append(time.perf_counter() - t0)
            del out
    timed = times[1:]
    cpu_share = (time.process_time() - cpu0) / sum(timed) / p["threads"]
    gflop = count_flops(network, (1, 1, *p["roi"])) / 1e9
    med = statistics.median(timed)
    return {
        "s_per_window": med / p["sw_batch_size"],
        "gflops_per_s": gflop * p["sw_batch_size"] / med,
        "rise_mib": maxrss_mib() - base,
        "cpu_share": cpu_share,
        "times": timed,
        "execution": flags,
    }


def child_preprocessing(p: dict) -> dict:
    import numpy as np

    torch.set_num_threads(p["threads"])
    clock = Clock()
    base = maxrss_mib()
    data = run_preprocessing(preprocessing_chain(p["variant"]), p["image"], clock)
    image = data["image"]
    result = {
        "stages": clock.stages,
        "peak_mib": maxrss_mib(),
        "baseline_mib": base,
        "shape": list(image.shape[1:]),
        "affine": image.affine.tolist(),
    }
    if p.get("save"):
        np.save(p["save"], image.numpy())
    return result


def _training_loader(p: dict, parser, datalist: list, preprocessing, batch_size: int):
    """The loader of one training configuration: ``dataset`` "bundle" is the config's own ``train#dataloader``
    (and its ``train#dataset``), as the bundle's training builds them for a CPU device."""
    from monai.data import CacheDataset, DataLoader, Dataset, ThreadDataLoader

    if p["dataset"] == "bundle":
        return parser.get_parsed_content("train#dataloader")
    if p["dataset"] == "CacheDataset":
        dataset = CacheDataset(
            datalist, preprocessing, cache_rate=1.0, num_workers=p["num_workers"] or None, progress=False
        )
    else:
        dataset = Dataset(datalist, preprocessing)
    if p["loader"] == "ThreadDataLoader":
        return ThreadDataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=p["num_workers"])
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=p["num_workers"],
        persistent_workers=p["num_workers"] > 0,
    )  # fmt: skip


def child_training(p: dict) -> dict:
    from monai.bundle import ConfigParser

    import monai_resunet  # noqa: F401

    torch.set_num_threads(p["threads"])
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser["dataset_dir"] = p["dataset_dir"]
    parser["patch_size"] = p["patch"]
    if p["num_workers"] is not None:  # None: the bundle's own value
        parser["num_workers"] = p["num_workers"]
    parser["device"] = torch.device("cpu")
    parser["image_reader"] = None  # the demo data is NIfTI; MONAI picks the reader by suffix
    for key, value in (p.get("network") or {}).items():
        parser[f"network_def#{key}"] = value
    preprocessing = parser.get_parsed_content("train#preprocessing")
    datalist = parser.get_parsed_content("train#dataset#data")
    # the config's "network" entry, not "network_def": it applies the bundle's execution flags (channels-last,
    # bf16 autocast on a CPU with bf16 units) through configure_execution, as the bundle's training does
    network = parser.get_parsed_content("network").train()
    loss_fn = parser.get_parsed_content("loss")
    optimizer = parser.get_parsed_content("optimizer")
    batch_size = parser.get_parsed_content("batch_size")
    result: dict[str, Any] = {
        "cases": len(datalist),
        "batch_size": batch_size,
        "num_samples": parser.get_parsed_content("num_samples"),
        "execution": {key: bool(parser.get_parsed_content(key)) for key in ("channels_last", "cpu_bf16")},
    }
    t0 = time.perf_counter()
    loader = _training_loader(p, parser, datalist, preprocessing, batch_size)  # fills a CacheDataset
    result.update(cache_s=time.perf_counter() - t0, loader_class=type(loader).__name__, workers=loader.num_workers)
    waits, computes, patches = [], [], 0

    def batches():
        while True:
            yield from loader

    stream = batches()
    for i in range(p["warmup"] + p["iters"]):
        t0 = time.perf_counter()
        batch = next(stream)
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(network(batch["image"]), batch["label"])
        loss.backward()
        optimizer.step()
        t2 = time.perf_counter()
        if i >= p["warmup"]:  # the first iterations start the workers and create the oneDNN primitives
            waits.append(t1 - t0)
            computes.append(t2 - t1)
            patches += int(batch["image"].shape[0])
    total = sum(waits) + sum(computes)
    result.update(
        it_per_s=len(waits) / total,
        wait_s=sum(waits) / len(waits),
        compute_s=sum(computes) / len(waits),
        patches_per_it=patches / len(waits),
        peak_mib=maxrss_mib(),
    )
    return result


def child_agreement(p: dict) -> dict:
    """On labelled demo volumes: SlabArgmaxInferer vs SlidingWindowInferer arg-max on the model grid, and the
    bundle's label path (``SlabArgmaxInferer`` → ``InvertLabelMapd``) vs the class-score path (softmax →
    ``Invertd`` bilinear → arg-max) on the input grid, with Dice of each against the ground truth; and
    ``InvertLabelMapd`` vs ``Invertd(nearest_interp=True)`` on the same labels."""
    import nibabel as nib
    import numpy as np
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import Activationsd, AsDiscreted, Compose, Invertd

    from monai_resunet.data import make_demo_dataset
    from monai_resunet.inference.inferers import SlabArgmaxInferer
    from monai_resunet.inference.segmenter import load_checkpoint
    from monai_resunet.transforms import InvertLabelMapd

    torch.set_num_threads(p["threads"])
    torch.manual_seed(0)
    network = build_network(3, p.get("network"))  # with the bundle's execution flags, as it runs
    weights = "random (seed 0)"
    if p.get("checkpoint"):
        load_checkpoint(network, p["checkpoint"])
        weights = f"trained: {p['checkpoint']}"
    chain = preprocessing_chain("library", modality="MR")
    settings = bundle_inferer_settings()
    args = (p["roi"], settings["sw_batch_size"], settings["overlap"])
    slab_dims = sorted({-1, 0, settings["slab_dim"]})
    cases = []
    for spacing in p["spacings"]:
        folder = Path(p["workdir"]) / f"agreement_{'x'.join(map(str, spacing))}"
        root = make_demo_dataset(folder, num_train=p["cases"], num_test=0, size=p["size"], spacing=spacing, seed=7)
        cases += [(spacing, root, case) for case in sorted((root / "imagesTr").glob("*.nii.gz"))]
    rows = []
    for spacing, root, case in cases:
        data = run_preprocessing(chain, str(case), Clock())
        x = data["image"][None]
        with torch.no_grad():
            scores = SlidingWindowInferer(*args, mode=settings["mode"])(x, network)
            slab = {
                d: SlabArgmaxInferer(*args, mode=settings["mode"], slab_size=p["slab_size"], slab_dim=d)(x, network)
                for d in slab_dims
            }
        full = scores.argmax(1, keepdim=True).to(torch.uint8)
        row = {"case": case.name, "spacing": list(spacing), "model_grid": list(x.shape[2:])}
        for d, labels in slab.items():
            row[f"model_grid_equal_dim{d}"] = float((labels == full).float().mean())
        score_path = {"image": data["image"], "pred": scores[0]}
        score_path = Activationsd("pred", softmax=True)(score_path)
        score_path = Invertd("pred", transform=Compose(chain), orig_keys="image", nearest_interp=False)(score_path)
        score_path = AsDiscreted("pred", argmax=True)(score_path)
        labels = slab[settings["slab_dim"]][0]
        bundle = InvertLabelMapd("pred", transform=Compose(chain), orig_key="image")(
            {"image": data["image"], "pred": labels}
        )
        invertd = Invertd("pred", transform=Compose(chain), orig_keys="image", nearest_interp=True)(
            {"image": data["image"], "pred": labels.clone()}
        )
        a = score_path["pred"][0].numpy().astype(np.uint8)
        b = np.asarray(bundle["pred"][0]).astype(np.uint8)
        c = np.asarray(invertd["pred"][0]).astype(np.uint8)
        truth = np.asarray(nib.load(str(root / "labelsTr" / case.name)).dataobj).astype(np.uint8)
        row["input_grid_equal"] = float((a == b).mean())
        row["inversion_equal"] = float((b == c).mean()) if b.shape == c.shape else 0.0
        for name, seg in (("scores", a), ("bundle", b)):
            dice = []
            for cls in (1, 2):
                inter = np.logical_and(seg == cls, truth == cls).sum()
                dice.append(2 * inter / max((seg == cls).sum() + (truth == cls).sum(), 1))
            row[f"dice_{name}"] = [float(v) for v in dice]
        rows.append(row)
    return {
        "weights": weights,
        "rows": rows,
        "roi": p["roi"],
        "size": p["size"],
        "slab_dims": slab_dims,
        "bundle_slab_dim": settings["slab_dim"],
        "execution": bundle_execution_flags(),
    }


CHILDREN: dict[str, Callable[[dict], dict]] = {
    "inference": child_inference,
    "inferer": child_inferer,
    "knob": child_knob,
    "preprocessing": child_preprocessing,
    "training": child_training,
    "agreement": child_agreement,
}


def child_main(kind: str, params_path: Path, result_path: Path, max_memory_gb: float) -> int:
    if max_memory_gb > 0:
        # an address-space limit makes a too-large allocation fail in this process (MemoryError) instead of
        # letting the kernel's OOM killer pick a victim on a shared machine; +1 GiB for torch's virtual slack
        limit = int((max_memory_gb + 1) * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    params = json.loads(params_path.read_text())
    try:
        result = CHILDREN[kind](params)
    except Exception as e:  # noqa: BLE001 - the row records the failure, the run goes on
        oom = isinstance(e, MemoryError) or any(s in str(e).lower() for s in ("out of memory", "allocate"))
        line = (str(e).strip().splitlines() or [""])[0][:160]
        result = {"error": ("out of memory: " if oom else "") + f"{type(e).__name__}: {line}", "peak_mib": maxrss_mib()}
        traceback.print_exc()
    result_path.write_text(json.dumps(result))
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Parent: schedule, collect, tabulate
# ----------------------------------------------------------------------------------------------------------------


class Runner:
    """Runs children in fresh processes, or in this process with ``in_process`` (``--quick``: imports take
    seconds per process; the peaks are then cumulative and say so)."""

    def __init__(self, workdir: Path, args: argparse.Namespace) -> None:
        self.workdir = workdir
        self.args = args
        self.count = 0

    def memory_limit_gb(self) -> float:
        """``--max-memory-gb``, lowered to what the machine has available now (other people's jobs use RAM too)."""
        if self.args.max_memory_gb <= 0:
            return 0.0
        try:
            line = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemAvailable"))
            available = int(line.split()[1]) / 2**20
        except (OSError, StopIteration):
            return self.args.max_memory_gb
        return max(2.0, min(self.args.max_memory_gb, available - 1.0))

    def __call__(self, kind: str, params: dict) -> dict:
        self.count += 1
        params = {"threads": self.args.threads, "network": self.args.network_overrides, **params}
        if self.args.in_process:
            try:
                return CHILDREN[kind](params)
            except Exception as e:  # noqa: BLE001 - the row records the failure, the run goes on
                traceback.print_exc()
                return {"error": f"{type(e).__name__}: {e}"}
        params_path = self.workdir / f"child_{self.count}_{kind}.json"
        result_path = params_path.with_suffix(".result.json")
        params_path.write_text(json.dumps(params))
        limit = self.memory_limit_gb()
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            kind,
            "--params",
            str(params_path),
            "--result",
            str(result_path),
            "--max-memory-gb",
            f"{limit:.1f}",
        ]
        error = None
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.args.case_timeout)
            if proc.returncode < 0:
                name = signal.Signals(-proc.returncode).name if -proc.returncode in signal.valid_signals() else "?"
                error = f"killed by {name}" + (" (out of memory?)" if proc.returncode == -signal.SIGKILL else "")
            elif proc.returncode != 0:
                error = f"exit {proc.returncode}: {(proc.stderr.strip().splitlines() or ['?'])[-1][:160]}"
        except subprocess.TimeoutExpired:
            error = f"timed out after {self.args.case_timeout:g} s"
        result = json.loads(result_path.read_text()) if result_path.exists() else {}
        if error and not result.get("error"):
            result["error"] = error
        if result.get("error") and limit > 0:
            result["error"] += f" (address-space limit {limit:.1f} GiB)"
        print(f"    {summary(result)}", flush=True)
        return result


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.{digits}g}"
    return str(v)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(fmt(c).replace("|", "\\|") for c in row) + " |")
    return lines + [""]


def shape_str(shape: Sequence[int]) -> str:
    return "×".join(map(str, shape))


def slug(name: str) -> str:
    """A file-name-safe form of a row name ("labels + Invertd" -> "labels_Invertd")."""
    return "_".join("".join(c if c.isalnum() else " " for c in name).split())


def network_vs_conv(r: dict) -> str:
    """The network's GFLOP/s as a share of the plain ``Conv3d``'s in the precision the network ran in (bf16
    autocast or float32), and which one that was."""
    if "network_gflops_per_s" not in r or "conv_gflops_per_s" not in r:
        return "–"
    bf16 = r.get("execution", {}).get("cpu_bf16", False)
    if bf16 and "conv_bf16_gflops_per_s" in r:
        return f"{100 * r['network_gflops_per_s'] / r['conv_bf16_gflops_per_s']:.0f}% (bf16)"
    note = " (network bf16, no bf16 reference)" if bf16 else " (float32)"
    return f"{100 * r['network_gflops_per_s'] / r['conv_gflops_per_s']:.0f}%{note}"


def summary(r: dict) -> str:
    if r.get("error"):
        return f"error: {r['error']}"
    keys = [k for k in ("peak_mib", "it_per_s", "s", "s_per_window", "rise_mib") if k in r]
    total = f"total {sum(s['s'] for s in r['stages']):.1f} s, " if "stages" in r else ""
    return total + ", ".join(f"{k} {fmt(r[k])}" for k in keys)


def _peak_stage(stages: Sequence[dict]) -> str:
    # the first stage after which ru_maxrss had reached its final value
    top = max(s["peak_mib"] for s in stages)
    return next(s["stage"] for s in stages if s["peak_mib"] >= top - 1)


class Benchmark:
    """The sections, in the order they run; each appends Markdown and the report is rewritten after each, so a
    long run that is stopped still leaves what it had measured."""

    def __init__(self, args: argparse.Namespace, argv: Sequence[str], workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.runner = Runner(workdir, args)
        self.info = machine_info(threads=args.threads)
        self.report: dict[str, Any] = {"info": self.info}
        self.t_start = time.perf_counter()
        self.path = (
            args.out or DEFAULT_OUT
        ) / f"{args.name or ('speed_benchmark_quick' if args.quick else 'speed_benchmark')}.md"
        self._ct: dict[tuple[int, ...], Path] = {}
        description = network_description(args.network_overrides)
        net = (
            f"a reduced network for the smoke test (`network_def` with {json.dumps(args.network_overrides)}: "
            f"{description})"
            if args.network_overrides
            else f"the 3D bundle's `network_def` ({description})"
        )
        settings = bundle_inferer_settings()
        self.md = [
            "# 3D bundle speed and memory benchmark" + (" (--quick smoke test)" if args.quick else ""),
            "",
            f"- **Machine**: {self.info['cpu']}, {self.info['logical_cpus']} logical CPUs, {self.info['ram']} RAM; "
            f"`torch.set_num_threads({self.info['threads']})`; no GPU",
            f"- **Software**: Python {self.info['python']}, torch {self.info['torch']}, MONAI {self.info['monai']}",
            f"- **Date**: {self.info['date']}; load average (1/5/15 min) at the start: {self.info['load']}",
            f"- **Command**: `{' '.join(['python pipelines/benchmark_speed.py', *argv])}`",
            "- "
            + (
                "`--quick` runs every configuration in this one process: peak RSS values are cumulative over "
                "the run, only the tables' shape means anything"
                if args.in_process
                else "Each configuration ran in its own process with an address-space limit of "
                f"{args.max_memory_gb:g} GiB, or 1 GiB less than the machine had available at its start if that "
                "was less (+1 GiB of virtual slack); peak RSS = that process's "
                "`ru_maxrss` (imports, weights, data, activations, allocator slack)."
            ),
            f"- **Network**: {net}, {args.classes} classes, random weights unless said otherwise; window "
            f"{shape_str(args.roi)}, the bundle's {', '.join(f'{k}={v}' for k, v in settings.items())}.",
            "",
        ]

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tail = [f"Wall time so far {(time.perf_counter() - self.t_start) / 60:.1f} min; load average now: {loadavg()}."]
        self.path.write_text("\n".join(self.md + tail) + "\n")

    def ct(self, shape: Sequence[int]) -> Path:
        key = tuple(shape)
        if key not in self._ct:
            print(f"writing a synthetic int16 CT {shape_str(shape)} ...", flush=True)
            self._ct[key] = write_synthetic_ct(self.workdir / f"ct_{'x'.join(map(str, shape))}.nii.gz", shape)
            # on disk before anything is timed: the kernel's write-back of the fresh file otherwise runs during the
            # first configuration (it made one bundle run's orientation and spacing steps 4-10x slower)
            os.sync()
        return self._ct[key]

    @staticmethod
    def model_grid(shape: Sequence[int]) -> list[int]:
        return [round(s * sp / px) for s, sp, px in zip(shape, CT_SPACING, PIXDIM)]

    # -- inference ---------------------------------------------------------------------------------------------

    def _pipelines(self, shape: Sequence[int], pipelines: Sequence[tuple[str, dict]], save_grid: bool) -> dict:
        results = {}
        for name, extra in pipelines:
            print(f"  {name} on {shape_str(shape)} ...", flush=True)
            params = {
                "image": str(self.ct(shape)),
                "classes": self.args.classes,
                "roi": self.args.roi,
                "conv_size": self.args.conv_size,
                "out_dir": str(self.workdir / f"out_{slug(name)}_{shape_str(shape)}"),
                **extra,
            }
            if save_grid:
                params["save_model_grid"] = str(self.workdir / f"grid_{slug(name)}_{shape_str(shape)}.npy")
            results[name] = self.runner("inference", params)
        return results

    def _inference_tables(self, results: dict[str, dict], shape: Sequence[int]) -> list[str]:
        input_mib = float32_mib(shape)
        ok = {k: r for k, r in results.items() if "stages" in r}
        lines = []
        if ok:
            names = list(dict.fromkeys(s["stage"] for r in ok.values() for s in r["stages"]))
            header = ["stage"] + [f"{k}: {h}" for k in ok for h in ("s", "share", "peak RSS MiB")]
            rows = []
            for name in names:
                row: list[Any] = [name]
                for r in ok.values():
                    total = sum(s["s"] for s in r["stages"])
                    st = next((s for s in r["stages"] if s["stage"] == name), None)
                    row += [st["s"], f"{100 * st['s'] / total:.1f}%", st["peak_mib"]] if st else ["–", "–", "–"]
                rows.append(row)
            rows.append(
                ["**total**"] + [c for r in ok.values() for c in (sum(s["s"] for s in r["stages"]), "100%", "")]
            )
            lines += table(header, rows)
        header = [
            "pipeline",
            "total s",
            "windows",
            "model grid",
            "window GFLOP",
            "network GFLOP/s",
            "Conv3d float32 GFLOP/s",
            "Conv3d bf16 GFLOP/s",
            "network / Conv3d (same precision)",
            "network CPU use",
            "peak RSS MiB",
            "peak / float32 input",
            "peak reached in",
            "error",
        ]
        rows = []
        for k, r in results.items():
            if "stages" not in r:
                peak = r.get("peak_mib")
                rows.append(
                    [k]
                    + ["–"] * 9
                    + [peak, f"{peak / input_mib:.2f}× (at failure)" if peak else "–", "–", r.get("error", "?")]
                )
                continue
            rows.append(
                [
                    k,
                    sum(s["s"] for s in r["stages"]),
                    r["windows"],
                    shape_str(r["model_grid"]),
                    r.get("window_gflop"),
                    r.get("network_gflops_per_s"),
                    r.get("conv_gflops_per_s"),
                    r.get("conv_bf16_gflops_per_s"),
                    network_vs_conv(r),
                    f"{100 * r['network_cpu_share']:.0f}%",
                    r["peak_mib"],
                    f"{r['peak_mib'] / input_mib:.2f}×",
                    _peak_stage(r["stages"]),
                    r.get("error", ""),
                ]
            )
        lines += table(header, rows)
        base = next((r["baseline_mib"] for r in results.values() if "baseline_mib" in r), None)
        packages = next((r["baseline_packages"] for r in results.values() if "baseline_packages" in r), None)
        held = ""
        if packages:
            held = (
                f" (includes {', '.join(packages)}: not monai_resunet's dependencies; `import monai` loads them "
                "because this environment has them installed)"
            )
        elif packages is not None:
            held = " (none of MONAI's heavy optional packages is installed here)"
        lines.append(
            f"Input {shape_str(shape)} voxels: float32 size {input_mib:,.0f} MiB (int16 on disk, .nii.gz). "
            f"RSS after the imports: {fmt(base)} MiB{held}. Load average at the start → end of each process: "
            + "; ".join(f"{k} {r.get('load_start', '?')} → {r.get('load_end', '?')}" for k, r in results.items())
            + "."
        )
        return lines + [""]

    def _pipeline_text(self) -> str:
        settings = bundle_inferer_settings()
        flags = bundle_execution_flags()
        slab = "one window" if settings["slab_size"] is None else f"{settings['slab_size']} voxels"
        return (
            "`bundle`: the 3D bundle's inference as its `inference.json` runs it now, the label path: "
            f"`SlabArgmaxInferer` (slab_dim={settings['slab_dim']}, slab = {slab}) → `InvertLabelMapd` (labels "
            "back to the input grid by per-axis nearest-neighbour indices, 1 byte per voxel) → `SaveImaged` uint8 "
            "through its `LabelMapWriter` (atomic; the other two pipelines write with MONAI's `NibabelWriter`); "
            'its "stitching" includes the arg-max, which it does slab by slab. `scores`: the class-score path the '
            "bundle ran before (its config key `score_inferer`): `SlidingWindowInferer` → `Activationsd(softmax)` → "
            "`Invertd` bilinear → `AsDiscreted(argmax)` → `SaveImaged`. `labels + Invertd`: the bundle's inferer → "
            "`Invertd(nearest_interp=True)` → `SaveImaged`, the label path before `InvertLabelMapd`, so the "
            "difference to `bundle` is the inversion alone. All under `torch.no_grad()`, as the bundle's evaluator "
            "runs, with the network built as the bundle builds it (`configure_execution`, "
            f"channels_last={flags['channels_last']}, cpu_bf16={flags['cpu_bf16']}). Pre-processing: the library's "
            "`segmentation_preprocessing(modality='CT', pixdim=(1, 1, 1))` (body crop, then float32 resampling), "
            'each transform timed alone. "network" = the sum of the network\'s calls inside the inferer, '
            '"stitching" = the inferer\'s time minus that; "peak RSS" = the process\'s peak after the stage (it '
            "only grows, so the stage where it jumps is the one that needed the memory)."
        )

    def inference(self) -> None:
        import numpy as np

        args = self.args
        results = self._pipelines(args.shape, INFERENCE_PIPELINES, save_grid=True)
        self.report["inference"] = results
        self.md += ["## Inference, stage by stage", ""]
        self.md += [
            self._pipeline_text()
            + " Network GFLOP/s = FLOPs of one window (`FlopCounterMode`) × windows / network time, next to a "
            f"plain `Conv3d(32, 32, 3)` on a contiguous {self.args.conv_size}³ tensor timed in the same process "
            "after the pipeline, in float32 and (on a CPU with bf16 units) under bf16 autocast; the ratio uses "
            "the reference in the precision the network ran in.",
            "",
            f"### Input {shape_str(args.shape)} at {CT_SPACING} mm, {args.classes} classes",
            "",
        ]
        self.md += self._inference_tables(results, args.shape)
        grids = {k: self.workdir / f"grid_{slug(k)}_{shape_str(args.shape)}.npy" for k in ("bundle", "scores")}
        if all(g.exists() for g in grids.values()):
            a, b = (np.load(g, mmap_mode="r") for g in grids.values())
            self.md.append(
                f"Model-grid labels, the bundle's `SlabArgmaxInferer` vs the `SlidingWindowInferer` arg-max (random "
                f"weights): {100 * float((a == b).mean()):.4f}% equal voxels."
            )
        written = self._written_labels(results)
        if "bundle" in written and "scores" in written:
            a, b = written["bundle"], written["scores"]
            self.md.append(
                f"Written label maps, bundle (label path) vs scores path: {100 * float((a == b).mean()):.3f}% equal "
                f"voxels (random weights, {100 * float((b > 0).mean()):.1f}% foreground in the scores path's): "
                "nearest-neighbour inversion of labels vs bilinear inversion of probabilities; see the "
                "agreement section for a trained network."
            )
        if "bundle" in written and "labels + Invertd" in written:
            a, b = written["bundle"], written["labels + Invertd"]
            if a.shape != b.shape:
                outcome = f"different shapes, {shape_str(a.shape)} vs {shape_str(b.shape)}."
            elif (a == b).all():
                outcome = "identical."
            else:
                outcome = f"{100 * float((a == b).mean()):.4f}% equal voxels."
            self.md.append(
                "Written label maps, `InvertLabelMapd` vs `Invertd(nearest_interp=True)` on the same labels: " + outcome
            )
        self.md += ["", contention_note(results), ""]

    @staticmethod
    def _written_labels(results: dict[str, dict]) -> dict[str, Any]:
        """The label map each pipeline wrote, by pipeline name."""
        import nibabel as nib
        import numpy as np

        out = {}
        for k, r in results.items():
            files = sorted(Path(r["out_dir"]).glob("*.nii.gz")) if r.get("out_dir") else []
            if files:
                out[k] = np.asarray(nib.load(str(files[0])).dataobj)
        return out

    def memory(self) -> None:
        if not self.args.memory_shape:
            return
        stub = {"network_stub": self.args.memory_network == "stub"}
        pipelines = [(name, {**extra, **stub}) for name, extra in INFERENCE_PIPELINES]
        results = self._pipelines(self.args.memory_shape, pipelines, save_grid=False)
        self.report["memory"] = results
        self.md += ["## Memory on a huge scan", ""]
        self.md += [
            "The three pipelines of the inference section on a longer scan. "
            + self._pipeline_text()
            + " A row that reached the address-space limit shows the error and its peak RSS at the failure.",
            "",
            f"### Input {shape_str(self.args.memory_shape)} at {CT_SPACING} mm, {self.args.classes} classes",
            "",
        ]
        self.md += self._inference_tables(results, self.args.memory_shape)
        knob = next((k for k in self.report.get("knobs", []) if "rise_mib" in k), None)
        if self.args.memory_network == "stub":
            self.md.append(
                "The network here is `ScoreStub`, a per-class scaling of the input (`--memory-network stub`): "
                "every stage but the network is the real one. The bundle's network adds its activations for one "
                "window batch during the network stage only"
                + (f": {knob['rise_mib']:,.0f} MiB measured in the knobs section ({knob['name']})." if knob else ".")
            )
            if knob:
                rows = []
                input_mib = float32_mib(self.args.memory_shape)
                for name, r in results.items():
                    net = next((st for st in r.get("stages", []) if st["stage"] == "network"), None)
                    if net is None:
                        continue
                    during = net["rss_mib"] + knob["rise_mib"]
                    estimate = max(r["peak_mib"], during)
                    rows.append([name, r["peak_mib"], net["rss_mib"], during, estimate, f"{estimate / input_mib:.2f}×"])
                self.md += [""] + table(
                    ["pipeline", "peak RSS MiB (stub)", "RSS after the network stage MiB",
                     "+ activations MiB", "estimated peak with the bundle's network MiB", "/ float32 input"],
                    rows,
                )  # fmt: skip
        self.md.append("")

    # -- the other sections ------------------------------------------------------------------------------------

    def inferers(self) -> None:
        args = self.args
        half, four = args.roi[-1] // 2, args.roi[-1] * 4
        variants: list[tuple[str, dict]] = [
            ("SlidingWindowInferer + arg-max", {"kind": "sliding"}),
            (
                "SlidingWindowInferer buffer_steps=1, buffer_dim=-1 + arg-max",
                {"kind": "sliding", "buffer_steps": 1, "buffer_dim": -1},
            ),
            (
                "SlidingWindowInferer buffer_steps=4, buffer_dim=-1 + arg-max",
                {"kind": "sliding", "buffer_steps": 4, "buffer_dim": -1},
            ),
            ("SlabArgmaxInferer slab = window (default), slab_dim=-1", {"kind": "slab"}),
            (f"SlabArgmaxInferer slab {half}, slab_dim=-1", {"kind": "slab", "slab_size": half}),
            (f"SlabArgmaxInferer slab {four}, slab_dim=-1", {"kind": "slab", "slab_size": four}),
            ("SlabArgmaxInferer slab = window, slab_dim=0", {"kind": "slab", "slab_dim": 0}),
        ]
        settings = bundle_inferer_settings()
        variants = [
            (
                name + " (the bundle's)"
                if v["kind"] == "slab"
                and v.get("slab_dim", -1) == settings["slab_dim"]
                and v.get("slab_size") == settings["slab_size"]
                else name,
                v,
            )
            for name, v in variants
        ]
        shapes = [self.model_grid(args.shape)] + ([self.model_grid(args.memory_shape)] if args.memory_shape else [])
        rows, self.report["inferers"] = [], []
        for shape in shapes:
            for name, variant in variants:
                print(f"  {name} on {shape_str(shape)} ...", flush=True)
                r = self.runner(
                    "inferer", {"shape": shape, "classes": args.classes, "roi": args.roi, "variant": variant}
                )
                self.report["inferers"].append({"name": name, "shape": shape, **r})
                rows.append(
                    [
                        name,
                        shape_str(shape),
                        r.get("stitch_s"),
                        r.get("windows"),
                        r.get("rise_mib"),
                        f"{r['rise_mib'] / r['input_mib']:.2f}×" if "rise_mib" in r else "–",
                        r.get("label_dtype"),
                        r.get("error", ""),
                    ]
                )
        self.md += ["## Stitching options (the network replaced by a per-class scaling)", ""]
        self.md += [
            "A float32 volume the size of the scan's resampled grid (1 mm, without the body crop), already in "
            "memory; the network is `ScoreStub` (the window times one weight per class: a 1×1×1 `Conv3d` would "
            "add oneDNN's own buffers, 240 MiB measured), so time and memory are the inferer's own (window copies, "
            "weighting, adding, arg-max). The `SlidingWindowInferer` rows include an arg-max to uint8 done a few "
            'slices at a time (what a label map needs, without an int64 copy of the volume). "RSS rise" = peak RSS '
            "above the RSS with the input allocated. On this CPU-only machine `sw_device` and `device` are both the "
            "CPU: that split keeps the stitched map off a GPU, it cannot make it smaller. `buffer_steps` buffers "
            "windows on `sw_device` before adding them to the output, which is still allocated in full on `device`.",
            "",
        ]
        self.md += table(
            ["inferer", "volume", "stitching s", "windows", "RSS rise MiB", "rise / input", "output", "error"], rows
        )

    def knobs(self) -> None:
        args = self.args
        from monai_resunet.networks import cpu_has_bf16

        sw = bundle_inferer_settings()["sw_batch_size"]
        flags = bundle_execution_flags()
        native_bf16 = cpu_has_bf16()

        def describe(channels_last: bool, cpu_bf16: bool) -> str:
            if not (channels_last or cpu_bf16):
                return "float32, contiguous (no flags)"
            what = "channels_last" if channels_last else "bf16"
            what = "channels_last + bf16" if channels_last and cpu_bf16 else what + " only"
            # without bf16 units torch emulates bf16 convolutions: slower, which is why the bundle's flag is off there
            return what + (" (emulated: this CPU has no bf16 units)" if cpu_bf16 and not native_bf16 else "")

        # the bundle's execution flags are the baseline; every other combination of the two is a row of its own
        combos = [(cl, bf) for cl in (False, True) for bf in (False, True)]
        flag_rows = [
            (describe(cl, bf), {"channels_last": cl, "cpu_bf16": bf})
            for cl, bf in combos
            if (cl, bf) != (flags["channels_last"], flags["cpu_bf16"])
        ]
        baseline = (
            f"baseline, the bundle's flags ({describe(flags['channels_last'], flags['cpu_bf16'])}): "
            f"{args.threads} threads, no_grad, sw_batch_size {sw}"
        )
        knobs: list[tuple[str, dict]] = [
            (baseline, {}),
            *flag_rows,
            ("torch.inference_mode", {"inference_mode": True}),
            ("1 thread", {"threads": 1}),
            ("sw_batch_size 1", {"sw_batch_size": 1}),
            ("sw_batch_size 4", {"sw_batch_size": 4}),
        ]
        rows, self.report["knobs"], base = [], [], None
        for name, extra in knobs:
            print(f"  {name} ...", flush=True)
            r = self.runner(
                "knob",
                {"classes": args.classes, "roi": args.roi, "sw_batch_size": sw, "repeats": args.knob_repeats, **extra},
            )
            self.report["knobs"].append({"name": name, **r})
            base = base or r.get("s_per_window")
            rows.append(
                [
                    name,
                    r.get("s_per_window"),
                    r.get("gflops_per_s"),
                    f"{base / r['s_per_window']:.2f}×" if r.get("s_per_window") and base else "–",
                    r.get("rise_mib"),
                    f"{100 * r['cpu_share']:.0f}%" if "cpu_share" in r else "–",
                    r.get("error", ""),
                ]
            )
        self.md += ["## Network knobs (one batch of windows)", ""]
        self.md += [
            f"The network alone on {shape_str(args.roi)} windows (contiguous float32 input, as the inferers cut "
            "them), each setting in its own process: 1 warm-up call, then "
            f'{args.knob_repeats} timed calls, median per window. "RSS rise" = peak RSS above the value after '
            "building the network (the activations of one call). The baseline is the network as the bundle "
            "builds it (`configure_execution` with its `channels_last` and `cpu_bf16` flags; `cpu_bf16` is "
            f"`cpu_has_bf16()`, {native_bf16} on this machine); the flag rows change only those two flags, the "
            "other rows change one setting of the baseline. bf16 = bfloat16 autocast of the forward on CPU "
            "inputs (float32 weights and outputs); channels_last = `channels_last_3d` weights. GFLOP/s counts "
            "the same FLOPs in either precision.",
            "",
        ]
        self.md += table(
            ["setting", "s / window", "GFLOP/s", "speed vs baseline", "RSS rise MiB", "CPU use", "error"], rows
        )

    def preprocessing(self) -> None:
        import numpy as np

        args = self.args
        descriptions = {
            "library": "as `segmentation_preprocessing` builds it: LoadImaged in the file's dtype (int16 here), "
            "CropForegroundd, then SlabSpacingd(dtype=float32) (only the body is resampled, into float32, one slab "
            "of the output at a time)",
            "whole_volume_spacing": "the library chain with MONAI's Spacingd(dtype=float32) (the whole output in one "
            "grid_sample), its previous spacing step",
            "float32_load": "that with MONAI's default LoadImaged (float32 at once), the loader before",
            "float64_resample_first": "that with Spacingd in float64 (MONAI's default) on the whole field of view, "
            "then CropForegroundd: the chain before that",
        }
        variants = [(name, descriptions[name]) for name in PREPROCESSING_VARIANTS]
        results = {}
        for name, _ in variants:
            print(f"  {name} ...", flush=True)
            results[name] = self.runner(
                "preprocessing",
                {"image": str(self.ct(args.shape)), "variant": name, "save": str(self.workdir / f"pre_{name}.npy")},
            )
        self.report["preprocessing"] = results
        ref = self.workdir / "pre_library.npy"
        input_mib = float32_mib(args.shape)
        groups = ["load", "pre: orientation (RAS)", "pre: spacing", "pre: crop foreground", "pre: intensity"]
        rows = []
        for name, what in variants:
            r = results[name]
            if "stages" not in r:
                rows.append([name, what] + ["–"] * (len(groups) + 5) + [r.get("error", "?")])
                continue
            times = {g: sum(s["s"] for s in r["stages"] if s["stage"].startswith(g)) for g in groups}
            out, diff = self.workdir / f"pre_{name}.npy", "–"
            same_grid = r["shape"] == results["library"].get("shape") and np.allclose(
                r["affine"], results["library"].get("affine", np.zeros((4, 4))), atol=1e-4
            )
            if not same_grid:
                diff = "other grid"
            elif ref.exists() and out.exists():
                a, b = np.load(ref, mmap_mode="r"), np.load(out, mmap_mode="r")
                diff = f"{float(np.abs(a - b).max()):.2g}"
            rows.append(
                [name, what]
                + [times[g] for g in groups]
                + [
                    sum(s["s"] for s in r["stages"]),
                    r["peak_mib"],
                    f"{r['peak_mib'] / input_mib:.2f}×",
                    shape_str(r["shape"]),
                    diff,
                    r.get("error", ""),
                ]
            )
        self.md += ["## Pre-processing variants", ""]
        self.md += [
            f'On the {shape_str(args.shape)} synthetic CT, each variant in its own process. "max |diff|" is '
            'against the library chain\'s output (values in [0, 1] after the CT window); "other grid" where a '
            "variant's output grid differs from the library's (resampling before the crop: the crop is then taken "
            "on the resampled grid, whose origin and size can then differ from the library's by a fraction of a "
            'voxel or more, so voxels do not correspond one to one; the "output" column gives each size). '
            "The intensity step stays after resampling in every variant: this scan is down-sampled "
            "(0.7 → 1 mm, about half the voxels), so normalising afterwards touches fewer voxels, and the body "
            "crop thresholds raw Hounsfield units, so the window cannot come before the crop.",
            "",
        ]
        self.md += table(
            [
                "variant",
                "what",
                "load s",
                "orientation s",
                "spacing s",
                "crop s",
                "intensity s",
                "total s",
                "peak RSS MiB",
                "peak / float32 input",
                "output",
                "max \\|diff\\|",
                "error",
            ],
            rows,
        )

    def training(self) -> None:
        from monai_resunet.data import make_demo_dataset

        args = self.args
        demo = make_demo_dataset(self.workdir / "demo", num_train=args.train_cases, num_test=0, size=args.train_size)
        rows, self.report["training"] = [], []
        for dataset, loader, workers in args.train_configs:
            print(f"  {dataset} + {loader}, {workers} workers ...", flush=True)
            r = self.runner(
                "training",
                {
                    "dataset_dir": str(demo),
                    "patch": args.patch,
                    "dataset": dataset,
                    "loader": loader,
                    "num_workers": workers,
                    "iters": args.train_iters,
                    "warmup": 1,
                },
            )
            self.report["training"].append({"dataset": dataset, "loader": loader, "workers": workers, **r})
            share = r["wait_s"] / (r["wait_s"] + r["compute_s"]) if "wait_s" in r else None
            rows.append(
                [
                    "train.json's own" if dataset == "bundle" else dataset,
                    r.get("loader_class", loader),
                    r.get("workers", workers),
                    r.get("it_per_s"),
                    1 / r["it_per_s"] if r.get("it_per_s") else None,
                    r.get("wait_s"),
                    r.get("compute_s"),
                    f"{100 * share:.1f}%" if share is not None else "–",
                    r.get("cache_s"),
                    r.get("peak_mib"),
                    r.get("error", ""),
                ]
            )
        first = next((r for r in self.report["training"] if "batch_size" in r), {})
        self.md += ["## Training throughput", ""]
        self.md += [
            f"`train.json` as the bundle builds it (its deterministic + random transforms, network, DiceCE "
            f"loss, AdamW; `image_reader` null, as the demo data is NIfTI), the network through the config's "
            f"`configure_execution` (channels_last={first.get('execution', {}).get('channels_last')}, "
            f"cpu_bf16={first.get('execution', {}).get('cpu_bf16')}), patch {shape_str(args.patch)}, "
            f"batch_size {first.get('batch_size')} × num_samples {first.get('num_samples')} = "
            f"{fmt(first.get('patches_per_it'))} patches per iteration, {first.get('cases')} training volumes "
            f"of the demo data ({shape_str(args.train_size)} voxels, 1×1×1.5 mm). 1 warm-up iteration, then "
            f'{args.train_iters} timed. "data wait" = time in `next(loader)`, "compute" = forward + '
            'backward + optimizer step, "cache s" = filling the CacheDataset before the first '
            "iteration.",
            "",
        ]
        self.md += table(
            [
                "dataset",
                "loader",
                "workers",
                "it/s",
                "s / it",
                "data wait s / it",
                "compute s / it",
                "wait share",
                "cache s",
                "peak RSS MiB",
                "error",
            ],
            rows,
        )

    def agreement(self) -> None:
        args = self.args
        print("  demo volumes ...", flush=True)
        r = self.runner(
            "agreement",
            {
                "workdir": str(self.workdir),
                "checkpoint": args.checkpoint,
                "cases": args.agree_cases,
                "size": args.agree_size,
                "roi": args.agree_roi,
                "slab_size": args.agree_roi[-1] // 2,
                # the demo data's own spacing (the model grid is finer in z), and a CT-like one (coarser in-plane:
                # the way back to the scan's grid up-samples, where nearest-neighbour labels are blockiest)
                "spacings": [[1.0, 1.0, 1.5], list(CT_SPACING)],
            },
        )
        self.report["agreement"] = r
        self.md += ["## Agreement of the bundle's label path with the class-score path", ""]
        if "rows" not in r:
            self.md += [f"error: {r.get('error')}", ""]
            return
        dims, own = r["slab_dims"], r["bundle_slab_dim"]
        flags = r.get("execution", {})
        self.md += [
            f"Weights: {r['weights']}; the network as the bundle builds it (channels_last="
            f"{flags.get('channels_last')}, cpu_bf16={flags.get('cpu_bf16')}). Demo volumes (`make_demo_dataset`, "
            f"MR, rotated affine) of {shape_str(r['size'])} voxels at two spacings, resampled to the bundle's 1 mm; "
            f'window {shape_str(r["roi"])}, slab half a window. "model grid": `SlabArgmaxInferer` labels vs '
            '`SlidingWindowInferer(...)` arg-max, per slab_dim. "input grid": the bundle\'s label path '
            f"(`SlabArgmaxInferer` slab_dim={own} → `InvertLabelMapd`) vs the class-score path (softmax → "
            '`Invertd` bilinear → arg-max), as written. "InvertLabelMapd = Invertd nearest": the same labels '
            "inverted both ways. Dice per foreground class against the ground truth.",
            "",
        ]
        rows = [
            [
                x["case"],
                "×".join(f"{v:g}" for v in x["spacing"]),
                shape_str(x["model_grid"]),
                *(f"{100 * x[f'model_grid_equal_dim{d}']:.4f}%" for d in dims),
                f"{100 * x['input_grid_equal']:.3f}%",
                f"{100 * x['inversion_equal']:.4f}%",
                " / ".join(f"{d:.4f}" for d in x["dice_bundle"]),
                " / ".join(f"{d:.4f}" for d in x["dice_scores"]),
            ]
            for x in r["rows"]
        ]
        self.md += table(
            [
                "case",
                "spacing mm",
                "model grid",
                *(f"model grid equal (slab_dim={d}{', the bundle' if d == own else ''})" for d in dims),
                "input grid equal",
                "InvertLabelMapd = Invertd nearest",
                "Dice bundle (label path) (1 / 2)",
                "Dice scores path (1 / 2)",
            ],
            rows,
        )


CONTENTION = (
    "**Shared machine**: other jobs ran on the same cores during this run (see the load averages and the CPU-use "
    "columns: well under 100% means the process did not get its threads' share of the cores), so absolute times "
    "are inflated and noisy; ratios measured inside one process are the more reliable part."
)


def contention_note(results: dict[str, dict]) -> str:
    """:data:`CONTENTION` where a pipeline's network got well under its threads' share of the cores (another job
    ran beside it), otherwise a line saying the cores were the benchmark's own."""
    shares = [r["network_cpu_share"] for r in results.values() if "network_cpu_share" in r]
    if shares and min(shares) < 0.9:
        return CONTENTION
    return (
        f"Quiet machine: the network got {100 * min(shares):.0f}–{100 * max(shares):.0f}% of its threads' CPU time "
        "in every pipeline, so the times are this machine's own."
        if shares
        else ""
    )


# (row name, child_inference parameters) of the inference and memory sections
INFERENCE_PIPELINES: list[tuple[str, dict]] = [
    ("bundle", {"pipeline": "bundle"}),
    ("scores", {"pipeline": "scores"}),
    ("labels + Invertd", {"pipeline": "labels_invertd"}),
]
# the order the sections run in: the long memory comparison last, so the rest is on disk early
ORDER = ("inference", "inferers", "knobs", "preprocessing", "training", "agreement", "memory")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.child:
        child_main(args.child, args.params, args.result, args.max_memory_gb)
        return {}
    sections = [s for s in ORDER if s in (args.sections or SECTIONS)]
    with tempfile.TemporaryDirectory(prefix="benchmark_speed_") as tmp:
        bench = Benchmark(args, argv, Path(tmp))
        for section in sections:
            print(f"[{section}]", flush=True)
            getattr(bench, section)()
            bench.write()
    print("\n" + bench.path.read_text())
    bench.report["markdown"] = str(bench.path)
    return bench.report


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", nargs="+", choices=SECTIONS, help="what to run (default: all)")
    p.add_argument("--shape", type=int, nargs=3, default=None, help="CT volume for inference (default 512 512 300)")
    p.add_argument(
        "--memory-shape",
        type=int,
        nargs=3,
        default=None,
        help="CT volume for the memory comparison (default 512 512 1000; 0 0 0 skips it)",
    )
    p.add_argument(
        "--memory-network",
        choices=("bundle", "stub"),
        default="bundle",
        help="network of the memory comparison: the bundle's, or a per-class scaling (its activations are per "
        "window batch, see the knobs section; a long scan then takes minutes instead of hours on a CPU)",
    )
    p.add_argument("--classes", type=int, default=3, help="network output classes (default 3)")
    p.add_argument("--roi", type=int, nargs=3, default=None, help="sliding window (default 96 96 96)")
    p.add_argument("--patch", type=int, nargs=3, default=None, help="training patch (default 96 96 96)")
    p.add_argument("--train-iters", type=int, default=None, help="timed training iterations per config (default 4)")
    p.add_argument("--train-cases", type=int, default=None, help="demo volumes for training (default 8)")
    p.add_argument("--checkpoint", default=None, help="weights of the 3-class 3D bundle for the agreement section")
    p.add_argument("--threads", type=int, default=None, help=f"torch threads (default: the usable CPUs, {threads})")
    p.add_argument(
        "--max-memory-gb",
        type=float,
        default=14.0,
        help="address-space limit of each child in GiB (+1 GiB slack), 0 for none (default 14)",
    )
    p.add_argument("--case-timeout", type=float, default=7200.0, help="seconds before a child is killed")
    p.add_argument("--out", type=Path, default=None, help=f"output folder (default {DEFAULT_OUT.relative_to(REPO)})")
    p.add_argument("--name", default=None, help="output file stem (default speed_benchmark, speed_benchmark_quick)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: tiny volumes, a reduced network, 1 thread, few iterations, in-process",
    )
    p.add_argument("--in-process", action="store_true", help="run configurations in this process (implied by --quick)")
    p.add_argument("--child", choices=list(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--params", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {
        "shape": [40, 36, 32] if quick else [512, 512, 300],
        "memory_shape": [40, 36, 48] if quick else [512, 512, 1000],
        "roi": [16, 16, 16] if quick else [96, 96, 96],
        "patch": [16, 16, 16] if quick else [96, 96, 96],
        "train_iters": 1 if quick else 4,
        "train_cases": 3 if quick else 8,
        # one thread for the smoke test: on a busy machine two OpenMP threads on tiny tensors mostly wait
        "threads": 1 if quick else threads,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.memory_shape == [0, 0, 0]:
        args.memory_shape = None
    args.in_process = args.in_process or quick
    # the smoke test checks the plumbing, not the bundle's network: a 3-level ResUNet runs 16³ windows in ms
    args.network_overrides = {"features": [8, 16, 32], "encoder_blocks": 1} if quick else {}
    args.conv_size = 16 if quick else 96
    args.knob_repeats = 1 if quick else 2
    args.train_size = (28, 28, 26) if quick else (64, 64, 48)
    args.train_configs = (
        [("bundle", "bundle", None), ("Dataset", "DataLoader", 0)]
        if quick
        else [
            ("bundle", "bundle", None),  # the config's train#dataset + train#dataloader, its num_workers
            ("Dataset", "DataLoader", 0),
            ("Dataset", "DataLoader", 2),
            ("Dataset", "ThreadDataLoader", 0),
            ("CacheDataset", "DataLoader", 0),
            ("CacheDataset", "DataLoader", 2),
            ("CacheDataset", "ThreadDataLoader", 0),
            ("CacheDataset", "ThreadDataLoader", 2),
        ]
    )
    args.agree_cases = 1 if quick else 2
    args.agree_size = (28, 28, 26) if quick else (96, 96, 64)
    args.agree_roi = [16, 16, 16] if quick else [48, 48, 48]
    return args


if __name__ == "__main__":
    main()
