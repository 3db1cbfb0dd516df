#!/usr/bin/env python
"""The planner measured: the 3D bundle's fixed recipe against the recipe planned from the data
(``monai_resunet.planning``), and MONAI's reference UNet given the same plan, each trained for the same CPU
wall-clock budget on one data set's training case and scored on its held-out case (``dataset.json``'s ``test`` /
``test_labels``), on the held-out image's own grid.

Arms (``--arms``):

* ``fixed-resunet``: the fixed recipe of the Colin27 CPU benchmark (``pipelines/benchmarks/colin27.py``): 1 mm
  isotropic, 64³ patches, batch 2, flips on every axis, MR z-score over the body / CT window (-175, 250) → [0, 1],
  the bundle's ResUNet (``planning.DEFAULT_NETWORK``, 4 levels);
* ``plan-resunet``: the plan beside the data (made when missing): its spacing, patch, batch, normalisation,
  mirroring axes and number of levels;
* ``fixed-planned-mirroring``: the fixed recipe with only its mirroring axes taken from the plan, which separates
  what the mirroring rule alone is worth from the rest of the plan;
* ``plan-unet``: MONAI ``UNet`` reference (channels 16…128, 2 residual units, instance norm) with the plan's
  recipe, one stride-2 level per planned level below the top.

Protocol (the Colin27 benchmark's): one training image listed ``batch`` times, ``CacheDataset`` of the
deterministic chain (``segmentation_preprocessing``), ``segmentation_augmentation`` (class-balanced patches, the
arm's flips, rotation/scaling of 30 % of the patches, intensity scale/shift), AdamW (1e-3, weight decay 1e-5),
``DiceCELoss(include_background=False, batch=True)``, warm-up + cosine learning rate over the *time* budget; the
held-out image is scored every ``--eval-every`` training seconds (evaluation off the clock) with a Gaussian
sliding window (overlap 0.5), the softmax taken back to its grid with ``Invertd``; final Dice and HD95 (mm).
Each arm runs in a fresh process (``--only``).

    python -m pipelines.benchmarks.plan_benchmark --dataset-dir /tmp/plan_data/position --seconds 150 --out /tmp/pb
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipelines.benchmarks.common import loadavg, machine_info, machine_line, write_json

ARMS = ("fixed-resunet", "fixed-planned-mirroring", "plan-resunet", "plan-unet")
FIXED = {"pixdim": [1.0, 1.0, 1.0], "patch_size": [64, 64, 64], "batch_size": 2, "mirror_axes": [0, 1, 2]}
WARMUP_FRACTION = 0.05


def lr_factor(fraction: float) -> float:
    """``WarmupCosineSchedule``'s factor at ``fraction`` of the schedule (the Colin27 benchmark's time schedule)."""
    if fraction < WARMUP_FRACTION:
        return fraction / WARMUP_FRACTION
    progress = min(1.0, (fraction - WARMUP_FRACTION) / (1.0 - WARMUP_FRACTION))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def recipe(arm: str, dataset_dir: str, fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    from monai_resunet.data import msd_modality
    from monai_resunet.planning import ensure_plan

    modality = msd_modality(dataset_dir)
    if arm in ("fixed-resunet", "fixed-planned-mirroring"):
        r = {**FIXED, **(fixed or {}), "modality": modality, "num_levels": 4, "network": "resunet"}
        if arm == "fixed-planned-mirroring":
            r["mirror_axes"] = ensure_plan(dataset_dir)["mirror_axes"]
        return r
    plan = ensure_plan(dataset_dir)
    keys = ("pixdim", "patch_size", "batch_size", "mirror_axes", "num_levels", "ct_window", "ct_target_range")
    out = {k: plan[k] for k in keys if k in plan}
    return {**out, "modality": modality, "network": "unet" if arm == "plan-unet" else "resunet"}


def build(r: dict[str, Any], num_classes: int):
    from monai.networks.nets import UNet

    from monai_resunet.networks import ResUNet
    from monai_resunet.planning import DEFAULT_NETWORK

    levels = int(r["num_levels"])
    if r["network"] == "unet":
        channels = (16, 32, 64, 128)[:levels]
        return UNet(3, 1, num_classes, channels=channels, strides=(2,) * (levels - 1), num_res_units=2)
    kwargs = dict(DEFAULT_NETWORK)
    kwargs["features"] = tuple(kwargs["features"])[:levels]
    kwargs["encoder_blocks"] = tuple(kwargs["encoder_blocks"])[:levels]
    return ResUNet(3, 1, num_classes, **kwargs)


def _pre_kwargs(r: dict[str, Any]) -> dict[str, Any]:
    kw: dict[str, Any] = {"pixdim": r["pixdim"], "modality": r["modality"], "pad_size": r["patch_size"]}
    if "ct_window" in r:
        kw.update(ct_window=r["ct_window"], ct_target_range=r["ct_target_range"])
    return kw


class HeldOut:
    """The held-out case: image pre-processed like training, label on its own grid; Dice/HD95 of a network."""

    def __init__(self, dataset_dir: str, r: dict[str, Any], num_classes: int) -> None:
        from monai.inferers import SlidingWindowInferer
        from monai.transforms import Compose, Invertd, LoadImage

        from monai_resunet.data import FastNibabelReader, SimpleITKReader, read_dataset_json
        from monai_resunet.transforms import segmentation_preprocessing

        meta = read_dataset_json(dataset_dir)
        self.num_classes = num_classes
        self.pre = Compose(segmentation_preprocessing(["image"], **_pre_kwargs(r)))
        self.test = self.pre({"image": str(Path(dataset_dir) / meta["test"][0])})
        load = LoadImage(image_only=True, ensure_channel_first=True)
        for reader in (FastNibabelReader(), SimpleITKReader()):
            load.register(reader)
        self.label = load(str(Path(dataset_dir) / meta["test_labels"][0]))
        self.spacing = [float(s) for s in self.label.pixdim[:3]]
        self.invert = Invertd(keys="pred", transform=self.pre, orig_keys="image", nearest_interp=False)
        self.inferer = SlidingWindowInferer(roi_size=r["patch_size"], sw_batch_size=2, overlap=0.5, mode="gaussian")

    def evaluate(self, network, final: bool) -> dict[str, Any]:
        import numpy as np
        import torch
        from monai.metrics import compute_dice, compute_hausdorff_distance
        from monai.networks.utils import one_hot

        network.eval()
        with torch.inference_mode():
            logits = self.inferer(self.test["image"][None], network)
            restored = self.invert({"image": self.test["image"], "pred": torch.softmax(logits[0], dim=0)})["pred"]
        network.train()
        pred = one_hot(restored.argmax(dim=0, keepdim=True)[None].as_tensor().long(), self.num_classes)
        truth = one_hot(torch.as_tensor(np.asarray(self.label))[None].long(), self.num_classes)
        dice = compute_dice(pred, truth, include_background=False)[0].tolist()
        out: dict[str, Any] = {"dice": dice, "mean_dice": float(np.nanmean(dice))}
        if final:
            hd = compute_hausdorff_distance(pred, truth, include_background=False, percentile=95, spacing=self.spacing)
            values = [float(v) for v in hd[0].tolist() if math.isfinite(v)]
            out["hd95_mm"] = hd[0].tolist()
            out["mean_hd95_mm"] = float(np.mean(values)) if values else None
        return out


def run_arm(
    arm: str,
    dataset_dir: str,
    seconds: float,
    eval_every: float,
    seed: int,
    threads: int,
    clock: str = "cpu",
    fixed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    import torch
    from monai.data import CacheDataset, DataLoader
    from monai.losses import DiceCELoss
    from monai.transforms import Compose
    from monai.utils import set_determinism

    from monai_resunet.data import msd_class_names, msd_datalist
    from monai_resunet.transforms import segmentation_augmentation, segmentation_preprocessing

    torch.set_num_threads(threads)
    set_determinism(seed=seed)
    r = recipe(arm, dataset_dir, fixed)
    # "cpu": the process's CPU seconds (all threads), so arms that share a loaded machine get the same compute
    tick = time.process_time if clock == "cpu" else time.perf_counter
    wall_start = time.perf_counter()
    num_classes = len(msd_class_names(dataset_dir))
    items = msd_datalist(dataset_dir, "training")
    data = [items[i % len(items)] for i in range(max(int(r["batch_size"]), len(items)))]
    axes = list(r["mirror_axes"])
    aug = segmentation_augmentation(
        patch_size=r["patch_size"], num_classes=num_classes, num_samples=1, flip=bool(axes), flip_axes=axes or (0,)
    )
    chain = Compose(segmentation_preprocessing(["image", "label"], **_pre_kwargs(r)) + aug)
    loader = DataLoader(CacheDataset(data, chain, cache_rate=1.0, num_workers=0, progress=False),
                        batch_size=int(r["batch_size"]), shuffle=True, num_workers=0)  # fmt: skip
    held_out = HeldOut(dataset_dir, r, num_classes)
    network = build(r, num_classes)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3, weight_decay=1e-5)
    network.train()
    curve, train_s, steps, next_eval = [], 0.0, 0, eval_every
    while train_s < seconds:
        for batch in loader:
            start = tick()
            for group in optimizer.param_groups:
                group["lr"] = 1e-3 * lr_factor(train_s / seconds)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(network(batch["image"].as_tensor()), batch["label"].as_tensor())
            loss.backward()
            optimizer.step()
            train_s += tick() - start
            steps += 1
            if train_s >= next_eval or train_s >= seconds:
                final = train_s >= seconds
                ev = held_out.evaluate(network, final)
                curve.append({"train_s": round(train_s, 1), "step": steps, "mean_dice": ev["mean_dice"]})
                print(f"{arm}: {train_s:.0f} s, step {steps}, loss {float(loss):.3f}, Dice {ev['mean_dice']:.3f}",
                      file=sys.stderr, flush=True)  # fmt: skip
                next_eval = (math.floor(train_s / eval_every) + 1) * eval_every
            if train_s >= seconds:
                break
    params = sum(p.numel() for p in network.parameters())
    recipe_out = {k: v for k, v in r.items()}
    return {"arm": arm, "recipe": recipe_out, "params": params, "steps": steps, "train_s": round(train_s, 1),
            "mean_dice": ev["mean_dice"], "dice": ev["dice"], "mean_hd95_mm": ev["mean_hd95_mm"],
            "hd95_mm": ev["hd95_mm"], "curve": curve, "load_end": loadavg(), "clock": clock,
            "wall_s": round(time.perf_counter() - wall_start, 1)}  # fmt: skip


def time_to(curve: list[dict], target: float) -> float | None:
    return next((p["train_s"] for p in curve if p["mean_dice"] >= target), None)


def summary(
    rows: list[dict], dataset_dir: str, seconds: float, info: dict, load_start: str, clock: str, seed: int
) -> str:
    fixed = next((r for r in rows if r["arm"] == "fixed-resunet" and "error" not in r), None)
    planned = next((r for r in rows if r["arm"] == "plan-resunet" and "error" not in r), None)
    lines = [
        f"### {Path(dataset_dir).name}",
        "",
        f"{machine_line(info)}; load average at start {load_start}; {seconds:g} {clock} s of training per arm "
        f"(cpu: the process's CPU seconds, all threads), seed {seed}.",
        "",
        "| arm | spacing mm | patch × batch | mirrored axes | levels | steps | mean Dice | mean HD95 mm "
        "| train s to the peer's final Dice | wall s |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['arm']} | error: {r['error'][:200]} |")
            continue
        rc = r["recipe"]
        peer = planned if r["arm"] == "fixed-resunet" else fixed
        to_peer = time_to(r["curve"], peer["mean_dice"]) if peer else None
        hd = r["mean_hd95_mm"]
        lines.append(
            f"| {r['arm']} | {'×'.join(f'{s:g}' for s in rc['pixdim'])} | {'×'.join(map(str, rc['patch_size']))} × "
            f"{rc['batch_size']} | {','.join(map(str, rc['mirror_axes'])) or 'none'} | {rc['num_levels']} | "
            f"{r['steps']} | {r['mean_dice']:.3f} | {'—' if hd is None else f'{hd:.2f}'} | "
            f"{'not reached' if to_peer is None else f'{to_peer:.0f}'} | {r.get('wall_s', '?')} |"
        )
    lines.append("")
    lines.append("Per class Dice: " + "; ".join(
        f"{r['arm']} " + ", ".join(f"{d:.3f}" for d in r["dice"]) for r in rows if "error" not in r))  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-dir", required=True)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--seconds", type=float, default=150.0, help="training seconds per arm")
    parser.add_argument("--eval-every", type=float, default=50.0, help="training seconds between evaluations")
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="budget in CPU or wall seconds")
    parser.add_argument("--fixed-pixdim", type=float, nargs=3, default=FIXED["pixdim"])
    parser.add_argument("--fixed-patch", type=int, nargs=3, default=FIXED["patch_size"])
    parser.add_argument("--only", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.only:
        fixed = {"pixdim": args.fixed_pixdim, "patch_size": args.fixed_patch}
        row = run_arm(args.only, args.dataset_dir, args.seconds, args.eval_every, args.seed, args.threads,
                      args.clock, fixed)  # fmt: skip
        write_json(out / f"{args.only}.json", row, indent=2)
        return 0
    info, load_start = machine_info(args.threads), loadavg()
    rows = []
    for arm in args.arms:
        cmd = [sys.executable, "-m", "pipelines.benchmarks.plan_benchmark", "--only", arm, "--dataset-dir",
               args.dataset_dir, "--seconds", str(args.seconds), "--eval-every", str(args.eval_every),
               "--seed", str(args.seed), "--threads", str(args.threads), "--out", str(out), "--clock", args.clock,
               "--fixed-pixdim", *map(str, args.fixed_pixdim),
               "--fixed-patch", *map(str, args.fixed_patch)]  # fmt: skip
        proc = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)
        sys.stderr.write(proc.stderr[-2000:])
        result = out / f"{arm}.json"
        if proc.returncode == 0 and result.is_file():
            rows.append(json.loads(result.read_text()))
        else:
            rows.append({"arm": arm, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "?"})
    text = summary(rows, args.dataset_dir, args.seconds, info, load_start, args.clock, args.seed)
    (out / "summary.md").write_text(text)
    results = {"machine": info, "load_start": load_start, "seed": args.seed, "rows": rows}
    write_json(out / "results.json", results, indent=2)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
