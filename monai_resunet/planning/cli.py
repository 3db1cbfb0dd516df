"""``python -m monai_resunet plan --dataset_dir DIR``: plan the training recipe from the data and print why."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_plan_parser"]


def _run(args: argparse.Namespace) -> int:
    from monai_resunet.planning.planner import PLAN_FILE, load_plan, plan_dataset, print_plan

    dataset_dir = Path(args.dataset_dir)
    if not (dataset_dir / "dataset.json").is_file():
        print(f"error: {dataset_dir / 'dataset.json'} not found: --dataset_dir needs an MSD folder.", file=sys.stderr)
        return 2
    existing = Path(args.output) if args.output else dataset_dir / PLAN_FILE
    if existing.is_file() and not args.force:
        print(f"{existing} exists (use --force to plan again):")
        print_plan(load_plan(existing))
        return 0
    try:
        plan = plan_dataset(dataset_dir, memory_gib=args.memory_gib, output=args.output)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print_plan(plan)
    written = Path(args.output) if args.output else Path(plan["statistics"]["datastats"]).parent / PLAN_FILE
    print(f"plan written to {written}")
    return 0


def add_plan_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``plan`` sub-command to an ``argparse`` sub-parsers object."""
    parser = subparsers.add_parser(
        "plan",
        help="plan spacing, normalisation, mirroring, patch and batch size from a data set",
        description="Analyse the training cases of an MSD-layout data set with MONAI's DataAnalyzer and write "
        "resunet_plan.json beside them (an editable JSON: every value with its reason); `run training` reads it.",
    )
    parser.add_argument("--dataset_dir", required=True, help="folder with dataset.json")
    parser.add_argument("--memory_gib", type=float, default=None, help="training memory budget (default: GPU or CPU)")
    parser.add_argument("--output", default=None, help="plan file (default: DATASET_DIR/resunet_plan.json)")
    parser.add_argument("--force", action="store_true", help="plan again even when a plan exists")
    parser.set_defaults(func=_run)
    return parser
