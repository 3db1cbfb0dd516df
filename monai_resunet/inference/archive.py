"""Segment an archive across processes, GPUs and nodes: ``torchrun ... -m monai_resunet segment``.

Under ``torchrun`` (``WORLD_SIZE`` set) every rank takes a disjoint share of the inputs, balanced by size, segments
it on its own device (``cuda:LOCAL_RANK`` where CUDA exists, else the CPU) and hands its per-case records to the
others over gloo; rank 0 writes one summary (``segment_summary.csv`` / ``.json``) into the output folder. Outputs
that exist are skipped, so a killed run started again does the rest; output names are unique before any work and
the shares are disjoint, so no two ranks write the same file; every file is written atomically.

Example (2 GPUs, or 2 CPU processes)::

    torchrun --nproc_per_node=2 -m monai_resunet segment --bundle bundles/resunet3d_segmentation \\
        -o out --input-list cases.txt
"""

from __future__ import annotations

import argparse
import csv
import datetime
import heapq
import io
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from monai_resunet.atomic_files import atomic_write_bytes, full_suffix
from monai_resunet.inference.segmenter import Segmenter, failure_reason
from monai_resunet.inference.writers import remove_partial_files

__all__ = [
    "SUMMARY_FIELDS",
    "balanced_shares",
    "case_cost",
    "distributed_requested",
    "distributed_sampler",
    "pending_images",
    "read_input_list",
    "run_segment_distributed",
    "write_summary",
]

logger = logging.getLogger("monai_resunet")

SUMMARY_FIELDS = (
    "input", "output", "status", "seconds", "rank", "cost", "series_uid", "series_description", "series_files", "read",
    "error",
)  # fmt: skip
# the final gather waits for the slowest rank, which may be hours behind on a large archive (gloo's default: 30 min)
_GATHER_TIMEOUT = datetime.timedelta(days=7)


def read_input_list(path: str | os.PathLike) -> list[str]:
    """The paths listed in ``path``, one per line; blank lines and lines starting with ``#`` are ignored, and
    relative paths are taken from the current folder, as on the command line.

    Example::

        read_input_list("cases.txt")  # ["/archive/ct_0001", "/archive/ct_0002", ...]
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the input list ({e}).") from None
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def case_cost(path: str | os.PathLike) -> int:
    """Estimated work for one input: its voxel count, read from the header where that is cheap (NIfTI, NRRD,
    MHA/MHD, the first file of a DICOM series times the number of files), else its size in bytes / 2 (16-bit
    voxels dominate an image file); 0 for a missing input.

    Example::

        case_cost("scan.nii.gz")  # 512 * 512 * 300
    """
    path = Path(path)
    try:
        if path.is_dir():
            return _dicom_folder_cost(path)
        suffix = full_suffix(path)
        if suffix in (".nii", ".nii.gz"):
            import nibabel as nib

            return int(_prod(nib.load(path).shape))  # lazy: the header only
        if suffix in (".nrrd", ".nhdr", ".mha", ".mhd"):
            import SimpleITK as sitk

            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            return int(_prod(reader.GetSize()) * reader.GetNumberOfComponents())
        return path.stat().st_size // 2
    except Exception:  # an unreadable header is the reader's error to report later; size it by bytes
        try:
            return path.stat().st_size // 2
        except OSError:
            return 0


def _prod(values: Sequence[int]) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def _dicom_folder_cost(folder: Path) -> int:
    """Files in the folder × voxels per file from the first readable DICOM header (one file opened, not all)."""
    import pydicom

    files = sorted(e.path for e in os.scandir(folder) if e.is_file())
    for name in files[:8]:  # skip a README or DICOMDIR in front of the images
        try:
            ds = pydicom.dcmread(name, stop_before_pixels=True, specific_tags=["Rows", "Columns", "NumberOfFrames"])
        except Exception:
            continue
        if "Rows" in ds and "Columns" in ds:
            return len(files) * int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames", 1) or 1)
    return sum(Path(f).stat().st_size for f in files) // 2


def balanced_shares(costs: Sequence[int], world_size: int) -> list[list[int]]:
    """Split case indices into ``world_size`` disjoint shares of about equal total cost: largest case first onto
    the least-loaded rank (lowest rank on ties). Deterministic, so every rank derives the same split; each share
    lists its indices in input order.

    Example::

        balanced_shares([10, 1, 1, 8], 2)  # [[0], [1, 2, 3]]
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}.")
    loads = [(0, rank) for rank in range(world_size)]  # a heap of (total cost, rank)
    shares: list[list[int]] = [[] for _ in range(world_size)]
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, rank = heapq.heappop(loads)
        shares[rank].append(index)
        heapq.heappush(loads, (load + int(costs[index]), rank))
    return [sorted(share) for share in shares]


