#!/usr/bin/env python
"""The same volume through the 2D slice-wise bundle and the 3D sliding-window bundle: time, peak memory, Dice.

It answers "what does the 2D model cost and give next to the 3D one on a whole scan?". Each bundle runs in its
own Python process (this script re-invoked with ``--child``), through the bundle's real inference path:
``Segmenter.from_bundle`` on a copy of the bundle (its ``inference.json``: pre-processing, then ``SliceInferer`` →
``Invertd`` → arg-max for 2D, ``SlabArgmaxInferer`` → ``InvertLabelMapd`` for 3D) and ``segment_file`` writing the
label map. Reported per bundle: end-to-end seconds (load → write), the network's share (its calls timed by a
wrapper), the number of network calls, the process's peak RSS and its rise over the value after the imports, and
the Dice per class against a ground-truth label when one is given.

    python -m pipelines.benchmarks.bundle_2d_vs_3d                          # synthetic 256×256×160 MR-like volume
    python -m pipelines.benchmarks.bundle_2d_vs_3d --shape 512 512 300 --classes 3
    python -m pipelines.benchmarks.bundle_2d_vs_3d --colin27                      # the Colin27 held-out image + weights
    python -m pipelines.benchmarks.bundle_2d_vs_3d --image scan.nii.gz --label truth.nii.gz \\
        --weights-3d bundles/resunet3d_segmentation/models/model.pt --weights-2d ...

Weights: ``--weights-3d/--weights-2d`` (any file ``Segmenter`` loads), or with ``--colin27`` the final networks
that ``python -m pipelines.benchmarks.colin27 --include-2d`` saved (``predictions/<network>.pt``), trained on the left
hemisphere under the same CPU budget; without either, randomly initialised networks (the table says so): time
and memory do not depend on the weights, Dice does, so it is then left out.

The synthetic volume (``monai.data.create_test_image_3d``, spheres on noise, 1×1×1 mm) needs no download.
Outputs: a printed table and ``--out`` (default ``pipelines/benchmarks/results/``) ``bundle_2d_vs_3d.md`` / ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.benchmarks import common

BUNDLES = {
    "3D sliding window": common.REPO / "bundles" / "resunet3d_segmentation",
    "2D slice-wise": common.REPO / "bundles" / "resunet2d_segmentation",
}
COLIN27_WEIGHTS = {"3D sliding window": "resunet3d-bundle.pt", "2D slice-wise": "resunet2d-bundle.pt"}
DEFAULT_OUT = common.RESULTS


# ------------------------------------------------------------------------------------------------- child


def run_child(p: dict[str, Any]) -> dict[str, Any]:
    """One bundle on one volume, in this process: build, segment (timed), score."""
    import numpy as np
    import torch

    torch.set_num_threads(p["threads"])
    from monai.transforms import LoadImage

    from monai_resunet import write_model_properties
    from monai_resunet.inference import Segmenter

    after_imports = common.maxrss_mib()
    bundle = Path(p["workdir"]) / Path(p["bundle"]).name
    shutil.copytree(p["bundle"], bundle, ignore=shutil.ignore_patterns("models", "eval"))
    (bundle / "models").mkdir()
    write_model_properties(bundle / "models", **p["properties"])
    weights = p["weights"]
    if weights is None:  # random initialisation: time and memory only
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config(str(bundle / "configs" / "inference.json"))
        parser["bundle_root"] = str(bundle)
        weights = str(bundle / "models" / "model.pt")
        torch.save(parser.get_parsed_content("network_def").state_dict(), weights)
    seg = Segmenter.from_bundle(bundle, device="cpu", checkpoint=weights)
    timed = common.TimedNetwork(seg.network)
    seg.network = timed
    output = Path(p["workdir"]) / f"{bundle.name}_seg.nii.gz"
    start = time.perf_counter()
    seg.segment_file(p["image"], output)
    total = time.perf_counter() - start
    result = {
        "total_s": total,
        "network_s": timed.seconds,
        "network_calls": timed.calls,
        "peak_rss_mib": common.maxrss_mib(),
        "rss_rise_mib": common.maxrss_mib() - after_imports,
        "inferer": type(seg.inferer).__name__,
        "patch": list(seg.parser.get_parsed_content("patch_size")),
        "sw_batch_size": seg.parser.get_parsed_content("sw_batch_size"),
    }
    if p["label"]:
        from monai.metrics import compute_dice
        from monai.networks.utils import one_hot

        n = len(p["properties"]["class_names"])
        pred = LoadImage(image_only=True, ensure_channel_first=True)(str(output))
        truth = LoadImage(image_only=True, ensure_channel_first=True)(p["label"])
        if tuple(pred.shape) != tuple(truth.shape):
            raise ValueError(
                f"{p['label']}: shape {tuple(truth.shape)} differs from the prediction {tuple(pred.shape)}."
            )
        dice = compute_dice(one_hot(pred[None].long(), n), one_hot(truth[None].long(), n), include_background=False)[
            0
        ].tolist()
        result["dice"] = dice
        result["mean_dice"] = float(np.nanmean(dice))
    return result


# ------------------------------------------------------------------------------------------------ parent


def synthetic_volume(workdir: Path, shape: Sequence[int], classes: int) -> tuple[str, str]:
    """A 1 mm MR-like volume of spheres (``create_test_image_3d``) and its label, as NIfTI."""
    import nibabel as nib
    import numpy as np
    from monai.data import create_test_image_3d

    image, label = create_test_image_3d(
        *shape, num_objs=12, rad_max=max(8, min(shape) // 8), num_seg_classes=classes - 1, noise_max=0.3,
        random_state=np.random.RandomState(0),
    )  # fmt: skip
    paths = (str(workdir / "volume.nii.gz"), str(workdir / "volume_label.nii.gz"))
    nib.save(nib.Nifti1Image((image * 1000).astype(np.int16), np.eye(4)), paths[0])
    nib.save(nib.Nifti1Image(label.astype(np.uint8), np.eye(4)), paths[1])
    return paths


def colin27_inputs(results: Path) -> tuple[str, str, list[str], dict[str, str | None]]:
    """The Colin27 held-out image, its label, the class names and the weights the real-data benchmark saved."""
    from pipelines import fetch_colin27

    dataset = fetch_colin27.default_dataset_dir()
    meta = json.loads((dataset / "dataset.json").read_text())
    weights = {}
    for name, file in COLIN27_WEIGHTS.items():
        path = results / "predictions" / file
        weights[name] = str(path) if path.is_file() else None
    return (str(dataset / meta["test"][0]), str(dataset / meta["test_labels"][0]), list(fetch_colin27.CLASS_NAMES),
            weights)  # fmt: skip


def run_bundle(name: str, params: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run one bundle in a fresh process; an error becomes the row's error."""
    params_path, result_path = workdir / f"{name[:2]}_params.json", workdir / f"{name[:2]}_result.json"
    params_path.write_text(json.dumps(params))
    error = common.run_module(common.module_command("bundle_2d_vs_3d", "--child", str(params_path), str(result_path)))
    if error or not result_path.is_file():
        return {"error": error or "no result"}
    return json.loads(result_path.read_text())


