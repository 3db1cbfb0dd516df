"""Datalists from a Medical Segmentation Decathlon (MSD) ``dataset.json``: training/validation split, modality,
class names, and the list of images to infer on (files or DICOM series folders).

The MSD layout (``dataset.json`` + ``imagesTr/`` + ``labelsTr/`` [+ ``imagesTs/``]) is what nnU-Net and MONAI
users already have, so the bundles read it directly.
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path

__all__ = ["msd_datalist", "msd_modality", "msd_class_names", "msd_num_classes", "list_images", "read_dataset_json"]

logger = logging.getLogger("monai_resunet")

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")


def read_dataset_json(dataset_dir: str | os.PathLike) -> dict:
    """Read ``dataset_dir/dataset.json`` with an error that names the file when it is missing or malformed."""
    path = Path(dataset_dir) / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no dataset.json. dataset_dir must be in the Medical Segmentation Decathlon layout "
            "(dataset.json with a 'training' list, imagesTr/, labelsTr/); "
            "pipelines/make_demo_data.py writes an example."
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}).") from None


def _resolve(dataset_dir: Path, entry: dict) -> dict:
    out = {}
    for key, value in entry.items():
        if isinstance(value, str) and key in ("image", "label"):
            path = (dataset_dir / value).resolve() if not os.path.isabs(value) else Path(value)
            out[key] = str(path)
        else:
            out[key] = value
    return out


def msd_datalist(
    dataset_dir: str | os.PathLike,
    section: str = "training",
    val_fraction: float = 0.2,
    fold: int = 0,
    seed: int = 0,
    check_files: bool = True,
) -> list[dict]:
    """Items ``{"image": path, "label": path}`` (absolute paths) of an MSD dataset.

    ``section="training"`` or ``"validation"``: when ``dataset.json`` has its own ``validation`` list that one is
    used; otherwise the ``training`` list is sorted, shuffled with ``seed`` and cut into ``round(1 / val_fraction)``
    folds, and fold ``fold`` is the validation set. The split depends only on the file names and these
    arguments, so every run (and every DDP rank) sees the same one. ``val_fraction=0`` puts everything in training.

    Args:
        dataset_dir: folder holding ``dataset.json``.
        section: ``"training"`` or ``"validation"``.
        val_fraction: fraction of cases held out for validation when ``dataset.json`` names no validation list.
        fold: which of the ``round(1 / val_fraction)`` folds is the validation set.
        seed: shuffling seed of the split.
        check_files: raise a clear error when a listed file does not exist.

    Example::

        train = msd_datalist("/data/Task09_Spleen", "training", val_fraction=0.2, fold=0)
    """
    if section not in ("training", "validation"):
        raise ValueError(f"section must be 'training' or 'validation', got {section!r}.")
    dataset_dir = Path(dataset_dir)
    meta = read_dataset_json(dataset_dir)
    if "training" not in meta or not meta["training"]:
        raise ValueError(f"{dataset_dir / 'dataset.json'}: no 'training' list.")
    if meta.get("validation"):
        items = meta[section]
    else:
        cases = sorted(meta["training"], key=lambda item: str(item["image"]))
        if val_fraction <= 0:
            items = cases if section == "training" else []
        else:
            n_folds = max(2, round(1 / val_fraction))
            if not 0 <= fold < n_folds:
                raise ValueError(f"fold must be in [0, {n_folds}) for val_fraction={val_fraction}, got {fold}.")
            order = list(range(len(cases)))
            random.Random(seed).shuffle(order)
            val_idx = {i for k, i in enumerate(order) if k % n_folds == fold}
            if len(cases) > 1 and not val_idx:
                val_idx = {order[0]}
            items = [c for i, c in enumerate(cases) if (i in val_idx) == (section == "validation")]
    resolved = [_resolve(dataset_dir, item) for item in items]
    if check_files:
        for item in resolved:
            for key in ("image", "label"):
                if key in item and not os.path.exists(item[key]):
                    raise FileNotFoundError(f"{item[key]}: listed in {dataset_dir / 'dataset.json'} but not found.")
    return resolved


def msd_modality(dataset_dir: str | os.PathLike, default: str = "MR") -> str:
    """The modality of channel 0 in ``dataset.json`` (``"CT"``, ``"MR"``, ...), upper-case; ``default`` when the
    file or the field is absent (e.g. at inference time on a folder of images)."""
    path = Path(dataset_dir) / "dataset.json"
    if not path.is_file():
        return default
    modality = read_dataset_json(dataset_dir).get("modality", {})
    value = modality.get("0", default) if isinstance(modality, dict) else str(modality)
    value = str(value).upper()
    return "MR" if value in ("MRI", "T1", "T2", "FLAIR", "ADC", "T1W", "T2W") else value


def msd_class_names(dataset_dir: str | os.PathLike) -> list[str]:
    """Class names in label-value order from ``dataset.json``'s ``labels`` (``{"0": "background", ...}`` as in
    MSD, or nnU-Net v2's ``{"background": 0, ...}``)."""
    labels = read_dataset_json(dataset_dir).get("labels")
    if not labels:
        raise ValueError(f"{Path(dataset_dir) / 'dataset.json'}: no 'labels' mapping.")
    if all(str(k).isdigit() for k in labels):
        return [str(labels[k]) for k in sorted(labels, key=int)]
    return [name for name, _ in sorted(labels.items(), key=lambda kv: int(kv[1]))]


def msd_num_classes(dataset_dir: str | os.PathLike) -> int:
    """Number of classes, background included."""
    return len(msd_class_names(dataset_dir))


def _is_image(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in IMAGE_SUFFIXES)


def _is_dicom_folder(path: Path) -> bool:
    for child in path.iterdir():
        if child.is_file():
            if child.suffix.lower() == ".dcm":
                return True
            try:
                with open(child, "rb") as f:
                    f.seek(128)
                    if f.read(4) == b"DICM":
                        return True
            except OSError:
                continue
    return False


def list_images(folder: str | os.PathLike, include_dicom_folders: bool = True) -> list[str]:
    """Sorted paths of the images directly in ``folder``: NIfTI/NRRD/MHA files and, when
    ``include_dicom_folders``, sub-folders holding a DICOM series. A missing folder gives an empty list (the
    bundle's default ``imagesTs/`` is optional), with a warning."""
    folder = Path(folder)
    if not folder.is_dir():
        logger.warning("%s: no such folder, nothing to infer.", folder)
        return []
    out = []
    for child in sorted(folder.iterdir()):
        if child.is_file() and _is_image(child):
            out.append(str(child))
        elif include_dicom_folders and child.is_dir() and _is_dicom_folder(child):
            out.append(str(child))
    return out