def distributed_requested() -> bool:
    """True when started by ``torchrun`` (or any launcher that sets ``WORLD_SIZE``)."""
    return "WORLD_SIZE" in os.environ


def pending_images(
    images: Sequence[str],
    output_dir: str | os.PathLike,
    postfix: str = "seg",
    ext: str = ".nii.gz",
    overwrite: bool | str = False,
) -> list[str]:
    """The images whose label map does not exist yet in ``output_dir`` (named as the bundle's ``SaveImaged`` with
    ``separate_folder=False`` names it), for ``multi_gpu_inference.json``. Under ``torch.distributed`` rank 0
    decides and every rank receives its list, so ``DistributedSampler`` splits the same list on every rank even
    while outputs are appearing.

    Example (in a config)::

        "$monai_resunet.inference.archive.pending_images(@datalist, @output_dir, @output_postfix, @output_ext)"
    """
    import torch.distributed as dist
    from monai.data.utils import create_file_basename

    from monai_resunet.config_flags import as_bool

    def todo() -> list[str]:
        if as_bool(overwrite):
            return [str(i) for i in images]
        names = [create_file_basename(postfix, i, output_dir, separate_folder=False, makedirs=False) for i in images]
        return [str(i) for i, name in zip(images, names) if not Path(name + ext).exists()]

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return todo()
    if dist.get_backend() == "nccl":
        _rank_device(None)  # NCCL sends the list through this rank's own GPU
    shared = [todo() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def distributed_sampler(dataset) -> Sequence[int]:
    """MONAI's ``DistributedSampler(even_divisible=False, shuffle=False)``: each case on exactly one rank. With
    fewer cases than ranks (the end of a resumed run) it refuses to split, so then rank ``r`` takes case ``r``
    and the others none.

    Example (in a config)::

        "sampler": "$monai_resunet.inference.archive.distributed_sampler(@dataset)"
    """
    import torch.distributed as dist
    from monai.data import DistributedSampler

    rank, world = dist.get_rank(), dist.get_world_size()
    if len(dataset) >= world:
        return DistributedSampler(dataset, even_divisible=False, shuffle=False)
    return [rank] if rank < len(dataset) else []


class _RecordingSegmenter(Segmenter):
    """A :class:`Segmenter` that keeps the meta of the last image it segmented, for the series-read column."""

    last_meta: dict = {}

    def __call__(self, image, affine=None):
        label = super().__call__(image, affine)
        self.last_meta = dict(getattr(label, "meta", {}))
        return label


def _rank_device(requested: str | None) -> torch.device:
    """``cuda:LOCAL_RANK`` for ``None`` or ``"cuda"`` when CUDA exists, else the CPU; any other choice as given."""
    from monai_resunet.engines.distributed import distributed_device

    if requested not in (None, "cuda"):
        return torch.device(requested)
    return distributed_device()


def _peak_rss_mib() -> float:
    """This process's peak resident memory in MiB (for sizing the processes per node)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def _record(path: str, target: Path, status: str, rank: int, cost: int, seconds: float = 0.0, **extra) -> dict:
    record = {
        "input": path, "output": str(target), "status": status, "seconds": round(seconds, 3), "rank": rank,
        "cost": cost, "series_uid": "", "series_description": "", "series_files": 0, "read": "", "error": "",
    }  # fmt: skip
    record.update(extra)
    return record


def _segment_share(args, share: list[tuple[str, Path, int]], rank: int, show_progress: bool) -> list[dict]:
    """Segment this rank's cases; every case gives one record, whatever happens to it."""
    from tqdm import tqdm

    from monai_resunet.inference.cli import check_input, segment_overrides

    try:
        segmenter = _RecordingSegmenter.from_bundle(
            args.bundle, device=_rank_device(args.device), checkpoint=args.checkpoint, **segment_overrides(args)
        )
    except Exception as e:  # this rank cannot segment anything: its cases are reported, not lost
        reason = f"rank {rank} could not load the bundle: {failure_reason(e, args.bundle)}"
        print(f"error: {reason}", file=sys.stderr)
        return [_record(p, t, "failed", rank, c, error=reason) for p, t, c in share]
    records = []
    for path, target, cost in tqdm(share, desc=f"rank {rank}", unit="case", file=sys.stderr, disable=not show_progress):
        if target.exists() and not args.overwrite:  # written meanwhile (another run on the same folder)
            records.append(_record(path, target, "skipped", rank, cost))
            continue
        start, read = time.perf_counter(), ""
        try:
            read = check_input(Path(path), args.format, getattr(args, "series_uid", None))  # as the CLI: first
            tqdm.write(f"{path}: {read}", file=sys.stdout)
            segmenter.segment_file(path, target)
        except Exception as e:  # report, go on with the next case
            seconds, reason = time.perf_counter() - start, failure_reason(e, path)
            records.append(_record(path, target, "failed", rank, cost, seconds, read=read, error=reason))
            tqdm.write(f"FAILED {path}: {reason}", file=sys.stderr)
            continue
        meta = segmenter.last_meta
        records.append(
            _record(
                path, target, "written", rank, cost, time.perf_counter() - start,
                series_uid=str(meta.get("dicom_series_uid", "") or ""),
                series_description=str(meta.get("dicom_series_description", "") or ""),
                series_files=len(meta.get("dicom_files", []) or []), read=read,
            )
        )  # fmt: skip
    return records


def write_summary(records: list[dict], out_dir: str | os.PathLike, totals: dict) -> tuple[Path, Path]:
    """Write ``segment_summary.csv`` (one row per case) and ``segment_summary.json`` (cases and totals) into
    ``out_dir``, each atomically; return both paths."""
    out_dir = Path(out_dir)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: r.get(k, "") for k in SUMMARY_FIELDS} for r in records)
    csv_path = atomic_write_bytes(out_dir / "segment_summary.csv", text.getvalue().encode())
    payload = json.dumps({"totals": totals, "cases": records}, indent=1)
    json_path = atomic_write_bytes(out_dir / "segment_summary.json", payload.encode())
    return csv_path, json_path


