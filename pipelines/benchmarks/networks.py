#!/usr/bin/env python
"""Benchmark ResUNet presets against MONAI segmentation networks: forward and forward+backward time, peak
memory, parameters, counted FLOPs and achieved GFLOP/s, at a 3D patch (96³) and a 2D patch (256²).

It answers "what does a ResUNet preset cost on this machine, next to the networks MONAI users already run?".
Every (network, spatial_dims) case runs in a fresh Python process (this script re-invoked with ``--case``), so
one network's peak memory cannot pollute another's and a crash or out-of-memory kill is recorded as that row's
error instead of ending the run. The results are printed as a table and written as Markdown and CSV.

    python -m pipelines.benchmarks.networks                    # 2D and 3D, all networks -> benchmarks/results/
    python -m pipelines.benchmarks.networks --dims 3 --models 'resunet*' monai-unet --repeats 5
    python -m pipelines.benchmarks.networks --quick --out /tmp/bench   # tiny patches: a smoke test
    python -m pipelines.benchmarks.networks --quick --in-process ...   # no fresh process per case (tests, pdb)
    python -m pipelines.benchmarks.networks --device cuda --amp        # on a GPU (peak = max_memory_allocated)

What is measured, per case (batch 1, in_channels=1, out_channels=2, float32 unless --amp):

* forward: ``model.eval()`` under ``torch.inference_mode()`` (inference cost);
* forward+backward: ``model.train()``, ``loss = output.mean()``, ``loss.backward()`` (the training step minus the
  optimizer);
* each phase: 1 warm-up iteration (which is also the FLOP-counting pass), then up to ``--repeats`` timed
  iterations; the median is reported. When the warm-up shows that the repeats would take longer than
  ``--max-phase-seconds``, fewer repeats are run (at least 1) and the row says how many;
* FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts 2; only convolutions, transposed
  convolutions and matrix products are counted, not normalisation, activation, pooling, interpolation or
  element-wise ops), so GFLOP/s = counted FLOPs / median seconds is the rate of the convolution work;
* peak memory on CPU: the rise of the process's peak resident set over its RSS after the imports, before the
  model is built, i.e. weights + activations + gradients + allocator slack. On Linux the peak is VmHWM, reset
  before each phase (``/proc/self/clear_refs``), so each phase is measured on its own; elsewhere it is
  ``ru_maxrss``, which only grows, so the forward+backward peak is the whole case's. On CUDA it is
  ``torch.cuda.max_memory_allocated`` per phase (tensors only, not the caching allocator's reserve).
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import gc
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.benchmarks.common import REPO, RESULTS, loadavg, machine_info, module_command, run_module, write_json

DEFAULT_OUT = RESULTS
DEFAULT_SIZES = {2: 256, 3: 96}
# The smallest sizes every network trains at with batch 1: FlexibleUNet/resnet34 and the 6-level resenc
# down-sample by 32, and their batch/instance norms need more than one value per channel at the bottom
# (at 32³ both fail in train mode).
QUICK_SIZES = {2: 64, 3: 64}

# The CSV columns, in order; the smoke test checks them.
CSV_COLUMNS = [
    "model",
    "spatial_dims",
    "patch",
    "device",
    "threads",
    "params",
    "fwd_gflop",
    "fwd_s_median",
    "fwd_gflops_per_s",
    "fwd_peak_mib",
    "fwd_repeats",
    "fwd_s_all",
    "fwd_cpu_share",
    "train_gflop",
    "train_s_median",
    "train_gflops_per_s",
    "train_peak_mib",
    "train_repeats",
    "train_s_all",
    "train_cpu_share",
    "memory_method",
    "error",
]
MD_COLUMNS = [
    "network",
    "dims",
    "patch",
    "params (M)",
    "fwd GFLOP",
    "fwd ms",
    "fwd GFLOP/s",
    "fwd peak MiB",
    "fwd+bwd GFLOP",
    "fwd+bwd ms",
    "fwd+bwd GFLOP/s",
    "fwd+bwd peak MiB",
    "n (fwd/bwd)",
    "CPU use (fwd/bwd)",
    "error",
]


# ----------------------------------------------------------------------------------------------------------------
# The networks. Builders import lazily so that the parent process (which only schedules children) stays light.
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    description: str
    build: Callable[[int], Any]  # spatial_dims -> torch.nn.Module with in_channels=1, out_channels=2
    dims: tuple[int, ...] = (2, 3)


def _resunet(preset: str | None) -> Callable[[int], Any]:
    def build(spatial_dims: int) -> Any:
        from monai_resunet.networks.resunet import ResUNet

        if preset is None:
            return ResUNet(spatial_dims, 1, 2)
        return ResUNet.from_preset(preset, spatial_dims, 1, 2)

    return build


def _monai_unet(spatial_dims: int) -> Any:
    from monai.networks.nets import UNet

    # the spleen_ct_segmentation bundle's network_def
    return UNet(spatial_dims, 1, 2, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2,
                norm="batch")  # fmt: skip


def _basicunet(spatial_dims: int) -> Any:
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=spatial_dims, in_channels=1, out_channels=2)


def _segresnet(spatial_dims: int) -> Any:
    from monai.networks.nets import SegResNet

    return SegResNet(spatial_dims=spatial_dims, in_channels=1, out_channels=2)


def _dynunet(spatial_dims: int) -> Any:
    from monai.networks.nets import DynUNet

    strides = [1, 2, 2, 2, 2]
    return DynUNet(spatial_dims, 1, 2, kernel_size=[3] * 5, strides=strides, upsample_kernel_size=strides[1:],
                   res_block=True)  # fmt: skip


def _flexibleunet(spatial_dims: int) -> Any:
    from monai.networks.nets import FlexibleUNet

    # pretrained=False: nothing is downloaded (the 3D ResNet weights would come from MedicalNet), so it runs offline
    return FlexibleUNet(1, 2, backbone="resnet34", pretrained=False, spatial_dims=spatial_dims)


NETWORKS: dict[str, NetworkSpec] = {
    s.name: s
    for s in [
        NetworkSpec("resunet", "ResUNet(spatial_dims, 1, 2): the constructor defaults (features 32-64-128-256-320, "
                    "1 basic block per level, batch norm, max-pool, nearest up-sampling)", _resunet(None)),
        NetworkSpec("resunet-seed", 'ResUNet.from_preset("seed"): the Keras res_unet, features 64…1024',
                    _resunet("seed")),
        NetworkSpec("resunet-resnet34", 'ResUNet.from_preset("resnet34")', _resunet("resnet34")),
        NetworkSpec("resunet-resnet50", 'ResUNet.from_preset("resnet50")', _resunet("resnet50")),
        NetworkSpec("resunet-resenc", 'ResUNet.from_preset("resenc"): nnU-Net ResEnc-M-like', _resunet("resenc")),
        NetworkSpec("monai-unet", "monai UNet as in the spleen_ct_segmentation bundle: channels (16, 32, 64, 128, "
                    '256), strides (2, 2, 2, 2), num_res_units=2, norm="batch"', _monai_unet),
        NetworkSpec("basicunet", "monai BasicUNet, defaults (features (32, 32, 64, 128, 256, 32))", _basicunet),
        NetworkSpec("segresnet", "monai SegResNet, defaults (init_filters=8, blocks_down (1, 2, 2, 4), blocks_up "
                    "(1, 1, 1)); MONAI's brats bundle uses init_filters=16", _segresnet),
        NetworkSpec("dynunet", "monai DynUNet, res_block=True, kernel_size [3]*5, strides [1, 2, 2, 2, 2], "
                    "upsample_kernel_size strides[1:], default filters and instance norm", _dynunet),
        NetworkSpec("flexibleunet-resnet34", 'monai FlexibleUNet(backbone="resnet34", pretrained=False)',
                    _flexibleunet),
    ]
}  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Child process: one (network, spatial_dims) case.
# ----------------------------------------------------------------------------------------------------------------


def _patch(size: int, spatial_dims: int) -> str:
    return "×".join([str(size)] * spatial_dims)


def _proc_status_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _peak_rss_mib() -> float:
    """This process's peak resident set size.

    Linux's VmHWM rather than ``ru_maxrss``: after exec, ``ru_maxrss`` starts at the *parent's* RSS (the kernel
    carries the pre-exec peak over), so a child of a big parent (pytest with torch loaded, a 2 GB parent was
    measured at 1.9 GB) would under-report; VmHWM belongs to the new process image only.
    """
    hwm = _proc_status_mib("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024.0  # bytes on macOS, KiB elsewhere


def _reset_peak_rss() -> tuple[float, bool]:
    """Reset the peak RSS to the current RSS where Linux allows it (``/proc/self/clear_refs``, "5").

    Returns (the baseline to subtract, whether the reset worked). Without a reset the peak only grows, so a
    later phase's peak includes the earlier phases'.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        rss = _proc_status_mib("VmRSS")
        if rss is not None:
            return rss, True
    except OSError:
        pass
    return _peak_rss_mib(), False


