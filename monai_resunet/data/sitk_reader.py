"""A MONAI ``ImageReader`` for NRRD and MetaImage files through SimpleITK (already a dependency, used to write them).

MONAI reads these formats only with its ``ITKReader``, which needs the ``itk`` package. With ``itk`` installed, one
in four runs of this project's two-process DDP training test aborted at exit ("terminate called without an active
exception"; none in six without it), so the project does not depend on it. ``SimpleITKReader`` follows
``ITKReader``'s conventions: the array is indexed (x, y, z[, channel]), the affine maps those indices to RAS world
coordinates (ITK's LPS flipped, as MONAI's ``affine_lps_to_ras=True``), and the metadata has the keys MONAI's
transforms read (``affine``, ``original_affine``, ``spatial_shape``, ``original_channel_dim``, ``space``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from monai.config import PathLike
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from monai_resunet.data.array_layout import c_contiguous

if TYPE_CHECKING:
    import SimpleITK as sitk

__all__ = ["SIMPLEITK_SUFFIXES", "SimpleITKReader"]

SIMPLEITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


def _ras_affine(image: sitk.Image) -> np.ndarray:
    """The (x, y, z) index → RAS world affine of a SimpleITK image (its geometry is LPS)."""
    dim = image.GetDimension()
    affine = np.eye(dim + 1)
    affine[:dim, :dim] = np.asarray(image.GetDirection()).reshape(dim, dim) @ np.diag(image.GetSpacing())
    affine[:dim, dim] = image.GetOrigin()
    flip = np.ones(dim + 1)
    flip[: min(dim, 2)] = -1  # L → R, P → A
    return np.diag(flip) @ affine


class SimpleITKReader(ImageReader):
    """Read NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``, ``.mhd``) files with SimpleITK into MONAI's
    (x, y, z[, channel]) layout with a RAS affine, as ``monai.data.ITKReader`` does.

    Args:
        channel_dim: the channel dimension of the returned array (``None``: -1 for multi-component images, none
            for scalar ones).

    Example::

        image = LoadImaged("image", reader=SimpleITKReader(), image_only=True)({"image": "scan.nrrd"})
    """

    def __init__(self, channel_dim: int | None = None) -> None:
        super().__init__()
        self.channel_dim = channel_dim
        self.filenames: Sequence[PathLike] = ()

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        return all(os.fspath(name).lower().endswith(SIMPLEITK_SUFFIXES) for name in ensure_tuple(filename))

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs):
        # imported here, not with the module: SimpleITK adds tens of MiB to a process's resident set,
        # which every NIfTI-only inference would otherwise carry
        import SimpleITK as sitk

        self.filenames = ensure_tuple(data)
        images = []
        for name in self.filenames:
            try:
                images.append(sitk.ReadImage(os.fspath(name)))
            except RuntimeError as e:  # SimpleITK's message is a multi-line ITK trace: keep its last useful line
                reason = next((line.strip() for line in reversed(str(e).splitlines()) if line.strip()), str(e))
                raise ValueError(f"{name}: SimpleITK cannot read this file ({reason}).") from None
        return images if len(images) > 1 else images[0]

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        import SimpleITK as sitk

        arrays, meta = [], {}
        for image in img if isinstance(img, (list, tuple)) else [img]:  # (a sitk.Image iterates its pixels)
            dim = image.GetDimension()
            # SimpleITK's array is (z, y, x[, c]); MONAI's readers return (x, y, z[, c])
            array = sitk.GetArrayViewFromImage(image)
            array = array.transpose(*reversed(range(dim)), *range(dim, array.ndim))
            affine = _ras_affine(image)
            meta = {
                MetaKeys.AFFINE: affine,
                MetaKeys.ORIGINAL_AFFINE: affine.copy(),
                MetaKeys.SPATIAL_SHAPE: np.asarray(image.GetSize()),
                MetaKeys.SPACE: SpaceKeys.RAS,
                "spacing": np.asarray(image.GetSpacing()),
                MetaKeys.ORIGINAL_CHANNEL_DIM: (
                    self.channel_dim if self.channel_dim is not None
                    else (-1 if image.GetNumberOfComponentsPerPixel() > 1 else float("nan"))
                ),
            }  # fmt: skip
            copy = c_contiguous(array)
            # a copy in any case: the view points into the SimpleITK image's buffer, which dies with the image
            arrays.append(copy.copy() if np.may_share_memory(copy, array) else copy)
        if len(arrays) == 1:
            return arrays[0], meta
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0  # several files: stacked as channels, as MONAI's readers do
        return np.stack(arrays, axis=0), meta
