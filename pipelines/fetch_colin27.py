#!/usr/bin/env python
"""Fetch the Colin27 T1 MRI and the AAL atlas from Debian's ``mricron-data`` package and convert them into a
small Medical Segmentation Decathlon (MSD) dataset of six deep grey structures that the 3D bundle reads directly.

What it is for: a real, freely redistributable, reproducible data set for ``pipelines/benchmarks/colin27.py``
(and anyone who wants to see the bundles learn real anatomy on a CPU). There is only one subject, so the two
hemispheres play the roles of training and test image:

* training image (``imagesTr/colin27_left.nii.gz``): the left hemisphere, voxels whose MNI x is below the
  midline (x = 0, found from the affine; the midline plane itself belongs to neither image);
* held-out image (``imagesTs/colin27_right_mirrored.nii.gz`` + ``labelsTs/``): the right hemisphere mirrored in
  x so it looks like a left hemisphere, on exactly the same voxel grid as the training image;
* both cropped to one box: the bounding box of the twelve structures (left ones and mirrored right ones) plus
  ``--margin`` voxels (16), clipped to the volume, and on x the hemisphere half;
* labels (left and right merged): 0 background, 1 caudate, 2 putamen, 3 pallidum, 4 thalamus, 5 hippocampus,
  6 amygdala (AAL codes 71/72, 73/74, 75/76, 77/78, 37/38, 41/42);
* image: ``ch2bet.nii.gz``, the skull-stripped Colin27 (181 x 217 x 181, 1 mm, uint8), so intensities outside
  the brain are 0;
* ``dataset.json`` has ``training`` = [left] and also ``validation`` = [left]: with one subject there is no
  second training-side image, and validating on the held-out image would leak the test into model selection,
  so the bundle's own validation (``msd_datalist`` uses ``dataset.json``'s ``validation`` list when present)
  sees only training data. The held-out image is for the final evaluation only.

The crop's affine is the source affine shifted to the box. The mirrored image carries the same affine: it is a
valid right-handed RAS affine of the mirror image, i.e. world coordinates of the held-out image are the MNI
coordinates reflected in x (x -> -x). The 27 + 14 thalamus voxels that AAL puts on the midline plane itself are
in neither image (the script reports such losses).

Downloads: ``apt-get download mricron-data`` needs no root; the ``.deb`` is verified by apt against Debian's
signed package lists and unpacked with ``dpkg-deb -x`` (a pure-Python unpacker is used where ``dpkg-deb`` is
missing). When the download fails because the package lists are empty, the script runs ``apt-get update`` if
it is root, and otherwise says to. Where there is no ``apt-get`` at all, the pinned ``.deb`` is fetched from
``deb.debian.org`` and checked against its SHA-256. Everything goes to ``$MONAI_RESUNET_CACHE/colin27``
(default ``~/.cache/monai_resunet/colin27``), outside the repository; running again does nothing once the files
are there (``--force`` re-converts).

Usage::

    python pipelines/fetch_colin27.py                           # fetch + convert into the cache, print paths
    python pipelines/fetch_colin27.py --dataset-dir /data/colin  # convert into another folder as well
    python pipelines/fetch_colin27.py --no-fetch --dataset-dir D # convert from the cache only, never download
    python -m monai.bundle run training --config_file bundles/resunet3d_segmentation/configs/train.json \\
        --dataset_dir ~/.cache/monai_resunet/colin27/Colin27DeepGrey --patch_size "[64,64,64]"

Licences and credits: ``mricron-data`` (MRIcron by Chris Rorden) is distributed by Debian under the BSD-3-clause
licence. Colin27: Holmes C.J., Hoge R., Collins L., Woods R., Toga A.W., Evans A.C., "Enhancement of MR images
using registration for signal averaging", J. Comput. Assist. Tomogr. 22(2):324-333, 1998. AAL:
Tzourio-Mazoyer N., Landeau B., Papathanassiou D., Crivello F., Etard O., Delcroix N., Mazoyer B., Joliot M.,
"Automated anatomical labeling of activations in SPM using a macroscopic anatomical parcellation of the MNI MRI
single-subject brain", NeuroImage 15(1):273-289, 2002.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE = "mricron-data"
# The version the checksums below were taken from (Debian bookworm). apt may hand out another version on
# another release; then the template checksums are compared and a difference is reported, not fatal.
DEB_VERSION = "1.2.20211006+dfsg-4"
DEB_URL = f"https://deb.debian.org/debian/pool/main/m/mricron/{PACKAGE}_{DEB_VERSION}_all.deb"
DEB_SHA256 = "d40aa0ed66cf89bf6cafa049ad3884703c9d975c2ee2737525b7196528df9d6f"
EXTRACT_DIR = "mricron-data"
TEMPLATES_SUBDIR = Path(EXTRACT_DIR) / "usr" / "share" / "mricron" / "templates"
SOURCE_SHA256 = {
    "ch2.nii.gz": "a009051127f64dc3dd554d5f5b589870ea72106d9642c21b4e7093e478cfc309",
    "ch2bet.nii.gz": "592a2d20abdf36eefcb540ca8958428040edffc1bc1a18ba1dcfbabac77c5dd1",
    "aal.nii.gz": "b512dcd3f36b77f56be7a9a038134096e66314b7e8c31d25875b96bcf6991454",
    "aal.nii.txt": "1788d6556a9ec056de9867b2382cf1ce1b51b87ae4cfd9cd25de48ae4dde709e",
}

# (class name, AAL code left, AAL code right); the class value is the position + 1.
STRUCTURES: tuple[tuple[str, int, int], ...] = (
    ("caudate", 71, 72),
    ("putamen", 73, 74),
    ("pallidum", 75, 76),
    ("thalamus", 77, 78),
    ("hippocampus", 37, 38),
    ("amygdala", 41, 42),
)
CLASS_NAMES: tuple[str, ...] = ("background",) + tuple(name for name, _, _ in STRUCTURES)
DATASET_NAME = "Colin27DeepGrey"
TRAIN_CASE = "colin27_left"
TEST_CASE = "colin27_right_mirrored"
# The hemisphere that is the training image; the other one is held out. "right" is the same split the other way
# round (the second fold of a two-fold cross-validation on one subject): it gives a second measurement that the
# default recipe was not chosen on.
TRAIN_SIDES = ("left", "right")
DEFAULT_MARGIN = 16
DEFAULT_IMAGE = "ch2bet.nii.gz"
CONVERSION_VERSION = 1  # bump when the conversion changes, so cached datasets are rebuilt


# ----------------------------------------------------------------------------------------------- locations


def default_cache_dir() -> Path:
    """``$MONAI_RESUNET_CACHE/colin27``, or ``~/.cache/monai_resunet/colin27`` when the variable is unset."""
    root = os.environ.get("MONAI_RESUNET_CACHE") or os.path.join("~", ".cache", "monai_resunet")
    return Path(root).expanduser() / "colin27"


def _cache(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir()


def templates_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding ``ch2.nii.gz``, ``ch2bet.nii.gz``, ``aal.nii.gz`` and ``aal.nii.txt`` once fetched."""
    return _cache(cache_dir) / TEMPLATES_SUBDIR