def _prepare_runtime(spatial_dims: int, device: Any) -> None:
    """Do the model-independent one-off work before the memory baseline, so that no row is charged for it.

    The builders import lazily, and importing MONAI alone raises the RSS by ~250 MB (measured); the first
    convolution (forward and backward, FLOP counter on) loads oneDNN and starts the thread pool (~30 MB).
    """
    import monai.networks.nets  # noqa: F401
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import monai_resunet.networks.resunet  # noqa: F401

    conv = (torch.nn.Conv2d if spatial_dims == 2 else torch.nn.Conv3d)(2, 2, 3, padding=1).to(device)
    x = torch.randn(1, 2, *([8] * spatial_dims), device=device)
    with FlopCounterMode(display=False):
        conv(x).sum().backward()
    with torch.inference_mode():
        conv(x)


def run_case(name: str, spatial_dims: int, size: int, repeats: int, max_phase_seconds: float, device: str,
             amp: bool, threads: int, result_path: Path) -> dict:  # fmt: skip
    """Measure one network in this process and write its results to ``result_path`` (JSON)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(threads)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    result: dict[str, Any] = {"model": name, "spatial_dims": spatial_dims, "patch": _patch(size, spatial_dims)}
    result.update(device=device, threads=threads)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    def autocast() -> Any:
        # fp16 on CUDA (the usual AMP), bf16 on CPU (the only reduced type CPU autocast supports well)
        dtype = torch.float16 if cuda else torch.bfloat16
        return torch.autocast(dev.type, dtype=dtype, enabled=amp)

    # Warm-up = FLOP counting pass (it runs the same kernels, so it also does the one-off allocations and
    # oneDNN primitive creation a warm-up is for), then timed repeats; returns (flops, times, cpu share).
    # The CPU share (process CPU time / wall time / threads) shows how much of the machine the case really got:
    # on a shared machine a preempted OpenMP thread stalls the others at the next barrier, and wall time grows.
    def measure(step: Callable[[], None]) -> tuple[int, list[float], float | None]:
        counter = FlopCounterMode(display=False)
        sync()
        t0 = time.perf_counter()
        with counter:
            step()
        sync()
        warm = time.perf_counter() - t0
        n = repeats
        if max_phase_seconds > 0:
            n = max(1, min(repeats, int(max_phase_seconds // max(warm, 1e-9))))
        times: list[float] = []
        cpu0 = time.process_time()
        for _ in range(n):
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - t0)
        # on CUDA the host mostly waits for the device, so a CPU share would mean nothing
        cpu_share = None if cuda else (time.process_time() - cpu0) / max(sum(times), 1e-9) / threads
        return counter.get_total_flops(), times, cpu_share

    try:
        _prepare_runtime(spatial_dims, dev)
        gc.collect()
        # the baseline is the process after the imports, before the model: weights count as the model's memory
        base, resettable = _reset_peak_rss()
        result["memory"] = "VmHWM reset per phase" if resettable else "ru_maxrss of the whole case"
        model = NETWORKS[name].build(spatial_dims).to(dev)
        result["params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        x = torch.randn(1, 1, *([size] * spatial_dims), device=dev)

        # forward (inference)
        model.eval()

        def fwd() -> None:
            with torch.inference_mode(), autocast():
                model(x)

        if cuda:  # max_memory_allocated includes the weights, as the CPU number does
            torch.cuda.reset_peak_memory_stats(dev)
        flops, times, cpu = measure(fwd)
        peak = torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else _peak_rss_mib() - base
        result.update(fwd_flops=flops, fwd_s_all=times, fwd_peak_mib=peak, fwd_cpu_share=cpu)
        write_json(result_path, result)
        gc.collect()

        # forward + backward (a training step without the optimizer)
        model.train()

        def train() -> None:
            model.zero_grad(set_to_none=True)
            with autocast():
                out = model(x)
                loss = out.float().mean()
            loss.backward()

        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        elif resettable:  # the training peak alone, still over the pre-model baseline
            _reset_peak_rss()
        flops, times, cpu = measure(train)
        peak = torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else _peak_rss_mib() - base
        result.update(train_flops=flops, train_s_all=times, train_peak_mib=peak, train_cpu_share=cpu)
    except Exception as e:  # noqa: BLE001 - any failure becomes this row's error, the run goes on
        oom = isinstance(e, (torch.OutOfMemoryError, MemoryError)) or any(
            s in str(e).lower() for s in ("out of memory", "can't allocate memory")
        )
        first_line = (str(e).strip().splitlines() or [""])[0][:200]
        result["error"] = ("out of memory: " if oom else "") + f"{type(e).__name__}: {first_line}"
        traceback.print_exc()
    write_json(result_path, result)
    return result


# ----------------------------------------------------------------------------------------------------------------
# Parent process: schedule the cases, collect, tabulate.
# ----------------------------------------------------------------------------------------------------------------


def run_child(name: str, spatial_dims: int, size: int, args: argparse.Namespace, workdir: Path) -> dict:
    """Run one case in a fresh interpreter; turn a crash, kill or timeout into the row's error."""
    result_path = workdir / f"{name}_{spatial_dims}d.json"
    result_path.unlink(missing_ok=True)
    cmd = module_command(
        "networks", "--case", name, "--dims", str(spatial_dims),
        "--size", str(size), "--repeats", str(args.repeats), "--max-phase-seconds", str(args.max_phase_seconds),
        "--device", args.device, "--threads", str(args.threads), "--result", str(result_path),
        *(["--amp"] if args.amp else []),
    )  # fmt: skip
    error = run_module(cmd, timeout=args.case_timeout)
    result: dict[str, Any] = {"model": name, "spatial_dims": spatial_dims, "patch": _patch(size, spatial_dims)}
    if result_path.exists():
        result.update(json.loads(result_path.read_text()))
    if error and not result.get("error"):
        result["error"] = error
    return result


