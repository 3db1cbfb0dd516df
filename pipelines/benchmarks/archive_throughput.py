"""Archive segmentation throughput on CPUs: N processes x 1 thread (``torchrun -m monai_resunet segment``) against
1 process x N threads, on demo cases and a few larger volumes.

Reports per configuration: wall time of the command (process start to exit), the time inside the segmentation
(from the run summary), cases per minute of wall time (start-up included, as a user waits for it), peak resident
memory per process; and checks that the multi-process outputs are voxel-identical to a plain single-process run
with the same threads per process, and how many voxels change with the thread count alone. The bundle is trained
on the demo data for ``--train-epochs`` first (0: random weights).

    python -m pipelines.benchmarks.archive_throughput --work /tmp/archive_bench --processes 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pipelines.benchmarks.common import REPO, RESULTS, loadavg, machine_info, machine_line, markdown_table, write_json

# runs a command and prints the peak resident set (KiB) of its largest process: one fresh parent per measured run
_PEAK_RSS = "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); " \
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)"  # fmt: skip


def _env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def _run(cmd: list[str], threads: int, log: Path) -> tuple[float, float]:
    """Run ``cmd``; return (wall seconds, peak RSS MiB of its largest process). Output goes to ``log``."""
    start = time.perf_counter()
    with open(log, "w") as fp:
        proc = subprocess.run([sys.executable, "-c", _PEAK_RSS, *cmd], stdout=fp, stderr=subprocess.PIPE, text=True,
                              env=_env(threads))  # fmt: skip
    wall = time.perf_counter() - start
    lines = proc.stderr.strip().splitlines()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed ({proc.returncode}): {lines[-3:] if lines else ''}")
    return wall, int(lines[-1]) / 1024


def _segment_cmd(bundle: Path, out: Path, listing: Path, processes: int | None) -> list[str]:
    """``segment`` under torchrun with ``processes`` ranks, or plain (``None``)."""
    launcher = [sys.executable]
    if processes:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    return [*launcher, "-m", "monai_resunet", "segment", "--bundle", str(bundle), "--device", "cpu", "-o", str(out),
            "--input-list", str(listing)]  # fmt: skip


def _prepare(work: Path, args) -> tuple[Path, dict[str, list[Path]], str]:
    """Demo data, larger volumes and a bundle trained for ``args.train_epochs`` (random weights for 0)."""
    import torch
    from monai.bundle import ConfigParser

    from monai_resunet.bundle_tools import copy_bundle
    from monai_resunet.data import DEMO_CLASS_NAMES, make_demo_dataset
    from monai_resunet.model_properties import write_model_properties

    demo = make_demo_dataset(work / "demo", num_train=16, num_test=args.cases, seed=0)
    large = make_demo_dataset(work / "large", num_train=0, num_test=args.large, size=tuple(args.large_size), seed=1)
    sets = {
        "demo": sorted((demo / "imagesTs").glob("*.nii.gz")),
        "large": sorted((large / "imagesTs").glob("*.nii.gz")),
    }
    bundle = copy_bundle("resunet3d_segmentation", work, overwrite=True)
    if args.train_epochs > 0:
        cmd = [sys.executable, "-m", "monai.bundle", "run", "training",
               "--config_file", str(bundle / "configs" / "train.json"), "--bundle_root", str(bundle),
               "--meta_file", str(bundle / "configs" / "metadata.json"), "--dataset_dir", str(demo),
               "--epochs", str(args.train_epochs), "--patch_size", json.dumps(args.patch_size),
               "--num_workers", "0"]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=_env(os.cpu_count() or 1), stdout=subprocess.DEVNULL,
                       stderr=open(work / "train.log", "w"))  # fmt: skip
        weights = f"trained {args.train_epochs} epochs on the demo data ({time.perf_counter() - start:.0f} s)"
    else:
        write_model_properties(bundle / "models", class_names=DEMO_CLASS_NAMES, modality="MR",
                               pixdim=[1.0, 1.0, 1.0], patch_size=args.patch_size)  # fmt: skip
        parser = ConfigParser()
        parser.read_config(str(bundle / "configs" / "inference.json"))
        parser["bundle_root"] = str(bundle)
        torch.manual_seed(0)
        torch.save(parser.get_parsed_content("network_def").state_dict(), bundle / "models" / "model.pt")
        weights = "random weights (seed 0)"
    return bundle, sets, weights


def _labels(folder: Path) -> dict:
    import nibabel as nib
    import numpy as np

    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(folder.glob("*_seg.nii.gz"))}


def _differing(a: dict, b: dict) -> dict:
    """Voxels that differ between two runs' label maps: total, share of all voxels, cases with any difference."""
    if sorted(a) != sorted(b):
        raise RuntimeError(f"the runs wrote different files: {sorted(set(a) ^ set(b))}")
    diff = {name: int((a[name] != b[name]).sum()) for name in a}
    total = sum(v.size for v in a.values())
    changed = sum(diff.values())
    return {"voxels": changed, "fraction": changed / total, "cases": sum(v > 0 for v in diff.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (data, bundle, outputs)")
    parser.add_argument("--processes", type=int, default=2, help="processes (and threads of the 1-process run)")
    parser.add_argument("--cases", type=int, default=20, help="demo cases (64x64x48)")
    parser.add_argument("--large", type=int, default=2, help="larger volumes")
    parser.add_argument("--large-size", type=int, nargs=3, default=[160, 160, 96], help="their size in voxels")
    parser.add_argument("--train-epochs", type=int, default=10, help="demo training epochs first (0: random weights)")
    parser.add_argument("--patch-size", type=int, nargs=3, default=[64, 64, 64], help="training/inference patch")
    parser.add_argument("--out", type=Path, default=RESULTS / "archive_throughput", help="results (.json, .md)")
    args = parser.parse_args(argv)
    n = args.processes
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    load_before = loadavg()
    bundle, sets, weights = _prepare(work, args)
    rows, results = [], {"weights": weights, "load_before": load_before, "sets": {}}
    for name, cases in sets.items():
        if not cases:
            continue
        listing = work / f"{name}.txt"
        listing.write_text("\n".join(str(p) for p in cases) + "\n")
        voxels = sum(_voxels(p) for p in cases)
        runs = {
            f"1 process x {n} threads": (1, n),
            f"{n} processes x 1 thread": (n, 1),
            "1 process x 1 thread (plain CLI, reference)": (None, 1),
        }
        measured = {}
        for label, (processes, threads) in runs.items():
            out = work / "out" / name / f"p{processes or 0}t{threads}"
            if out.exists():
                shutil.rmtree(out)
            wall, peak = _run(_segment_cmd(bundle, out, listing, processes), threads, work / f"{out.name}_{name}.log")
            entry = {"processes": processes or 1, "threads": threads, "wall_s": round(wall, 2), "peak_rss_mib": peak}
            summary = out / "segment_summary.json"
            if summary.is_file():  # torchrun runs: time inside the segmentation and memory per rank
                totals = json.loads(summary.read_text())["totals"]
                entry.update(segment_s=totals["wall_seconds"], busiest_rank_case_s=max(totals["rank_seconds"]),
                             rank_peak_rss_mib=totals["rank_peak_rss_mib"], failed=totals["failed"])  # fmt: skip
            measured[label] = (entry, out)
        reference = _labels(measured["1 process x 1 thread (plain CLI, reference)"][1])
        multi_entry, multi_out = measured[f"{n} processes x 1 thread"]
        multi_entry["differing_from_reference"] = _differing(_labels(multi_out), reference)
        one_entry, one_out = measured[f"1 process x {n} threads"]
        one_entry["differing_from_reference"] = _differing(_labels(one_out), reference)
        results["sets"][name] = {
            "cases": len(cases), "voxels": voxels, "load_after": loadavg(),
            "runs": {label: entry for label, (entry, _) in measured.items()},
        }  # fmt: skip
        for label, (entry, _) in measured.items():
            seg_s = entry.get("segment_s")
            memory = entry.get("rank_peak_rss_mib", [entry["peak_rss_mib"]])
            diff = entry.get("differing_from_reference")
            differing = "reference" if diff is None else f"{diff['voxels']} ({100 * diff['fraction']:.4f} %, "
            differing += "" if diff is None else f"{diff['cases']} cases)"
            rows.append([
                f"{name} ({len(cases)} x {'x'.join(map(str, _shape(cases[0])))})", label, f"{entry['wall_s']:.1f}",
                f"{seg_s:.1f}" if seg_s else "-", f"{entry['busiest_rank_case_s']:.1f}" if seg_s else "-",
                f"{60 * len(cases) / entry['wall_s']:.1f}",
                " / ".join(f"{m:.0f}" for m in memory),
                differing,
            ])  # fmt: skip
    info = machine_info(threads=n)
    header = ["set", "configuration", "wall s", "segmenting s", "busiest rank's cases s", "cases/min (wall)",
              "peak RSS MiB per process",
              "voxels differing from 1x1"]  # fmt: skip
    lines = [machine_line(info), f"Weights: {weights}. Load average before: {load_before}.", "",
             *markdown_table(header, rows)]  # fmt: skip
    results["machine"] = info
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out.with_suffix(".json"), results, indent=1)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _shape(path: Path) -> tuple[int, ...]:
    import nibabel as nib

    return tuple(int(s) for s in nib.load(path).shape)


def _voxels(path: Path) -> int:
    out = 1
    for s in _shape(path):
        out *= s
    return out


if __name__ == "__main__":
    sys.exit(main())
