#!/usr/bin/env python
"""Derive the data sets the planner is measured on (``pipelines/benchmarks/plan_benchmark.py``), from data the
project already fetches:

* ``position``: Colin27's six deep grey structures merged and split by the coronal plane through the anterior
  commissure (MNI y = 0, the atlas's origin): class 1 in front of it, class 2 behind it. The two classes look
  alike and differ only by where they lie, so mirroring front-back confuses them;
* ``aniso``: Colin27 deep grey resliced to 1 × 1 × 4 mm (image: mean of 4 slices, a thick-slice acquisition;
  labels: the majority of the 4 slices), training and held-out image alike, scored on that grid;
* ``lungct``: the two lung CT scans with their tumour labels that ship in pyradiomics' source distribution
  (``data/lung{1,2}_{image,label}.nrrd``): train on one, score on the other. Tiny: one case each way.

    python pipelines/fetch_colin27.py                       # Colin27DeepGrey in ~/.cache/monai_resunet/colin27
    pip download --no-deps --no-binary :all: --no-build-isolation -d /tmp/pyrad pyradiomics==3.0.1
    tar xzf /tmp/pyrad/pyradiomics-3.0.1.tar.gz -C /tmp/pyrad
    python pipelines/benchmarks/plan_tasks.py --colin27 ~/.cache/monai_resunet/colin27/Colin27DeepGrey \\
        --pyradiomics /tmp/pyrad/pyradiomics-3.0.1 --out /tmp/plan_data
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np


def _copy_meta(src: Path, dst: Path, name: str, description: str, labels: dict[str, str]) -> dict:
    meta = json.loads((src / "dataset.json").read_text())
    meta = {k: v for k, v in meta.items() if k != "conversion"}
    meta.update(name=name, description=description, labels=labels)
    return meta


def _files(meta: dict) -> list[tuple[str, bool]]:
    """(relative path, is_label) of every image and label the data set lists (each once)."""
    seen: dict[str, bool] = {}
    for item in meta["training"] + meta.get("validation", []):
        seen[item["image"]] = False
        seen[item["label"]] = True
    for path in meta.get("test", []):
        seen[path] = False
    for path in meta.get("test_labels", []):
        seen[path] = True
    return list(seen.items())


def derive_position(src: Path, dst: Path) -> Path:
    """Deep grey split at the anterior commissure's coronal plane (world y = 0): 1 anterior, 2 posterior."""
    labels = {"0": "background", "1": "deep_grey_anterior", "2": "deep_grey_posterior"}
    meta = _copy_meta(
        src, dst, "Colin27DeepGreyAntPost",
        "Colin27 deep grey (six AAL structures merged), class 1 in front of the anterior commissure's coronal plane "
        "(MNI y >= 0), class 2 behind it: classes told apart by position only.", labels,
    )  # fmt: skip
    for rel, is_label in _files(meta):
        img = nib.load(str(src / rel))
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        if not is_label:
            shutil.copyfile(src / rel, out)
            continue
        lab = np.asarray(img.dataobj)
        ijk = np.indices(lab.shape).reshape(3, -1)
        y = (img.affine[:3, :3] @ ijk + img.affine[:3, 3:4])[1].reshape(lab.shape)
        new = np.where(lab > 0, np.where(y >= 0, 1, 2), 0).astype(np.uint8)
        nib.save(nib.Nifti1Image(new, img.affine, img.header), str(out))
    (dst / "dataset.json").write_text(json.dumps(meta, indent=2))
    return dst


def derive_anisotropic(src: Path, dst: Path, factor: int = 4) -> Path:
    """Every image and label resliced to ``factor`` × the slice thickness along z (RAS z, axis 2 of these files)."""
    meta = _copy_meta(
        src, dst, f"Colin27DeepGrey1x1x{factor}",
        f"Colin27 deep grey resliced to 1 x 1 x {factor} mm (image: mean of {factor} slices; labels: majority).",
        json.loads((src / "dataset.json").read_text())["labels"],
    )  # fmt: skip
    for rel, is_label in _files(meta):
        img = nib.load(str(src / rel))
        data = np.asarray(img.dataobj)
        n = data.shape[2] // factor
        blocks = data[:, :, : n * factor].reshape(data.shape[0], data.shape[1], n, factor)
        if is_label:
            classes = np.arange(int(data.max()) + 1)
            votes = (blocks[..., None] == classes).sum(axis=3)
            new = votes.argmax(axis=-1).astype(np.uint8)
        else:
            new = blocks.astype(np.float32).mean(axis=3)
        affine = img.affine.copy()
        affine[:3, 3] += affine[:3, 2] * (factor - 1) / 2.0  # the thick slice's centre
        affine[:3, 2] *= factor
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(new, affine), str(out))
    (dst / "dataset.json").write_text(json.dumps(meta, indent=2))
    return dst


