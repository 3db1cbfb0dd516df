"""Atomic file writes: a file is written under a temporary name in its target folder and moved onto the target
with ``os.replace``, so a reader never sees half a file, and an interrupted or failed write (``kill -9`` included)
leaves the previous file intact. Every output of the package (label maps, DICOM-SEG, checkpoints, model
properties, training curves) goes through :func:`atomic_target`.

Why not ``tempfile.mkstemp``: it creates files with mode ``0600``, which ``os.replace`` keeps, so a checkpoint
written by a training account would be unreadable to, say, the MONAI Label server's account. The temporary file
here is created with ``open``, i.e. with the process umask, like any other file the user writes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_target", "atomic_write_bytes", "full_suffix"]


def full_suffix(path: str | os.PathLike) -> str:
    """The lower-case extension, ``.nii.gz`` counted as one."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


@contextmanager
def atomic_target(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds, flush it to disk and move it onto ``path``.

    The temporary name is hidden, unique and ends in ``path``'s own extension (writers such as SimpleITK or
    matplotlib choose the format by extension). It is removed on any failure, KeyboardInterrupt included.

    Example::

        with atomic_target("out/case_seg.nii.gz") as tmp:
            nib.save(img, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # same folder: os.replace is atomic only within one file system
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.partial{full_suffix(path)}"
    try:
        yield tmp
        with open(tmp, "rb") as fp:  # on disk before the rename, so a crash cannot leave an empty target
            os.fsync(fp.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return ``path``."""
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
