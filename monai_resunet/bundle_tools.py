"""``python -m monai_resunet copy-bundle NAME DEST``: a bundle shipped with the package, copied into a folder the
user owns (what ``python -m monai.bundle download`` does for Model Zoo bundles), ready for
``python -m monai.bundle run ... --config_file DEST/NAME/configs/...``."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from monai_resunet.bundle_root import PACKAGE_BUNDLES, REPO_BUNDLES, packaged_bundle_dir

__all__ = ["BUNDLE_NAMES", "copy_bundle", "add_copy_bundle_parser"]

BUNDLE_NAMES = ("resunet3d_segmentation", "resunet2d_segmentation")

# what a shipped bundle is; a source checkout's bundles/ may also hold trained weights and outputs
_NOT_SHIPPED = shutil.ignore_patterns("models", "eval", "runs", "__pycache__", "*.pt", "*.ts", "*.onnx", "*~")


def copy_bundle(name: str, dest: str | Path, overwrite: bool = False) -> Path:
    """Copy the pristine bundle ``name`` (configs, docs, licence, schema; no weights) to ``dest/name``, with an
    empty ``models/`` for training to fill.

    Args:
        name: one of :data:`BUNDLE_NAMES`.
        dest: parent folder (created when missing).
        overwrite: replace an existing ``dest/name``; otherwise that is an error (it may hold trained weights).

    Example::

        bundle = copy_bundle("resunet3d_segmentation", "~/bundles")  # ~/bundles/resunet3d_segmentation
    """
    if name not in BUNDLE_NAMES:
        raise ValueError(f"unknown bundle {name!r}; choose one of {', '.join(BUNDLE_NAMES)}.")
    source = packaged_bundle_dir(name)
    target = Path(dest).expanduser().resolve() / name
    if target.exists():
        if not overwrite:
            raise FileExistsError(
                f"{target} already exists (it may hold trained weights); pass --overwrite to replace it."
            )
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=_NOT_SHIPPED)
    (target / "models").mkdir(exist_ok=True)
    return target


def _run(args: argparse.Namespace) -> int:
    try:
        target = copy_bundle(args.name, args.dest, overwrite=args.overwrite)
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        print(f"copy-bundle: {e}", file=sys.stderr)
        return 2
    print(target)
    return 0


def add_copy_bundle_parser(subparsers) -> None:
    """Register ``copy-bundle`` on the ``python -m monai_resunet`` command line."""
    parser = subparsers.add_parser(
        "copy-bundle",
        help="copy a bundle shipped with the package into a folder you own",
        description=f"Copy a shipped bundle to DEST/NAME (from {PACKAGE_BUNDLES} in an installed wheel, "
        f"{REPO_BUNDLES} in a source checkout), without trained weights.",
    )
    parser.add_argument("name", choices=BUNDLE_NAMES, help="bundle to copy")
    parser.add_argument("dest", help="folder to copy it into (the bundle becomes DEST/NAME)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DEST/NAME")
    parser.set_defaults(func=_run)