def default_dataset_dir(cache_dir: str | os.PathLike | None = None, train_side: str = "left") -> Path:
    """Where :func:`main` writes the MSD dataset by default: ``<cache>/Colin27DeepGrey`` (training on the left
    hemisphere) or ``<cache>/Colin27DeepGreyTrainRight``."""
    return _cache(cache_dir) / (DATASET_NAME if train_side == "left" else DATASET_NAME + "TrainRight")


def case_names(train_side: str = "left") -> tuple[str, str]:
    """``(training case, held-out case)`` file stems for ``train_side``."""
    if train_side not in TRAIN_SIDES:
        raise ValueError(f"train_side must be one of {TRAIN_SIDES}, got {train_side!r}.")
    return (TRAIN_CASE, TEST_CASE) if train_side == "left" else (TEST_CASE, TRAIN_CASE)


def train_side_of(dataset_dir: str | os.PathLike) -> str:
    """The training hemisphere recorded in ``dataset_dir``'s ``dataset.json`` (``"left"`` for datasets written
    before the option existed)."""
    meta = json.loads((Path(dataset_dir) / "dataset.json").read_text())
    return meta.get("conversion", {}).get("train_side", "left")


def split_description(train_side: str = "left") -> str:
    """The dataset description's split sentence for ``train_side`` (without its full stop)."""
    if case_names(train_side)[0] == TRAIN_CASE:
        return "Training: left hemisphere. Test: right hemisphere mirrored"
    return "Training: right hemisphere mirrored. Test: left hemisphere"


def is_fetched(cache_dir: str | os.PathLike | None = None) -> bool:
    """True when the four source files are in the cache (never downloads)."""
    folder = templates_dir(cache_dir)
    return all((folder / name).is_file() for name in SOURCE_SHA256)


