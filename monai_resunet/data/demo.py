"""A small synthetic MSD-layout dataset (MONAI's ``create_test_image_3d`` spheres) for the README's first command
and for tests: a user with no data yet still sees the bundle train, validate and infer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.data import create_test_image_3d

__all__ = ["make_demo_dataset", "DEMO_CLASS_NAMES"]

DEMO_CLASS_NAMES = ("background", "dim_sphere", "bright_sphere")


def _demo_affine(rng: np.random.RandomState, spacing: tuple[float, float, float]) -> np.ndarray:
    # anisotropic voxels, a small rotation about z and an off-centre origin: the geometry a real scan has,
    # so every test of "prediction on the input grid" is not a test on an identity affine
    angle = rng.uniform(-0.15, 0.15)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing)
    affine[:3, 3] = rng.uniform(-80, 80, size=3)
    return affine


def make_demo_dataset(
    out_dir: str | os.PathLike,
    num_train: int = 16,
    num_test: int = 4,
    size: tuple[int, int, int] = (64, 64, 48),
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.5),
    noise: float = 0.6,
    seed: int = 0,
) -> Path:
    """Write an MSD-layout dataset of noisy spheres in two foreground classes.

    ``out_dir/dataset.json``, ``imagesTr/case_XXX.nii.gz``, ``labelsTr/case_XXX.nii.gz`` (uint8 labels 0..2)
    and ``imagesTs/case_XXX.nii.gz``; modality "MR". Deterministic for a given ``seed``. Existing files are
    overwritten.

    Args:
        out_dir: dataset folder to create.
        num_train: labelled cases (imagesTr/labelsTr).
        num_test: unlabelled cases (imagesTs).
        size: volume size in voxels (each side > 2 × the largest sphere radius, 12).
        spacing: voxel size in mm.
        noise: uniform noise amplitude relative to the class intensity step.
        seed: random seed.

    Example::

        make_demo_dataset("/tmp/demo", num_train=8, num_test=2)
    """
    out = Path(out_dir)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    training, test = [], []
    for i in range(num_train + num_test):
        image, label = create_test_image_3d(
            *size, num_objs=8, rad_max=12, rad_min=5, noise_max=noise, num_seg_classes=2, random_state=rng
        )
        affine = _demo_affine(rng, spacing)
        name = f"case_{i:03d}.nii.gz"
        if i < num_train:
            nib.save(nib.Nifti1Image(image.astype(np.float32), affine), out / "imagesTr" / name)
            nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), out / "labelsTr" / name)
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        else:
            nib.save(nib.Nifti1Image(image.astype(np.float32), affine), out / "imagesTs" / name)
            test.append(f"./imagesTs/{name}")
    dataset = {
        "name": "ResUNetDemoSpheres",
        "description": "Synthetic noisy spheres (MONAI create_test_image_3d), two foreground classes",
        "tensorImageSize": "3D",
        "modality": {"0": "MR"},
        "labels": {str(k): v for k, v in enumerate(DEMO_CLASS_NAMES)},
        "numTraining": num_train,
        "numTest": num_test,
        "training": training,
        "test": test,
    }
    (out / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return out