def run_in_process(name: str, spatial_dims: int, size: int, args: argparse.Namespace, workdir: Path) -> dict:
    """Run one case here (``--in-process``); restores the caller's torch thread count."""
    import torch

    threads = torch.get_num_threads()
    try:
        return run_case(name, spatial_dims, size, args.repeats, args.max_phase_seconds, args.device, args.amp,
                        args.threads, workdir / f"{name}_{spatial_dims}d.json")  # fmt: skip
    finally:
        torch.set_num_threads(threads)


def _median(times: Sequence[float] | None) -> float | None:
    return statistics.median(times) if times else None


def to_row(r: dict) -> dict[str, Any]:
    """Derived numbers (medians, GFLOP/s) in CSV units."""
    row: dict[str, Any] = {k: r.get(k) for k in ("model", "spatial_dims", "patch", "device", "threads", "params")}
    for phase in ("fwd", "train"):
        flops, times = r.get(f"{phase}_flops"), r.get(f"{phase}_s_all")
        med = _median(times)
        row[f"{phase}_gflop"] = flops / 1e9 if flops is not None else None
        row[f"{phase}_s_median"] = med
        row[f"{phase}_gflops_per_s"] = flops / 1e9 / med if flops and med else None
        row[f"{phase}_peak_mib"] = r.get(f"{phase}_peak_mib")
        row[f"{phase}_repeats"] = len(times) if times else None
        row[f"{phase}_cpu_share"] = r.get(f"{phase}_cpu_share")
        row[f"{phase}_s_all"] = ";".join(f"{t:.4f}" for t in times) if times else None
    row["memory_method"] = r.get("memory")
    row["error"] = r.get("error") or ""
    return row


