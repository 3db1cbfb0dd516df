"""``python -m monai_resunet segment``: batch segmentation of files and DICOM folders with a trained bundle.

One bad input is reported (named, with the reason) and skipped; the others are written. The exit status is
non-zero when any input failed, and a summary closes the run.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from monai_resunet.config_flags import add_override_option

__all__ = ["add_segment_parser", "run_segment", "output_name", "output_names", "segment_overrides", "check_input"]

logger = logging.getLogger("monai_resunet")

FORMATS = {"nifti": ".nii.gz", "nrrd": ".nrrd", "mha": ".mha", "dicom-seg": ".dcm"}
_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")


def output_name(input_path: Path, fmt: str, postfix: str) -> str:
    """``scan.nii.gz`` → ``scan_seg.nii.gz``; a DICOM folder ``ct/`` → ``ct_seg.nii.gz`` (or ``.dcm``)."""
    name = input_path.name
    for suffix in _IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return f"{name}_{postfix}{FORMATS[fmt]}"


def output_names(input_paths: list[Path], fmt: str, postfix: str) -> list[str]:
    """:func:`output_name` for each input, made unique: inputs that would share a name (``case_001/imaging.nii.gz``
    and ``case_002/imaging.nii.gz``, the KiTS / BraTS layout, or ``scan.nii.gz`` and ``scan.nrrd``) get their
    folder's name in front (``case_001_imaging_seg.nii.gz``). Raises ``ValueError`` naming the inputs when that is
    still not unique, before anything is segmented, rather than letting one output replace another."""
    names = [output_name(p, fmt, postfix) for p in input_paths]
    clashing = {n for n in names if names.count(n) > 1}
    names = [f"{p.resolve().parent.name}_{n}" if n in clashing else n for p, n in zip(input_paths, names)]
    seen: dict[str, Path] = {}
    for path, name in zip(input_paths, names):
        if name in seen:
            raise ValueError(
                f"{seen[name]} and {path} would both be written as {name}; segment them into separate output folders "
                "or rename one."
            )
        seen[name] = path
    return names


def segment_overrides(args: argparse.Namespace) -> dict:
    """The ``inference.json`` overrides a ``segment`` run asks for: ``--override`` entries, and ``--series-uid`` as
    the bundle's DICOM reader choosing that series from folders."""
    overrides = dict(args.override)
    series_uid = getattr(args, "series_uid", None)
    if series_uid:
        overrides["image_reader"] = f"$monai_resunet.data.DicomSeriesReader(series_uid={series_uid!r})"
    return overrides


def check_input(path: Path, fmt: str, series_uid: str | None = None) -> str:
    """Before any inference: one line saying what will be read from ``path`` (the run's record), after checking that
    it can be read and, for ``dicom-seg``, that a DICOM-SEG can reference it; raises ``ValueError`` otherwise."""
    from monai_resunet.data.dicom_series import input_summary
    from monai_resunet.inference.writers import check_dicom_seg_source

    if fmt == "dicom-seg":
        return check_dicom_seg_source(path, series_uid).summary()
    return input_summary(path, series_uid)


def add_segment_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "segment",
        help="segment images with a trained bundle",
        description="Segment NIfTI/NRRD/MHA files, DICOM files and DICOM series folders with a trained bundle "
        "(3D sliding window or 2D slice by slice, as the bundle's inference.json says). Label maps are written "
        "on each input's own grid.",
    )
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="image files or DICOM series folders")
    parser.add_argument(
        "--input-list",
        default=None,
        metavar="FILE",
        help="a text file of further inputs, one path per line (blank lines and # comments ignored), for archives "
        "too long for a command line. Under torchrun (e.g. `torchrun --nproc_per_node=2 -m monai_resunet segment "
        "...`) each rank segments a share of the inputs, balanced by size, and rank 0 writes segment_summary.csv/"
        ".json into the output folder",
    )
    parser.add_argument("--bundle", required=True, help="bundle folder (holding configs/ and models/model.pt)")
    parser.add_argument("-o", "--output-dir", required=True, help="folder for the label maps (created if needed)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when available)")
    parser.add_argument("--checkpoint", default=None, help="weights to use instead of <bundle>/models/model.pt")
    parser.add_argument(
        "--format",
        choices=sorted(FORMATS),
        default="nifti",
        help="output format (default: nifti); dicom-seg needs DICOM inputs and the 'dicom' extra (highdicom)",
    )
    parser.add_argument(
        "--series-uid",
        default=None,
        metavar="UID",
        help="SeriesInstanceUID to read from DICOM folders holding several series (default: the largest image "
        "series); an input without it fails, listing the series it holds",
    )
    parser.add_argument("--postfix", default="seg", help="appended to each input's name (default: seg)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip them)")
    add_override_option(
        parser,
        "change an inference.json entry, repeatable, as `monai.bundle run --KEY VALUE` would: e.g. "
        "'mirror_axes=[0]' (test-time mirroring along x), 'sw_batch_size=8', 'window_inferer#overlap=0.25'",
    )
    parser.set_defaults(func=run_segment)
    return parser


def run_segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from monai_resunet.inference.archive import distributed_requested, read_input_list, run_segment_distributed
    from monai_resunet.inference.segmenter import Segmenter, failure_reason
    from monai_resunet.inference.writers import remove_partial_files

    try:
        inputs = list(args.inputs) + (read_input_list(args.input_list) if args.input_list else [])
        if not inputs:
            raise ValueError("no inputs: give image files or DICOM folders, or --input-list FILE.")
        targets = output_names([Path(item) for item in inputs], args.format, args.postfix)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if distributed_requested():  # started by torchrun: this rank's share, one summary from rank 0
        return run_segment_distributed(args, inputs, targets)
    try:
        segmenter = Segmenter.from_bundle(
            args.bundle, device=args.device, checkpoint=args.checkpoint, **segment_overrides(args)
        )
    except Exception as e:  # the bundle itself is unusable: nothing can be segmented
        print(f"error: {e}", file=sys.stderr)
        return 2
    logger.info("segmenting %d inputs with %s on %s", len(inputs), args.bundle, segmenter.device)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in remove_partial_files(out_dir, targets):  # left by a run killed mid-write
        logger.info(f"removed {stale}, a partial output of an interrupted run")
    failed: list[tuple[str, str]] = []
    written, skipped = 0, 0
    for item, name in tqdm(list(zip(inputs, targets)), desc="segmenting", unit="case", file=sys.stderr):
        path = Path(item)
        target = out_dir / name
        if target.exists() and not args.overwrite:
            skipped += 1
            continue
        try:
            line = check_input(path, args.format, getattr(args, "series_uid", None))  # before any inference
            tqdm.write(f"{path}: {line}", file=sys.stdout)
            segmenter.segment_file(path, target)
            written += 1
        except Exception as e:  # report, skip, go on with the next case
            reason = failure_reason(e, path)
            failed.append((str(path), reason))
            tqdm.write(f"FAILED {path}: {reason}", file=sys.stderr)
    summary = f"{written} written, {skipped} skipped (exist), {len(failed)} failed of {len(inputs)} inputs"
    print(summary)
    for path, reason in failed:
        print(f"  failed: {path}: {reason}")
    return 1 if failed else 0
