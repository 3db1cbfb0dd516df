"""``python -m monai_resunet <command>`` (also the ``monai-resunet`` entry point)."""

from __future__ import annotations

import argparse
import logging
import sys

from monai_resunet.inference.cli import add_segment_parser
from monai_resunet.label.cli import add_label_app_parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="monai-resunet", description="ResUNet bundles: segmentation and tools.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_segment_parser(subparsers)
    add_label_app_parser(subparsers)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