def is_converted(dataset_dir: str | os.PathLike) -> bool:
    """True when ``dataset_dir`` holds a complete dataset written by this version of :func:`convert`."""
    path = Path(dataset_dir) / "dataset.json"
    if not path.is_file():
        return False
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    try:
        files = [meta["training"][0]["image"], meta["training"][0]["label"], meta["test"][0], meta["test_labels"][0]]
    except (KeyError, IndexError, TypeError):
        return False
    return meta.get("conversion", {}).get("version") == CONVERSION_VERSION and all(
        (Path(dataset_dir) / f).is_file() for f in files
    )


# ------------------------------------------------------------------------------------------------- fetching


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _apt_download(folder: Path) -> Path:
    """``apt-get download mricron-data`` into ``folder``; on failure run ``apt-get update`` once if root."""
    cmd = ["apt-get", "download", PACKAGE]
    result = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip()
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            print(
                f"apt-get download failed ({message.splitlines()[-1] if message else 'no message'}); "
                "running apt-get update once and trying again",
                file=sys.stderr,
            )
            subprocess.run(["apt-get", "update"], check=True, stdout=subprocess.DEVNULL)
            result = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"'apt-get download {PACKAGE}' failed:\n{(result.stderr or result.stdout).strip()}\n"
                "If the package lists are empty (a fresh container), run 'sudo apt-get update' once and try again."
            )
    debs = sorted(folder.glob(f"{PACKAGE}_*.deb"))
    if not debs:
        raise RuntimeError(f"'apt-get download {PACKAGE}' reported success but left no .deb in {folder}.")
    return debs[-1]


def _url_download(folder: Path) -> Path:
    """The pinned ``.deb`` from ``deb.debian.org`` (for machines without apt), checked against its SHA-256."""
    target = folder / Path(DEB_URL).name
    with urllib.request.urlopen(DEB_URL, timeout=120) as response, open(target, "wb") as f:
        shutil.copyfileobj(response, f)
    if _sha256(target) != DEB_SHA256:
        raise RuntimeError(f"{target}: SHA-256 {_sha256(target)} differs from the pinned {DEB_SHA256}.")
    return target


def _unpack_deb_python(deb: Path, dest: Path) -> None:
    """``dpkg-deb -x`` in Python: a ``.deb`` is an ``ar`` archive whose ``data.tar.*`` member holds the files."""
    blob = deb.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise RuntimeError(f"{deb}: not a Debian package (no ar magic).")
    pos = 8
    while pos + 60 <= len(blob):
        header = blob[pos : pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        pos += 60
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(blob[pos : pos + size]), mode="r:*") as tar:
                tar.extractall(dest, filter="data")
            return
        pos += size + (size % 2)
    raise RuntimeError(f"{deb}: no data.tar member.")


