"""The speed benchmark's sections (``python -m pipelines.benchmarks.speed``): each schedules its configurations
(:mod:`pipelines.benchmarks.speed_children`), in fresh processes through :class:`Runner`, and appends its tables to
the run's Markdown report (:class:`SpeedRun`)."""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipelines.benchmarks.common import RESULTS, loadavg, machine_info, markdown_table, module_command, run_module
from pipelines.benchmarks.speed_children import (
    CHILDREN,
    CT_SPACING,
    PIXDIM,
    PREPROCESSING_VARIANTS,
    bundle_execution_flags,
    bundle_inferer_settings,
    float32_mib,
    network_description,
    write_synthetic_ct,
)

DEFAULT_OUT = RESULTS

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
        cmd = module_command(
            "speed", "--child", kind, "--params", str(params_path), "--result", str(result_path),
            "--max-memory-gb", f"{limit:.1f}",
        )  # fmt: skip
        error = run_module(cmd, timeout=self.args.case_timeout)
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
    """A Markdown table in this report's number format, and a blank line after it."""
    return markdown_table(header, rows, fmt) + [""]


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


class SpeedRun:
    """One run of the benchmark: its arguments, work folder, child runner, the report so far (Markdown lines and
    results) and the synthetic CTs it wrote. The sections (``section_*``) append to it; :meth:`write` rewrites the
    report after each, so a long run that is stopped still leaves what it had measured."""

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
            f"- **Command**: `{' '.join(['python -m pipelines.benchmarks.speed', *argv])}`",
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


def model_grid(shape: Sequence[int]) -> list[int]:
    return [round(s * sp / px) for s, sp, px in zip(shape, CT_SPACING, PIXDIM)]


# -- inference ---------------------------------------------------------------------------------------------


def run_pipelines(run: SpeedRun, shape: Sequence[int], pipelines: Sequence[tuple[str, dict]], save_grid: bool) -> dict:
    results = {}
    for name, extra in pipelines:
        print(f"  {name} on {shape_str(shape)} ...", flush=True)
        params = {
            "image": str(run.ct(shape)),
            "classes": run.args.classes,
            "roi": run.args.roi,
            "conv_size": run.args.conv_size,
            "out_dir": str(run.workdir / f"out_{slug(name)}_{shape_str(shape)}"),
            **extra,
        }
        if save_grid:
            params["save_model_grid"] = str(run.workdir / f"grid_{slug(name)}_{shape_str(shape)}.npy")
        results[name] = run.runner("inference", params)
    return results


def inference_tables(run: SpeedRun, results: dict[str, dict], shape: Sequence[int]) -> list[str]:
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
        rows.append(["**total**"] + [c for r in ok.values() for c in (sum(s["s"] for s in r["stages"]), "100%", "")])
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


def pipeline_text(run: SpeedRun) -> str:
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
        f"channels_last={flags['channels_last']}, cpu_bf16={flags['cpu_bf16']}). Pre-processing: the bundle's "
        "`inference.json` `preprocessing` with modality CT, pixdim (1, 1, 1) (body crop, then float32 resampling), "
        'each transform timed alone. "network" = the sum of the network\'s calls inside the inferer, '
        '"stitching" = the inferer\'s time minus that; "peak RSS" = the process\'s peak after the stage (it '
        "only grows, so the stage where it jumps is the one that needed the memory)."
    )


