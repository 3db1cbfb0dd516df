"""``python -m monai_resunet <command>`` (also the ``monai-resunet`` entry point)."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from monai_resunet.bundle_tools import add_copy_bundle_parser
from monai_resunet.inference.cli import add_segment_parser
from monai_resunet.label.cli import add_label_app_parser
from monai_resunet.planning.cli import add_plan_parser

# Third-party messages a working install always prints and a user cannot act on; `-v` shows them.
_HARMLESS_WARNINGS = (
    (UserWarning, r"NvImgCodecPydicomReader"),  # MONAI without nvImageCodec falls back to pydicom's decoders
    (FutureWarning, r".*Orientationd.*labels"),  # MONAI's own default, changing in a later release
    (UserWarning, r"The given NumPy array is not writable"),  # torch wrapping a read-only ITK array (NRRD input)
)
_HARMLESS_LOGGERS = ("monai.data.nvimgcodec_pydicom_plugin",)


def configure_output(verbose: int) -> None:
    """Log level and warning filters for one CLI call: quiet by default, INFO and every warning with ``-v``."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if verbose:
        return
    for category, message in _HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in _HARMLESS_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def _add_verbose(parser: argparse.ArgumentParser, default: object) -> None:
    if "-v" not in parser._option_string_actions:
        parser.add_argument(
            "-v", "--verbose", action="count", default=default, help="show the INFO log and third-party warnings"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="monai-resunet", description="ResUNet bundles: segmentation and tools.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_segment_parser(subparsers)
    add_label_app_parser(subparsers)
    add_plan_parser(subparsers)
    add_copy_bundle_parser(subparsers)
    _add_verbose(parser, 0)
    for sub in subparsers.choices.values():  # `segment ... -v` works as well as `-v segment ...`
        _add_verbose(sub, argparse.SUPPRESS)
    args = parser.parse_args(argv)
    configure_output(args.verbose)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