def fetch(cache_dir: str | os.PathLike | None = None) -> Path:
    """Download and unpack ``mricron-data`` into ``cache_dir`` (idempotent); return the templates folder.

    Args:
        cache_dir: where to put the package; ``None`` for :func:`default_cache_dir`.

    Example::

        folder = fetch()  # ~/.cache/monai_resunet/colin27/mricron-data/usr/share/mricron/templates
    """
    cache = _cache(cache_dir)
    if is_fetched(cache):
        return templates_dir(cache)
    cache.mkdir(parents=True, exist_ok=True)
    # unpack in a temporary folder beside the target and move it in at the end, so an interrupted run never
    # leaves a half-extracted package that a later run would take for complete
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
        tmp_path = Path(tmp)
        deb = _apt_download(tmp_path) if shutil.which("apt-get") else _url_download(tmp_path)
        print(f"downloaded {deb.name} ({deb.stat().st_size / 2**20:.1f} MiB)", file=sys.stderr)
        unpacked = tmp_path / EXTRACT_DIR
        if shutil.which("dpkg-deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
        else:
            _unpack_deb_python(deb, unpacked)
        target = cache / EXTRACT_DIR
        if target.exists():
            shutil.rmtree(target)
        os.replace(unpacked, target)
        shutil.copy2(deb, cache / deb.name)
    if not is_fetched(cache):
        raise RuntimeError(f"{templates_dir(cache)}: {PACKAGE} does not hold {sorted(SOURCE_SHA256)}.")
    for name, expected in SOURCE_SHA256.items():
        actual = _sha256(templates_dir(cache) / name)
        if actual != expected:
            print(
                f"note: {name} differs from the {DEB_VERSION} file the benchmark was written against "
                f"(sha256 {actual}); the conversion checks shapes and labels anyway",
                file=sys.stderr,
            )
    return templates_dir(cache)


# ----------------------------------------------------------------------------------------------- conversion


def relabel(aal: np.ndarray, side: str) -> np.ndarray:
    """AAL codes → the six merged classes (uint8, 0 elsewhere), taking the codes of ``side`` (``"left"`` or
    ``"right"``) only."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}.")
    out = np.zeros(aal.shape, dtype=np.uint8)
    for value, (_, left, right) in enumerate(STRUCTURES, start=1):
        out[aal == (left if side == "left" else right)] = value
    return out


def midline_index(affine: np.ndarray, tol: float = 1e-3) -> float:
    """The (possibly half-integer) voxel index along axis 0 where world x = 0, for an affine whose voxel axis 0
    is the world x axis (+x right, RAS) and whose other voxel axes have no x component.

    Raises ``ValueError`` for an oblique x axis, a left-pointing axis 0 (reorient first), or a midline that is
    neither on a voxel centre nor half-way between two (mirroring would then need resampling).
    """
    affine = np.asarray(affine, dtype=float)
    if abs(affine[0, 1]) > tol or abs(affine[0, 2]) > tol or abs(affine[1, 0]) > tol or abs(affine[2, 0]) > tol:
        raise ValueError(f"voxel axis 0 must be the world x axis (no obliquity in x); affine:\n{affine}")
    if affine[0, 0] <= 0:
        raise ValueError("voxel axis 0 must point to +x (RAS); reorient with nibabel.as_closest_canonical first.")
    c = -affine[0, 3] / affine[0, 0]
    if abs(2 * c - round(2 * c)) > tol:
        raise ValueError(f"world x = 0 lies at voxel {c:.4f}: neither a voxel centre nor half-way between two.")
    return round(2 * c) / 2


def crop_box(
    aal: np.ndarray, midline: float, margin: int = DEFAULT_MARGIN
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Half-open box ``((x0, x1), (y0, y1), (z0, z1))`` in voxels, on the left side of ``midline``: the bounding
    box of the left structures and of the mirrored right structures, plus ``margin``, clipped so that the box
    and its mirror image both lie inside the volume; on x it ends just below the midline."""
    nx = aal.shape[0]
    coords = []
    for _, left, right in STRUCTURES:
        lx = np.argwhere(aal == left)
        coords.append(lx[lx[:, 0] < midline])
        rx = np.argwhere(aal == right)
        rx = rx[rx[:, 0] > midline].astype(float)
        rx[:, 0] = 2 * midline - rx[:, 0]  # mirror image in x
        coords.append(rx)
    allc = np.concatenate([c for c in coords if len(c)], axis=0) if any(len(c) for c in coords) else None
    if allc is None:
        raise ValueError("none of the AAL structures is in the volume.")
    lo = np.floor(allc.min(0)).astype(int) - margin
    hi = np.ceil(allc.max(0)).astype(int) + margin + 1
    x_last = math.ceil(midline) - 1  # the last voxel strictly below the midline
    x_first = max(0, math.ceil(2 * midline - (nx - 1)), int(lo[0]))  # its mirror must stay inside the volume
    box = [(x_first, x_last + 1)]
    for axis in (1, 2):
        box.append((max(0, int(lo[axis])), min(aal.shape[axis], int(hi[axis]))))
    return tuple(box)  # type: ignore[return-value]


def split_hemispheres(
    image: np.ndarray, aal: np.ndarray, affine: np.ndarray, margin: int = DEFAULT_MARGIN
) -> dict[str, Any]:
    """The core of the conversion on arrays in RAS voxel order (axis 0 = +x).

    Returns a dict with ``train_image``, ``train_label`` (left hemisphere crop), ``test_image``, ``test_label``
    (right hemisphere mirrored onto the same grid), ``affine`` (of both crops), ``box``, ``midline`` and
    ``lost_voxels`` (per class: structure voxels on the midline plane or outside the box, in neither image).
    """
    if image.shape != aal.shape:
        raise ValueError(f"image {image.shape} and atlas {aal.shape} differ in shape.")
    midline = midline_index(affine)
    (x0, x1), (y0, y1), (z0, z1) = crop_box(aal, midline, margin)
    # mirror: voxel i on the left ↔ voxel 2 * midline - i on the right
    r0, r1 = int(round(2 * midline - (x1 - 1))), int(round(2 * midline - x0))
    left = np.s_[x0:x1, y0:y1, z0:z1]
    right = np.s_[r0 : r1 + 1, y0:y1, z0:z1]
    train_label = relabel(aal[left], "left")
    test_label = relabel(aal[right], "right")[::-1]
    crop_affine = np.array(affine, dtype=float)
    crop_affine[:3, 3] = affine[:3, :3] @ np.array([x0, y0, z0], dtype=float) + affine[:3, 3]
    full = {side: relabel(aal, side) for side in ("left", "right")}
    lost = {}
    for value, (name, _, _) in enumerate(STRUCTURES, start=1):
        lost[name] = {
            "left": int((full["left"] == value).sum() - (train_label == value).sum()),
            "right": int((full["right"] == value).sum() - (test_label == value).sum()),
        }
    return {
        "train_image": np.ascontiguousarray(image[left]),
        "train_label": np.ascontiguousarray(train_label),
        "test_image": np.ascontiguousarray(image[right][::-1]),
        "test_label": np.ascontiguousarray(test_label),
        "affine": crop_affine,
        "box": ((x0, x1), (y0, y1), (z0, z1)),
        "mirror_source_x": (r0, r1 + 1),
        "midline": midline,
        "lost_voxels": lost,
    }


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=2)  # "aligned": a known affine, not the scanner's
    img.set_sform(affine, code=2)
    img.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def convert(
    templates: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    margin: int = DEFAULT_MARGIN,
    image_file: str = DEFAULT_IMAGE,
    force: bool = False,
    train_side: str = "left",
) -> dict[str, Any]:
    """Write the MSD dataset into ``dataset_dir`` from the templates folder; return ``dataset.json``'s content.

    Does nothing (and returns the existing ``dataset.json``) when a complete dataset with the same settings is
    already there, unless ``force``.

    Args:
        templates: folder holding ``image_file`` and ``aal.nii.gz`` on the same grid.
        dataset_dir: output folder (``dataset.json``, ``imagesTr/``, ``labelsTr/``, ``imagesTs/``, ``labelsTs/``).
        margin: voxels added around the structures' bounding box.
        image_file: ``ch2bet.nii.gz`` (skull-stripped, the default) or ``ch2.nii.gz``.
        force: convert even when the output is already there.
        train_side: the hemisphere that is the training image, ``"left"`` (default) or ``"right"`` (then the
            mirrored right hemisphere is trained on and the left one is held out; same grid, same box).

    Example::

        meta = convert(fetch(), "/tmp/colin27")
    """
    import nibabel as nib

    train_case, test_case = case_names(train_side)
    templates, dataset_dir = Path(templates), Path(dataset_dir)
    settings = {"version": CONVERSION_VERSION, "margin": margin, "image_file": image_file}
    if not force and is_converted(dataset_dir):
        meta = json.loads((dataset_dir / "dataset.json").read_text())
        # datasets written before train_side existed trained on the left hemisphere
        same_side = meta["conversion"].get("train_side", "left") == train_side
        if same_side and all(meta["conversion"].get(k) == v for k, v in settings.items()):
            return meta
    src_img = nib.as_closest_canonical(nib.load(str(templates / image_file)))
    src_aal = nib.as_closest_canonical(nib.load(str(templates / "aal.nii.gz")))
    if src_img.shape != src_aal.shape or not np.allclose(src_img.affine, src_aal.affine, atol=1e-4):
        raise ValueError(f"{image_file} and aal.nii.gz are not on the same grid.")
    image = np.asarray(src_img.dataobj)
    aal = np.asarray(src_aal.dataobj).astype(np.int32)
    parts = split_hemispheres(image, aal, src_img.affine, margin)
    if train_side == "right":
        for kind in ("image", "label"):
            parts[f"train_{kind}"], parts[f"test_{kind}"] = parts[f"test_{kind}"], parts[f"train_{kind}"]

    files = {
        "train_image": f"imagesTr/{train_case}.nii.gz",
        "train_label": f"labelsTr/{train_case}.nii.gz",
        "test_image": f"imagesTs/{test_case}.nii.gz",
        "test_label": f"labelsTs/{test_case}.nii.gz",
    }
    for stale in dataset_dir.glob("*s*/colin27_*.nii.gz"):  # a previous conversion for the other side
        if str(stale.relative_to(dataset_dir)) not in files.values():
            stale.unlink()
    (dataset_dir / "dataset.json").unlink(missing_ok=True)  # written last: its presence means "complete"
    for key, rel in files.items():
        _save(parts[key], parts["affine"], dataset_dir / rel)

    train_entry = {"image": "./" + files["train_image"], "label": "./" + files["train_label"]}
    counts = {
        split: {name: int((parts[f"{split}_label"] == v).sum()) for v, name in enumerate(CLASS_NAMES) if v}
        for split in ("train", "test")
    }
    meta = {
        "name": DATASET_NAME,
        "description": (
            "Six deep grey structures (left and right merged) of the Colin27 T1 MRI (skull-stripped ch2bet), "
            f"AAL labels. {split_description(train_side)} (the right hemisphere mirrored in x onto the left "
            "one's grid). "
            "'validation' repeats the training image on purpose: one subject only, and the test image must not "
            "take part in model selection. Measures generalisation within one subject."
        ),
        "reference": "Holmes et al., J Comput Assist Tomogr 1998 (Colin27); Tzourio-Mazoyer et al., "
        "NeuroImage 2002 (AAL); via Debian package mricron-data (MRIcron, Chris Rorden)",
        "licence": "BSD-3-clause (Debian mricron-data)",
        "release": f"{PACKAGE} {DEB_VERSION}",
        "tensorImageSize": "3D",
        "modality": {"0": "MR"},
        "labels": {str(v): name for v, name in enumerate(CLASS_NAMES)},
        "numTraining": 1,
        "numTest": 1,
        "training": [train_entry],
        "validation": [train_entry],
        "test": ["./" + files["test_image"]],
        "test_labels": ["./" + files["test_label"]],
        "conversion": {
            **settings,
            "train_side": train_side,
            "source_shape": list(image.shape),
            "source_affine": np.asarray(src_img.affine).round(6).tolist(),
            "midline_voxel_x": parts["midline"],
            "crop_box_xyz": [list(b) for b in parts["box"]],
            "mirrored_source_x": list(parts["mirror_source_x"]),
            "shape": list(parts["train_image"].shape),
            "affine": parts["affine"].round(6).tolist(),
            "label_voxels": counts,
            "structure_voxels_left_out": parts["lost_voxels"],
        },
    }
    (dataset_dir / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


# ------------------------------------------------------------------------------------------------------ CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache-dir", default=None, help="default: $MONAI_RESUNET_CACHE/colin27 or ~/.cache/...")
    parser.add_argument("--dataset-dir", default=None, help="MSD output folder (default: <cache>/Colin27DeepGrey)")
    parser.add_argument("--margin", type=int, default=DEFAULT_MARGIN, help="voxels around the structures' box")
    parser.add_argument("--image", default=DEFAULT_IMAGE, choices=["ch2bet.nii.gz", "ch2.nii.gz"])
    parser.add_argument(
        "--train-side",
        default="left",
        choices=TRAIN_SIDES,
        help="training hemisphere (default left); right: train on the mirrored right one, hold out the left one "
        "(default folder <cache>/Colin27DeepGreyTrainRight)",
    )
    parser.add_argument("--no-fetch", action="store_true", help="never download; fail if the cache is empty")
    parser.add_argument("--force", action="store_true", help="convert again even if the dataset is there")
    args = parser.parse_args(argv)

    if args.no_fetch and not is_fetched(args.cache_dir):
        print(f"{templates_dir(args.cache_dir)}: not fetched (run without --no-fetch)", file=sys.stderr)
        return 1
    templates = fetch(args.cache_dir)
    default_dir = default_dataset_dir(args.cache_dir, args.train_side)
    dataset_dir = Path(args.dataset_dir).expanduser() if args.dataset_dir else default_dir
    meta = convert(
        templates, dataset_dir, margin=args.margin, image_file=args.image, force=args.force, train_side=args.train_side
    )
    conv = meta["conversion"]
    print(f"source templates : {templates}")
    print(f"MSD dataset      : {dataset_dir}")
    for key in ("training", "validation"):
        print(f"  {key:<15}: {meta[key][0]['image']} + {meta[key][0]['label']}")
    print(f"  test (held out): {meta['test'][0]} + {meta['test_labels'][0]}")
    print(
        f"  shape {tuple(conv['shape'])} voxels (1 mm), crop box x/y/z {conv['crop_box_xyz']} of "
        f"{tuple(conv['source_shape'])}, midline voxel x = {conv['midline_voxel_x']}"
    )
    lost = {k: v for k, v in conv["structure_voxels_left_out"].items() if v["left"] or v["right"]}
    if lost:
        print(f"  structure voxels on the midline plane (in neither image): {lost}")
    print(f"  label voxels: {conv['label_voxels']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
