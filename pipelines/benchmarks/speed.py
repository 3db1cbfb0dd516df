#!/usr/bin/env python
"""Where the time and the memory of the 3D bundle go: inference stage by stage on a CT-sized volume, the
stitching options for huge scans, network and pre-processing knobs, and training throughput.

It answers "how close to the machine's limit does the bundle run, and what holds peak memory?". Every measured
configuration runs in a fresh Python process (this script re-invoked with ``--child``), so its peak resident set
(``ru_maxrss``) is its own and an out-of-memory failure becomes that row's error. Each child also gets an
address-space limit (``--max-memory-gb``), so a configuration that would need more fails with a MemoryError
instead of waking the kernel's OOM killer on a shared machine.

    python -m pipelines.benchmarks.speed                   # everything, default sizes -> pipelines/benchmarks/results/
    python -m pipelines.benchmarks.speed --sections inference --shape 512 512 300 --classes 3
    python -m pipelines.benchmarks.speed --sections memory --memory-shape 512 512 1000
    python -m pipelines.benchmarks.speed --checkpoint models/model.pt   # agreement on a trained network
    python -m pipelines.benchmarks.speed --quick --out /tmp/speed       # a smoke test: tiny sizes, in-process

Sections (``--sections``, default all):

The network everywhere is the 3D bundle's as its config builds it: ``network_def`` (ResUNet, ``stem_stride`` 2,
``upsample`` deconv) through ``monai_resunet.networks.configure_execution`` with the config's ``channels_last``
and ``cpu_bf16`` flags (``cpu_bf16`` = ``cpu_has_bf16()``: bfloat16 autocast on CPUs with bf16 units).

* ``inference``: the bundle's inference on a synthetic int16 CT NIfTI (``--shape``, 0.7×0.7×1.0 mm, written
  first): each transform of the bundle's pre-processing timed on its own, the network (sum of its calls
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
* ``preprocessing``: the bundle's ``inference.json`` pre-processing (body crop, then float32 resampling slab by
  slab; the ``library`` row) vs the chains it replaced, one change undone at a time: MONAI's whole-volume
  ``Spacingd``, float32 loading, float64 resampling of the whole field of view before the crop: time, peak RSS,
  difference to the bundle's output.
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
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.benchmarks.common import REPO
from pipelines.benchmarks.speed_children import CHILDREN, child_main
from pipelines.benchmarks.speed_sections import DEFAULT_OUT, SECTIONS, SpeedRun


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.child:
        child_main(args.child, args.params, args.result, args.max_memory_gb)
        return {}
    sections = [s for s in SECTIONS if s in (args.sections or SECTIONS)]
    with tempfile.TemporaryDirectory(prefix="benchmark_speed_") as tmp:
        bench = SpeedRun(args, argv, Path(tmp))
        for section in sections:
            print(f"[{section}]", flush=True)
            SECTIONS[section](bench)
            bench.write()
    print("\n" + bench.path.read_text())
    bench.report["markdown"] = str(bench.path)
    return bench.report


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", nargs="+", choices=list(SECTIONS), help="what to run (default: all)")
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
