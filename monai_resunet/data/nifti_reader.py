"""MONAI's ``NibabelReader`` with its two slow steps made fast: gzip decompression and the voxel layout.

Loading a large ``.nii.gz`` with ``LoadImaged`` spends its time in Python's ``gzip`` inflating the data and in
``np.ascontiguousarray`` (timings: the 3D bundle's ``docs/experiments.md``): NIfTI voxels are stored x-fastest (Fortran
order) and MONAI's ``LoadImage`` makes every array C-contiguous with numpy's single-threaded strided copy.
``FastNibabelReader`` inflates ``.gz`` files with ISA-L (``isal.igzip``, the same gzip format, about twice as fast)
through nibabel's own header and array code, and returns the array already C-contiguous, copied by torch's
multi-threaded ``contiguous()``; MONAI's copy then does nothing. The values, dtype, scaling and metadata are nibabel's;
without ``isal`` installed it reads with nibabel's gzip, and it hands anything it does not handle (GPU loading,
re-oriented images) to ``NibabelReader`` unchanged."""

from __future__ import annotations

import numpy as np
from monai.data import NibabelReader
from monai.utils import optional_import
from nibabel.arrayproxy import ArrayProxy

from monai_resunet.data.array_layout import c_contiguous

igzip, has_isal = optional_import("isal.igzip")

__all__ = ["FastNibabelReader", "has_isal"]


class FastNibabelReader(NibabelReader):
    """``monai.data.NibabelReader`` that inflates ``.nii.gz`` with ISA-L and returns C-contiguous arrays laid out by
    torch (multi-threaded); same values, dtype and metadata as ``NibabelReader``.

    Args:
        args, kwargs: as ``monai.data.NibabelReader``.

    Example::

        image = LoadImaged("image", reader=FastNibabelReader(), image_only=True, dtype=None)({"image": "ct.nii.gz"})
    """

    def _get_array_data(self, img, filename):
        if self.to_gpu:
            return super()._get_array_data(img, filename)
        return c_contiguous(self._read_voxels(img, str(filename)))

    @staticmethod
    def _read_voxels(img, filename: str) -> np.ndarray:
        proxy = img.dataobj
        # only the file's own, untouched array: an image re-oriented by as_closest_canonical holds other voxels
        own_file = isinstance(proxy, ArrayProxy) and proxy.file_like == filename
        if has_isal and own_file and filename.lower().endswith(".gz"):
            with igzip.open(filename, "rb") as stream:
                # nibabel parses the header and reads (and scales) the array from the ISA-L stream, as from its own
                stream_img = type(img).from_file_map(type(img).make_file_map({"image": stream, "header": stream}))
                return np.asanyarray(stream_img.dataobj)
        return np.asanyarray(proxy)
