#!/usr/bin/env python
"""Pool several ``colin27`` benchmark runs (other seeds, repeats) into one table per recipe: the held-out mean
Dice of every run, their mean and standard deviation, and the mean per structure.

One 6-minute run of one network moves by up to 0.01 mean Dice between seeds, more than most differences between
the networks, so a ranking needs several seeds; this script reads what the runs wrote and computes nothing else.

    python -m pipelines.benchmarks.colin27 --seed 7 --out pipelines/benchmarks/results/colin27_seed7
    python -m pipelines.benchmarks.colin27_seeds pipelines/benchmarks/results/colin27 \\
        pipelines/benchmarks/results/colin27_seed7 --out pipelines/benchmarks/results/colin27_seeds.md

A recipe is a network plus the ``--override`` entries its run had (they change the ResUNet rows only), so a tried
recipe is never pooled with the default. Each argument is a run's output folder (its ``colin27_curves.json``) or
that file itself, optionally ``=TAG``: every row of that run is then named ``network (TAG)`` instead of by its
overrides — a recipe changed in the config rather than by ``--override`` (``...=learning_rate 2e-3``), or a short
name — and an empty tag (``.../run=``) names the rows by their network alone, for a run whose override has since
become the bundle default. Runs of the reversed split (``fetch_colin27.py --train-side right``: trained on the
right hemisphere) form recipes of their own, marked ``[right → other hemisphere]``. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BUNDLE_ROWS = ("resunet3d-bundle", "resunet2d-bundle")  # the rows --override applies to (colin27.py)


def load_runs(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Every result row of the given runs (``PATH`` or ``PATH=TAG``), each with the ``seed``, ``overrides``,
    ``source`` and ``recipe`` name of its run."""
    rows: list[dict[str, Any]] = []
    for given in paths:
        given, tagged, tag = str(given).partition("=")
        path = Path(given)
        path = path / "colin27_curves.json" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"{given}: no colin27_curves.json (a pipelines.benchmarks.colin27 output folder?)")
        try:
            run = json.loads(path.read_text())
            settings, results = run["settings"], run["results"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a pipelines.benchmarks.colin27 result ({type(e).__name__}: {e})") from None
        for row in results:
            if row.get("error") or row.get("mean_dice") is None:
                continue  # a network that failed has no score to pool
            overrides = settings.get("overrides", {}) if row["network"] in BUNDLE_ROWS else {}
            if tagged:
                recipe = f"{row['network']} ({tag})" if tag else row["network"]
            else:
                recipe = recipe_of(row["network"], overrides)
            if settings.get("train_side", "left") != "left":  # the other split: never pooled with the default one
                recipe += f" [{settings['train_side']} → other hemisphere]"
            run_info = {"seed": settings.get("seed"), "overrides": overrides, "source": str(path), "recipe": recipe}
            rows.append({**row, **run_info})
    return rows


def recipe_of(network: str, overrides: dict[str, Any]) -> str:
    """The network name, with the overrides of its run when it had any."""
    extra = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(overrides.items()))
    return f"{network} ({extra})" if extra else network


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per recipe, in the order recipes first appear: its runs ``(seed, mean Dice)``, the mean and sample
    standard deviation of their mean Dice (``None`` for a single run) and the mean Dice of each structure."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["recipe"], []).append(row)
    summary = []
    for recipe, runs in groups.items():
        scores = [float(r["mean_dice"]) for r in runs]
        structures = list(runs[0]["dice"])
        summary.append(
            {
                "recipe": recipe,
                "runs": [(r["seed"], float(r["mean_dice"])) for r in runs],
                "mean": statistics.fmean(scores),
                "sd": statistics.stdev(scores) if len(scores) > 1 else None,
                "structures": {s: statistics.fmean(float(r["dice"][s]) for r in runs) for s in structures},
            }
        )
    return summary


def markdown(summary: Sequence[dict[str, Any]]) -> str:
    structures = list(summary[0]["structures"]) if summary else []
    lines = [
        "| recipe | runs: mean Dice (seed) | n | mean | SD | " + " | ".join(structures) + " |",
        "| --- | --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in structures) + " |",
    ]
    for entry in sorted(summary, key=lambda e: -e["mean"]):
        runs = ", ".join(f"{d:.3f} ({s})" for s, d in entry["runs"])
        sd = "—" if entry["sd"] is None else f"{entry['sd']:.3f}"
        per = " | ".join(f"{entry['structures'].get(s, float('nan')):.3f}" for s in structures)
        lines.append(f"| {entry['recipe']} | {runs} | {len(entry['runs'])} | {entry['mean']:.3f} | {sd} | {per} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="colin27 benchmark output folders (or their colin27_curves.json)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    try:
        table = markdown(summarise(load_runs(args.runs)))
        # the command that made it, so the table can be rebuilt from the files it names
        command = " ".join(["python -m pipelines.benchmarks.colin27_seeds", *(f"'{r}'" for r in args.runs)])
        table = (
            "# Colin27 benchmark: held-out mean Dice pooled over runs\n\n"
            f"Made by `{command}`. One row per recipe; SD is the sample standard deviation over its runs; the "
            "structure columns are means over the runs.\n\n" + table
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(table)
        tmp.replace(args.out)  # atomic: a reader never sees half a table
    return 0


if __name__ == "__main__":
    sys.exit(main())