def markdown(rows: dict[str, dict[str, Any]], info: dict[str, str], setup: dict[str, Any]) -> str:
    names = setup["class_names"][1:]
    lines = [
        "# The same volume through the 2D slice-wise and the 3D sliding-window bundles",
        "",
        common.machine_line(info),
        "",
        f"Volume: {setup['volume']}. Weights: {setup['weights']}. Each bundle in its own process, through "
        "`Segmenter.from_bundle(...).segment_file` (its `inference.json`: pre-processing, then the 3D bundle's "
        "`SlabArgmaxInferer` → `InvertLabelMapd`, or the 2D bundle's `SliceInferer` → softmax → `Invertd` → arg-max; "
        'NIfTI written). "network s" is the time inside the network\'s calls; the rest is loading, resampling, '
        "stitching, inversion and writing.",
        "",
        "| bundle | inferer | patch | network calls | total s | network s | network share | peak RSS MiB "
        "| RSS rise MiB | mean Dice |" + "".join(f" {n} |" for n in names),
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(names),
    ]
    for name, r in rows.items():
        if r.get("error"):
            lines.append(f"| {name} | error: {r['error']} |" + " |" * (9 + len(names)))
            continue
        lines.append(_row(name, r, names))
    lines.append("")
    return "\n".join(lines)


