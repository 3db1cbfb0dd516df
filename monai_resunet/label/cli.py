"""``python -m monai_resunet label-app DIR``: write a MONAI Label app folder (no ``monailabel`` import here)."""

from __future__ import annotations

import argparse

from monai_resunet.label.make_app import DEFAULT_BUNDLES, write_label_app

__all__ = ["add_label_app_parser"]


def _run(args: argparse.Namespace) -> int:
    bundles = [b.strip() for b in args.bundles.split(",") if b.strip()]
    out = write_label_app(args.dir, bundles=bundles, source=args.source, overwrite=args.overwrite)
    print(f"MONAI Label app written to {out} (bundles: {', '.join(bundles)})")
    print("Start it in the MONAI Label environment (pipelines/deploy/label_env.sh):")
    print(
        f"  monailabel start_server --app {out} --studies STUDIES_DIR --host 127.0.0.1 --port 8000 "
        f"--conf models {','.join(bundles)}"
    )
    return 0


def add_label_app_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``label-app`` sub-command to an ``argparse`` sub-parsers object."""
    parser = subparsers.add_parser(
        "label-app",
        help="write a MONAI Label app folder serving the bundles",
        description="Write a ready, writable MONAI Label app folder (main.py + model/<bundle>/ copies with their "
        "trained weights) to serve the bundles with `monailabel start_server --app DIR`.",
    )
    parser.add_argument("dir", help="app folder to write")
    parser.add_argument(
        "--bundles", default=",".join(DEFAULT_BUNDLES), help="comma-separated bundle names (default: %(default)s)"
    )
    parser.add_argument(
        "--source", default=None, help="folder holding the bundle folders (default: this source tree's bundles/)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace bundle folders already in DIR (the datastore is kept)"
    )
    parser.set_defaults(func=_run)
    return parser