def run_segment_distributed(args: argparse.Namespace, inputs: list[str], targets: list[str]) -> int:
    """The ``segment`` command on one rank of a ``torchrun`` job; returns the exit status (1 when any case failed,
    on every rank).

    Args:
        args: the parsed ``segment`` options (bundle, output_dir, device, checkpoint, overwrite, override).
        inputs: all inputs, in order (the same list on every rank).
        targets: their unique output names (:func:`~monai_resunet.inference.cli.output_names`).
    """
    import torch.distributed as dist

    started = time.perf_counter()
    # gloo for the few object exchanges even on GPUs: no NCCL communicator or GPU memory is needed for them
    own_group = not dist.is_initialized()
    if own_group:
        dist.init_process_group(backend="gloo", timeout=_GATHER_TIMEOUT)
    rank, world = dist.get_rank(), dist.get_world_size()
    out_dir = Path(args.output_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if rank == 0:  # before any rank writes: hidden partial files left by a killed run
            for stale in remove_partial_files(out_dir, targets):
                logger.info(f"removed {stale}, a partial output of an interrupted run")
        # the ranks size and check a strided part each, then all see the same plan: one header read per case
        # in all, and a resumed run is balanced over what is left
        mine = {}
        for i in range(rank, len(inputs), world):
            done = (out_dir / targets[i]).exists() and not args.overwrite
            mine[i] = (0 if done else case_cost(inputs[i]), done)
        parts: list = [None] * world
        dist.all_gather_object(parts, mine)
        plan = {i: v for part in parts for i, v in part.items()}
        pending = [i for i in range(len(inputs)) if not plan[i][1]]
        shares = balanced_shares([plan[i][0] for i in pending], world)
        share = [(inputs[pending[k]], out_dir / targets[pending[k]], plan[pending[k]][0]) for k in shares[rank]]
        records = _segment_share(args, share, rank, show_progress=int(os.environ.get("LOCAL_RANK", 0)) == 0)
        if rank == 0:  # existing outputs, found while planning
            records += [_record(inputs[i], out_dir / targets[i], "skipped", i % world, 0) for i in plan if plan[i][1]]
        gathered: list = [None] * world
        dist.all_gather_object(gathered, (records, _peak_rss_mib()))
    finally:
        if own_group:
            dist.destroy_process_group()
    order = {path: n for n, path in enumerate(inputs)}
    cases = sorted((r for part, _ in gathered for r in part), key=lambda r: order.get(r["input"], len(order)))
    counts = {s: sum(r["status"] == s for r in cases) for s in ("written", "skipped", "failed")}
    if rank == 0:
        totals = {
            "inputs": len(inputs), **counts, "world_size": world,
            "wall_seconds": round(time.perf_counter() - started, 3),
            "case_seconds": round(sum(r["seconds"] for r in cases), 3),
            "rank_seconds": [round(sum(r["seconds"] for r in cases if r["rank"] == k), 3) for k in range(world)],
            "rank_peak_rss_mib": [peak for _, peak in gathered],
        }  # fmt: skip
        csv_path, _ = write_summary(cases, out_dir, totals)
        print(
            f"{counts['written']} written, {counts['skipped']} skipped (exist), {counts['failed']} failed of "
            f"{len(inputs)} inputs on {world} ranks; summary: {csv_path}"
        )
        for r in cases:
            if r["status"] == "failed":
                print(f"  failed: {r['input']}: {r['error']} (rank {r['rank']})")
    return 1 if counts["failed"] else 0