def _block(data: np.ndarray, factors: tuple[int, ...], is_label: bool) -> np.ndarray:
    """``data`` reduced by ``factors`` per axis: block means (images) or block majorities (labels)."""
    shape = [n // f for n, f in zip(data.shape, factors)]
    data = data[tuple(slice(0, n * f) for n, f in zip(shape, factors))]
    split = data.reshape(shape[0], factors[0], shape[1], factors[1], shape[2], factors[2])
    blocks = split.transpose(0, 2, 4, 1, 3, 5).reshape(*shape, -1)
    if not is_label:
        return blocks.astype(np.float32).mean(axis=-1)
    classes = np.arange(int(data.max()) + 1)
    return (blocks[..., None] == classes).sum(axis=-2).argmax(axis=-1).astype(np.uint8)


def coarsen(src: Path, dst: Path, factor: int = 2, below_mm: float = 2.5) -> Path:
    """Every image and label of an MSD folder reduced ``factor``× along each axis finer than ``below_mm`` (image:
    block mean; label: block majority; affine: the block's centre), so training fits a small CPU budget. NIfTI
    and NRRD in, NIfTI out."""
    import SimpleITK as sitk

    meta = json.loads((src / "dataset.json").read_text())

    def renamed(rel: str) -> str:
        return rel[: -len(".nrrd")] + ".nii.gz" if rel.endswith(".nrrd") else rel

    for rel, is_label in _files(meta):
        path = src / rel
        if rel.endswith(".nrrd"):  # to NIfTI with a RAS affine (ITK's LPS → RAS: negate x and y)
            img = sitk.ReadImage(str(path))
            data = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
            direction = np.array(img.GetDirection()).reshape(3, 3) * np.array(img.GetSpacing())
            affine = np.eye(4)
            affine[:3, :3], affine[:3, 3] = direction, img.GetOrigin()
            affine[:2] *= -1
        else:
            img = nib.load(str(path))
            data, affine = np.asarray(img.dataobj), img.affine.copy()
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        factors = tuple(factor if s < below_mm else 1 for s in spacing)
        new_affine = affine.copy()
        for axis, f in enumerate(factors):
            new_affine[:3, 3] += affine[:3, axis] * (f - 1) / 2.0
            new_affine[:3, axis] *= f
        out = dst / renamed(rel)
        out.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(_block(data, factors, is_label), new_affine), str(out))
    text = json.dumps(meta, indent=2)
    (dst / "dataset.json").write_text(text.replace(".nrrd", ".nii.gz"))
    return dst


def derive_lung_ct(pyradiomics_dir: Path, dst: Path, train: str = "lung2", test: str = "lung1") -> Path:
    """pyradiomics' lung CTs as an MSD folder: ``train`` for training (and validation), ``test`` held out."""
    data = pyradiomics_dir / "data"
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data / f"{train}_image.nrrd", dst / "imagesTr" / f"{train}.nrrd")
    shutil.copyfile(data / f"{train}_label.nrrd", dst / "labelsTr" / f"{train}.nrrd")
    shutil.copyfile(data / f"{test}_image.nrrd", dst / "imagesTs" / f"{test}.nrrd")
    shutil.copyfile(data / f"{test}_label.nrrd", dst / "labelsTs" / f"{test}.nrrd")
    case = {"image": f"./imagesTr/{train}.nrrd", "label": f"./labelsTr/{train}.nrrd"}
    meta = {
        "name": "PyradiomicsLungCT",
        "description": f"pyradiomics 3.0.1 test data: lung CT with a tumour label; train {train}, test {test}.",
        "licence": "BSD-3-clause (pyradiomics)",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "tumour"},
        "training": [case],
        "validation": [case],
        "test": [f"./imagesTs/{test}.nrrd"],
        "test_labels": [f"./labelsTs/{test}.nrrd"],
    }
    (dst / "dataset.json").write_text(json.dumps(meta, indent=2))
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--colin27", type=Path, help="the Colin27DeepGrey folder (fetch_colin27.py)")
    parser.add_argument("--colin27-right", type=Path, help="the Colin27DeepGreyTrainRight folder (reversed split)")
    parser.add_argument("--pyradiomics", type=Path, help="the unpacked pyradiomics-3.0.1 source folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--coarsen", type=int, default=1, help="reduce every data set this many times (axes < 2.5 mm)")
    args = parser.parse_args()

    def scaled(src: Path, name: str) -> Path:
        return coarsen(src, args.out / f"{name}_c{args.coarsen}", args.coarsen) if args.coarsen > 1 else src

    if args.colin27:
        colin = scaled(args.colin27, "colin27")
        print(colin)
        print(derive_position(colin, args.out / f"position{'_c%d' % args.coarsen if args.coarsen > 1 else ''}"))
        print(derive_anisotropic(colin, args.out / f"aniso{'_c%d' % args.coarsen if args.coarsen > 1 else ''}"))
    if args.colin27_right:
        print(scaled(args.colin27_right, "colin27_right"))
    if args.pyradiomics:
        lung = derive_lung_ct(args.pyradiomics, args.out / "lungct")
        print(scaled(lung, "lungct"))


if __name__ == "__main__":
    main()