def _fmt(v: Any, kind: str = "g") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if kind == "M":
        return f"{v / 1e6:.2f}"
    if kind == "ms":
        v = v * 1e3
    if kind == "int" or v >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f}%"


def _memory_note(rows: Sequence[dict], device: str, in_process: bool) -> str:
    if in_process:
        return ("not isolated (`--in-process`: all cases shared one process, so a case can reuse memory an earlier "
                "one freed and even come out negative); run without `--in-process` for real numbers")  # fmt: skip
    if device.startswith("cuda"):
        return "`torch.cuda.max_memory_allocated` per phase (tensors only, weights included)"
    note = ("rise of the process's peak resident set over its RSS after the imports, before the model was built: "
            "weights, activations, gradients, allocator slack")  # fmt: skip
    methods = {r.get("memory_method") for r in rows if r.get("memory_method")}
    if methods == {"VmHWM reset per phase"}:
        return note + "; Linux VmHWM, reset before each phase, so each phase is measured on its own"
    return note + "; `ru_maxrss`, which only grows: fwd+bwd is the peak of the whole case (forward ran first)"


def markdown_report(rows: Sequence[dict], info: dict[str, str], args: argparse.Namespace, wall_s: float) -> str:
    """The Markdown report: header naming the machine, the table, the network legend and observations."""
    gpu = f", GPU {info['gpu']}" if "gpu" in info else ""
    lines = [
        "# ResUNet vs MONAI networks: speed, memory, FLOPs",
        "",
        f"- **Machine**: {info['cpu']}, {info['logical_cpus']} logical CPUs{gpu}; device `{info['device']}`, "
        f"`torch.set_num_threads({info['threads']})`",
        f"- **Software**: Python {info['python']}, torch {info['torch']}, MONAI {info['monai']}",
        f"- **Date**: {info['date']}; load average (1/5/15 min) at start {info['load']}, at the last case "
        f"{loadavg()} (a shared machine: other jobs ran concurrently, so single timings are noisy)",
        f"- **Setup**: batch 1, in_channels 1, out_channels 2, {'AMP' if args.amp else 'float32'}; "
        f"{'all cases in one process (`--in-process`)' if args.in_process else 'each case in a fresh process'}; "
        f"1 warm-up iteration then up to {args.repeats} timed repeats, median reported; repeats "
        f"are cut (to at least 1) when the warm-up shows they would exceed {args.max_phase_seconds:g} s per "
        "phase, see the `n` column — rows with n = 1 are a single timing, not a median; total wall time "
        f"{wall_s / 60:.1f} min",
        "- **fwd**: `eval()` + `inference_mode()`; **fwd+bwd**: `train()`, `output.mean().backward()` (no "
        "optimizer step)",
        "- **GFLOP**: counted by `torch.utils.flop_counter.FlopCounterMode` (multiply-add = 2 FLOPs; "
        "convolutions, transposed convolutions and matmuls only); **GFLOP/s** = counted FLOPs / median time",
        "- **peak MiB**: " + _memory_note(rows, info["device"], args.in_process),
        "- **CPU use**: the case's process CPU time / wall time / threads over the timed repeats; well under "
        "100% means other jobs took the cores and the times are inflated",
        "",
        "| " + " | ".join(MD_COLUMNS) + " |",
        "|" + "|".join("---" if c in ("network", "patch", "error") else "---:" for c in MD_COLUMNS) + "|",
    ]  # fmt: skip
    for r in rows:
        cells = [
            r["model"], str(r["spatial_dims"]), r["patch"], _fmt(r["params"], "M"),
            _fmt(r["fwd_gflop"]), _fmt(r["fwd_s_median"], "ms"), _fmt(r["fwd_gflops_per_s"]),
            _fmt(r["fwd_peak_mib"], "int"),
            _fmt(r["train_gflop"]), _fmt(r["train_s_median"], "ms"), _fmt(r["train_gflops_per_s"]),
            _fmt(r["train_peak_mib"], "int"), f"{r['fwd_repeats'] or 0}/{r['train_repeats'] or 0}",
            f"{_pct(r['fwd_cpu_share'])}/{_pct(r['train_cpu_share'])}",
            (r["error"] or "").replace("|", "\\|"),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Networks:", ""]
    for name in dict.fromkeys(r["model"] for r in rows):
        lines.append(f"- `{name}`: {NETWORKS[name].description}")
    obs = observations(rows, args.repeats)
    if obs:
        lines += ["", "Observations (computed from the table above):", ""] + [f"- {o}" for o in obs]
    return "\n".join(lines) + "\n"


def observations(rows: Sequence[dict], repeats: int) -> list[str]:
    """Plain statements derived from the numbers, including where a MONAI network beats ResUNet."""
    out = []
    for dims in sorted({r["spatial_dims"] for r in rows}):
        ok = [r for r in rows if r["spatial_dims"] == dims and r["train_s_median"]]
        if not ok:
            continue
        fastest = min(ok, key=lambda r: r["train_s_median"])
        out.append(f"{dims}D: fastest fwd+bwd is `{fastest['model']}` ({_fmt(fastest['train_s_median'], 'ms')} ms); "
                   f"highest GFLOP/s fwd+bwd is `{max(ok, key=lambda r: r['train_gflops_per_s'])['model']}`; lowest "
                   f"peak memory is `{min(ok, key=lambda r: r['train_peak_mib'])['model']}`.")  # fmt: skip
        base = next((r for r in ok if r["model"] == "resunet"), None)
        if base:
            faster = [r["model"] for r in ok if not r["model"].startswith("resunet")
                      and r["train_s_median"] < base["train_s_median"]]  # fmt: skip
            leaner = [r["model"] for r in ok if not r["model"].startswith("resunet")
                      and r["train_peak_mib"] < base["train_peak_mib"]]  # fmt: skip
            out.append(f"{dims}D: MONAI networks with a faster fwd+bwd than the default `resunet`: "
                       f"{', '.join(f'`{m}`' for m in faster) or 'none'}; with lower fwd+bwd peak memory: "
                       f"{', '.join(f'`{m}`' for m in leaner) or 'none'}.")  # fmt: skip
    cut = [f"`{r['model']}` {r['spatial_dims']}D ({r['fwd_repeats']}/{r['train_repeats']})" for r in rows
           if not r["error"] and min(r["fwd_repeats"] or 0, r["train_repeats"] or 0) < repeats]  # fmt: skip
    if cut:
        out.append(f"Fewer than {repeats} timed repeats (fwd/fwd+bwd), to keep the run short: " + ", ".join(cut)
                   + "; their times are single runs or medians of 2 and carry the machine's noise.")  # fmt: skip
    failed = [f"`{r['model']}` {r['spatial_dims']}D ({r['error']})" for r in rows if r["error"]]
    if failed:
        out.append("Failed cases: " + "; ".join(failed) + ".")
    return out


def write_outputs(rows: Sequence[dict], out_dir: Path, stem: str, markdown: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = out_dir / f"{stem}.md", out_dir / f"{stem}.csv"
    md_path.write_text(markdown)
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if r.get(k) is None else r[k]) for k in CSV_COLUMNS})
    return md_path, csv_path