def _row(name: str, r: dict[str, Any], names: Sequence[str]) -> str:
    dice = r.get("dice")
    cells = [
        name,
        f"{r['inferer']} (sw_batch_size {r['sw_batch_size']})",
        "×".join(map(str, r["patch"])),
        str(r["network_calls"]),
        f"{r['total_s']:.1f}",
        f"{r['network_s']:.1f}",
        f"{r['network_s'] / r['total_s']:.0%}",
        f"{r['peak_rss_mib']:,.0f}",
        f"{r['rss_rise_mib']:,.0f}",
        f"{r['mean_dice']:.3f}" if dice else "–",
        *([f"{d:.3f}" for d in dice] if dice else ["–"] * len(names)),
    ]
    return "| " + " | ".join(cells) + " |"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--image", help="a volume to segment (default: a synthetic one)")
    parser.add_argument("--label", help="its ground-truth label map, for Dice")
    parser.add_argument("--class-names", nargs="+", help="class names, background first (with --image)")
    parser.add_argument("--modality", default="MR", help="MR or CT (with --image; default MR)")
    parser.add_argument("--weights-3d", help="weights for the 3D bundle (default: random)")
    parser.add_argument("--weights-2d", help="weights for the 2D bundle (default: random)")
    parser.add_argument("--colin27", action="store_true", help="the Colin27 held-out image and the benchmark's weights")
    parser.add_argument("--colin27-results", default=str(common.RESULTS / "colin27"),
                        help="where the colin27 benchmark wrote its predictions/ (with --colin27)")  # fmt: skip
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 256, 160), help="synthetic volume size")
    parser.add_argument("--classes", type=int, default=3, help="classes of the synthetic volume, background included")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="folder for bundle_2d_vs_3d.md/.json")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child:
        params_path, result_path = map(Path, args.child)
        result = run_child(json.loads(params_path.read_text()))
        common.write_json(result_path, result)
        return result
    with tempfile.TemporaryDirectory(prefix="resunet_2d_vs_3d_") as tmp:
        workdir = Path(tmp)
        weights: dict[str, str | None] = {"3D sliding window": args.weights_3d, "2D slice-wise": args.weights_2d}
        if args.colin27:
            image, label, class_names, weights = colin27_inputs(Path(args.colin27_results))
            modality, volume = "MR", f"Colin27 held-out image (right hemisphere mirrored), {image}"
        elif args.image:
            image, label, modality = args.image, args.label, args.modality
            class_names = args.class_names or ["background", *(f"class_{i}" for i in range(1, args.classes))]
            volume = image
        else:
            image, label = synthetic_volume(workdir, args.shape, args.classes)
            class_names = ["background", *(f"class_{i}" for i in range(1, args.classes))]
            modality, volume = "MR", f"synthetic {'×'.join(map(str, args.shape))} at 1 mm (create_test_image_3d)"
        rows: dict[str, dict[str, Any]] = {}
        for name, bundle in BUNDLES.items():
            is_2d = name.startswith("2D")
            properties = {
                "class_names": class_names,
                "modality": modality,
                "pixdim": [1.0, 1.0, 1.0],  # as the colin27 benchmark trains both (the synthetic volume is 1 mm)
                "patch_size": [128, 128] if is_2d else [64, 64, 64],
            }
            run_dir = workdir / name[:2]
            run_dir.mkdir()
            params = {
                "bundle": str(bundle), "workdir": str(run_dir), "image": image, "weights": weights[name],
                "label": label if weights[name] else None, "properties": properties, "threads": args.threads,
            }  # fmt: skip
            print(f"{name}: running …", flush=True)
            rows[name] = run_bundle(name, params, workdir)
        described = {n: (w or "random initialisation (Dice not meaningful, left out)") for n, w in weights.items()}
        setup = {
            "volume": volume,
            "weights": "; ".join(f"{n}: {w}" for n, w in described.items()),
            "class_names": class_names,
        }
        info = common.machine_info(threads=args.threads)
        text = markdown(rows, info, setup)
        print(text)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bundle_2d_vs_3d.md").write_text(text)
        (out / "bundle_2d_vs_3d.json").write_text(json.dumps({"machine": info, "setup": setup, "rows": rows}, indent=2))
        print(f"written: {out / 'bundle_2d_vs_3d.md'}, .json")
        return rows


if __name__ == "__main__":
    main()
