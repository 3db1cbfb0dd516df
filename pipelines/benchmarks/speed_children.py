"""The speed benchmark's measured configurations (``python -m pipelines.benchmarks.speed``): one function per kind,
each run in a fresh process (``--child KIND``) or in the caller's (``--quick``), and the bundle-reading helpers they
share."""

from __future__ import annotations

import gc
import itertools
import json
import os
import resource
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from pipelines.benchmarks.common import REPO, TimedNetwork, loadavg, maxrss_mib, optional_packages_imported
from pipelines.benchmarks.training import train_steps

BUNDLE = REPO / "bundles" / "resunet3d_segmentation"
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


def bundle_parser(config: str = "inference.json"):
    """A ``ConfigParser`` on one of the 3D bundle's configs, with ``device`` set to the CPU."""
    from monai.bundle import ConfigParser

    import monai_resunet  # noqa: F401 - registers the package's names (ResUNet, ...) for the config parser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / config))
    parser["bundle_root"] = str(BUNDLE)
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
    # a step is written in place or referenced by id ("@saver")
    steps = [
        t[1:] if isinstance(t, str) and t.startswith("@") else f"postprocessing#transforms#{i}"
        for i, t in enumerate(parser.get("postprocessing#transforms"))
    ]
    save = next(i for i in steps if str(parser.get(f"{i}#_target_", "")).endswith("SaveImaged"))
    return parser.get_parsed_content(f"{save}#writer") if f"{save}#writer" in parser else None


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
    # by the nearest named class, so a subclass (the bundle's LoadImageBySuffixd is a LoadImaged) keeps its stage
    known = next((c.__name__ for c in type(transform).__mro__ if c.__name__ in names), None)
    return names[known] if known else f"pre: {type(transform).__name__}"


PREPROCESSING_VARIANTS = ("library", "whole_volume_spacing", "float32_load", "float64_resample_first")


def preprocessing_chain(variant: str = "library", modality: str = "CT", pixdim: Sequence[float] = PIXDIM) -> list:
    """The 3D bundle's inference pre-processing (``inference.json``'s ``preprocessing``) for ``modality`` and
    ``pixdim``, or one of the chains it replaced, each variant undoing one more change.

    ``library``: as is (``LoadImaged`` in the file's dtype, the body crop, then ``SlabSpacingd`` resampling into
    float32 one slab at a time). ``whole_volume_spacing``: the same with MONAI's ``Spacingd`` (one ``grid_sample``
    over the whole output). ``float32_load``: that with MONAI's default ``LoadImaged`` dtype (float32 at once).
    ``float64_resample_first``: that with ``Spacingd`` in MONAI's default dtype (float64) before
    ``CropForegroundd``, so the whole field of view is resampled and the crop is taken on the resampled grid (which
    therefore starts elsewhere, within a voxel of the library's).
    """
    import numpy as np
    from monai.transforms import CropForegroundd, LoadImaged, Spacingd

    parser = bundle_parser()
    parser["modality"], parser["pixdim"], parser["ct_window"] = modality, list(pixdim), list(CT_WINDOW)
    chain = list(parser.get_parsed_content("preprocessing").transforms)
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
    parser["bundle_root"] = str(BUNDLE)
    parser["dataset_dir"] = p["dataset_dir"]
    parser["patch_size"] = p["patch"]
    if p["num_workers"] is not None:  # None: the bundle's own value
        parser["num_workers"] = p["num_workers"]
    parser["device"] = torch.device("cpu")
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
    # the first iterations start the workers and create the oneDNN primitives: run, not timed
    for step in itertools.islice(train_steps(network, loss_fn, optimizer, loader), p["warmup"] + p["iters"]):
        if step.iteration > p["warmup"]:
            waits.append(step.wait_s)
            computes.append(step.compute_s)
            patches += step.patches
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