def section_inference(run: SpeedRun) -> None:
    import numpy as np

    args = run.args
    results = run_pipelines(run, args.shape, INFERENCE_PIPELINES, save_grid=True)
    run.report["inference"] = results
    run.md += ["## Inference, stage by stage", ""]
    run.md += [
        pipeline_text(run)
        + " Network GFLOP/s = FLOPs of one window (`FlopCounterMode`) × windows / network time, next to a "
        f"plain `Conv3d(32, 32, 3)` on a contiguous {run.args.conv_size}³ tensor timed in the same process "
        "after the pipeline, in float32 and (on a CPU with bf16 units) under bf16 autocast; the ratio uses "
        "the reference in the precision the network ran in.",
        "",
        f"### Input {shape_str(args.shape)} at {CT_SPACING} mm, {args.classes} classes",
        "",
    ]
    run.md += inference_tables(run, results, args.shape)
    grids = {k: run.workdir / f"grid_{slug(k)}_{shape_str(args.shape)}.npy" for k in ("bundle", "scores")}
    if all(g.exists() for g in grids.values()):
        a, b = (np.load(g, mmap_mode="r") for g in grids.values())
        run.md.append(
            f"Model-grid labels, the bundle's `SlabArgmaxInferer` vs the `SlidingWindowInferer` arg-max (random "
            f"weights): {100 * float((a == b).mean()):.4f}% equal voxels."
        )
    written = written_labels(results)
    if "bundle" in written and "scores" in written:
        a, b = written["bundle"], written["scores"]
        run.md.append(
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
        run.md.append(
            "Written label maps, `InvertLabelMapd` vs `Invertd(nearest_interp=True)` on the same labels: " + outcome
        )
    run.md += ["", contention_note(results), ""]


def written_labels(results: dict[str, dict]) -> dict[str, Any]:
    """The label map each pipeline wrote, by pipeline name."""
    import nibabel as nib
    import numpy as np

    out = {}
    for k, r in results.items():
        files = sorted(Path(r["out_dir"]).glob("*.nii.gz")) if r.get("out_dir") else []
        if files:
            out[k] = np.asarray(nib.load(str(files[0])).dataobj)
    return out


def section_memory(run: SpeedRun) -> None:
    if not run.args.memory_shape:
        return
    stub = {"network_stub": run.args.memory_network == "stub"}
    pipelines = [(name, {**extra, **stub}) for name, extra in INFERENCE_PIPELINES]
    results = run_pipelines(run, run.args.memory_shape, pipelines, save_grid=False)
    run.report["memory"] = results
    run.md += ["## Memory on a huge scan", ""]
    run.md += [
        "The three pipelines of the inference section on a longer scan. "
        + pipeline_text(run)
        + " A row that reached the address-space limit shows the error and its peak RSS at the failure.",
        "",
        f"### Input {shape_str(run.args.memory_shape)} at {CT_SPACING} mm, {run.args.classes} classes",
        "",
    ]
    run.md += inference_tables(run, results, run.args.memory_shape)
    knob = next((k for k in run.report.get("knobs", []) if "rise_mib" in k), None)
    if run.args.memory_network == "stub":
        run.md.append(
            "The network here is `ScoreStub`, a per-class scaling of the input (`--memory-network stub`): "
            "every stage but the network is the real one. The bundle's network adds its activations for one "
            "window batch during the network stage only"
            + (f": {knob['rise_mib']:,.0f} MiB measured in the knobs section ({knob['name']})." if knob else ".")
        )
        if knob:
            rows = []
            input_mib = float32_mib(run.args.memory_shape)
            for name, r in results.items():
                net = next((st for st in r.get("stages", []) if st["stage"] == "network"), None)
                if net is None:
                    continue
                during = net["rss_mib"] + knob["rise_mib"]
                estimate = max(r["peak_mib"], during)
                rows.append([name, r["peak_mib"], net["rss_mib"], during, estimate, f"{estimate / input_mib:.2f}×"])
            run.md += [""] + table(
                ["pipeline", "peak RSS MiB (stub)", "RSS after the network stage MiB",
                 "+ activations MiB", "estimated peak with the bundle's network MiB", "/ float32 input"],
                rows,
            )  # fmt: skip
    run.md.append("")


# -- the other sections ------------------------------------------------------------------------------------


def section_inferers(run: SpeedRun) -> None:
    args = run.args
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
    shapes = [model_grid(args.shape)] + ([model_grid(args.memory_shape)] if args.memory_shape else [])
    rows, run.report["inferers"] = [], []
    for shape in shapes:
        for name, variant in variants:
            print(f"  {name} on {shape_str(shape)} ...", flush=True)
            r = run.runner("inferer", {"shape": shape, "classes": args.classes, "roi": args.roi, "variant": variant})
            run.report["inferers"].append({"name": name, "shape": shape, **r})
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
    run.md += ["## Stitching options (the network replaced by a per-class scaling)", ""]
    run.md += [
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
    run.md += table(
        ["inferer", "volume", "stitching s", "windows", "RSS rise MiB", "rise / input", "output", "error"], rows
    )


def section_knobs(run: SpeedRun) -> None:
    args = run.args
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
    rows, run.report["knobs"], base = [], [], None
    for name, extra in knobs:
        print(f"  {name} ...", flush=True)
        r = run.runner(
            "knob",
            {"classes": args.classes, "roi": args.roi, "sw_batch_size": sw, "repeats": args.knob_repeats, **extra},
        )
        run.report["knobs"].append({"name": name, **r})
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
    run.md += ["## Network knobs (one batch of windows)", ""]
    run.md += [
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
    run.md += table(["setting", "s / window", "GFLOP/s", "speed vs baseline", "RSS rise MiB", "CPU use", "error"], rows)


def section_preprocessing(run: SpeedRun) -> None:
    import numpy as np

    args = run.args
    descriptions = {
        "library": "as the bundle's `inference.json` lists it: LoadImaged in the file's dtype (int16 here), "
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
        results[name] = run.runner(
            "preprocessing",
            {"image": str(run.ct(args.shape)), "variant": name, "save": str(run.workdir / f"pre_{name}.npy")},
        )
    run.report["preprocessing"] = results
    ref = run.workdir / "pre_library.npy"
    input_mib = float32_mib(args.shape)
    groups = ["load", "pre: orientation (RAS)", "pre: spacing", "pre: crop foreground", "pre: intensity"]
    rows = []
    for name, what in variants:
        r = results[name]
        if "stages" not in r:
            rows.append([name, what] + ["–"] * (len(groups) + 5) + [r.get("error", "?")])
            continue
        times = {g: sum(s["s"] for s in r["stages"] if s["stage"].startswith(g)) for g in groups}
        out, diff = run.workdir / f"pre_{name}.npy", "–"
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
    run.md += ["## Pre-processing variants", ""]
    run.md += [
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
    header = ["variant", "what", "load s", "orientation s", "spacing s", "crop s", "intensity s", "total s",
              "peak RSS MiB", "peak / float32 input", "output", "max \\|diff\\|", "error"]  # fmt: skip
    run.md += table(header, rows)


def section_training(run: SpeedRun) -> None:
    from monai_resunet.data import make_demo_dataset

    args = run.args
    demo = make_demo_dataset(run.workdir / "demo", num_train=args.train_cases, num_test=0, size=args.train_size)
    rows, run.report["training"] = [], []
    for dataset, loader, workers in args.train_configs:
        print(f"  {dataset} + {loader}, {workers} workers ...", flush=True)
        r = run.runner(
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
        run.report["training"].append({"dataset": dataset, "loader": loader, "workers": workers, **r})
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
    first = next((r for r in run.report["training"] if "batch_size" in r), {})
    run.md += ["## Training throughput", ""]
    run.md += [
        f"`train.json` as the bundle builds it (its deterministic + random transforms, network, DiceCE "
        f"loss, AdamW; its readers, which pick the NIfTI reader by suffix), the network through the config's "
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
    header = ["dataset", "loader", "workers", "it/s", "s / it", "data wait s / it", "compute s / it", "wait share",
              "cache s", "peak RSS MiB", "error"]  # fmt: skip
    run.md += table(header, rows)


def section_agreement(run: SpeedRun) -> None:
    args = run.args
    print("  demo volumes ...", flush=True)
    r = run.runner(
        "agreement",
        {
            "workdir": str(run.workdir),
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
    run.report["agreement"] = r
    run.md += ["## Agreement of the bundle's label path with the class-score path", ""]
    if "rows" not in r:
        run.md += [f"error: {r.get('error')}", ""]
        return
    dims, own = r["slab_dims"], r["bundle_slab_dim"]
    flags = r.get("execution", {})
    run.md += [
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
    run.md += table(
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


# the sections by name, in the order they run: the long memory comparison last, so the rest is on disk early
SECTIONS: dict[str, Callable[[SpeedRun], None]] = {
    "inference": section_inference,
    "inferers": section_inferers,
    "knobs": section_knobs,
    "preprocessing": section_preprocessing,
    "training": section_training,
    "agreement": section_agreement,
    "memory": section_memory,
}


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