def select_models(patterns: Sequence[str] | None) -> list[str]:
    if not patterns:
        return list(NETWORKS)
    chosen = [n for n in NETWORKS if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    unknown = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in NETWORKS)]
    if unknown:
        raise SystemExit(f"--models: no network matches {unknown}; choose from {list(NETWORKS)}")
    return chosen


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    default_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", type=int, nargs="+", choices=(2, 3), default=[2, 3], help="spatial dims (default: 2 3)")
    p.add_argument("--models", nargs="+", metavar="PATTERN",
                   help=f"network names or glob patterns (default: all): {', '.join(NETWORKS)}")  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help=f"output folder (default: {DEFAULT_OUT.relative_to(REPO)})")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats after 1 warm-up (default: 3; 1 if --quick)")
    p.add_argument("--max-phase-seconds", type=float, default=15.0,
                   help="cut the repeats of a phase (to at least 1) when the warm-up predicts they would take "
                        "longer than this; 0 = never cut (default: 15)")  # fmt: skip
    p.add_argument("--size-2d", type=int, default=None,
                   help=f"2D patch edge (default: {DEFAULT_SIZES[2]}; {QUICK_SIZES[2]} if --quick)")  # fmt: skip
    p.add_argument("--size-3d", type=int, default=None,
                   help=f"3D patch edge (default: {DEFAULT_SIZES[3]}; {QUICK_SIZES[3]} if --quick)")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="tiny patches and 1 repeat: a smoke test of the script")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    p.add_argument("--amp", action="store_true", help="autocast (fp16 on CUDA, bf16 on CPU)")
    p.add_argument("--threads", type=int, default=default_threads,
                   help=f"torch.set_num_threads (default: the usable CPUs, {default_threads})")  # fmt: skip
    p.add_argument("--case-timeout", type=float, default=900.0, help="seconds before a case is killed (default: 900)")
    p.add_argument("--name", default=None,
                   help="output file stem (default: network_benchmark, network_benchmark_quick if --quick, so a "
                        "smoke test never overwrites the real results)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    p.add_argument("--in-process", action="store_true",
                   help="run the cases in this process instead of a fresh one each: faster to start (tests, "
                        "debugging), but a crash ends the run and memory is not isolated between cases")  # fmt: skip
    # internal: run one case in this process (how the parent re-invokes the script)
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Run the benchmark; returns the table rows (also written to ``--out`` as Markdown and CSV)."""
    args = parse_args(argv)
    if args.case:  # child mode
        run_case(args.case, args.dims[0], args.size, args.repeats, args.max_phase_seconds, args.device, args.amp,
                 args.threads, args.result)  # fmt: skip
        return []

    from tqdm import tqdm

    sizes = dict(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    sizes[2] = args.size_2d or sizes[2]
    sizes[3] = args.size_3d or sizes[3]
    out_dir = args.out or DEFAULT_OUT
    stem = args.name or ("network_benchmark_quick" if args.quick else "network_benchmark")
    info = machine_info(threads=args.threads, device=args.device)
    # 3D first: the long cases, so an interrupted run has the expensive answers
    cases = [(m, d) for d in sorted(args.dims, reverse=True) for m in select_models(args.models)
             if d in NETWORKS[m].dims]  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="benchmark_networks_"))  # the children's JSON results

    start = time.perf_counter()
    rows: list[dict] = []
    try:
        bar = tqdm(cases, desc="benchmark", unit="case", disable=args.no_progress)
        for name, dims in bar:
            bar.set_postfix_str(f"{name} {dims}D")
            run = run_in_process if args.in_process else run_child
            rows.append(to_row(run(name, dims, sizes[dims], args, workdir)))
            # written after every case, so a long run that is interrupted keeps what it measured
            write_outputs(rows, out_dir, stem, markdown_report(rows, info, args, time.perf_counter() - start))
        bar.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    markdown = markdown_report(rows, info, args, time.perf_counter() - start)
    md_path, csv_path = write_outputs(rows, out_dir, stem, markdown)
    print(markdown)
    print(f"written: {md_path}  {csv_path}")
    return rows


if __name__ == "__main__":
    main()
