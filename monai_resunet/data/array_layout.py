"""Array memory layout: C-order copies made by torch's multi-threaded copy. NIfTI and SimpleITK hand out arrays in
the opposite axis order to MONAI's (x-fastest vs. C order), so readers and writers all need this copy, and numpy's
``ascontiguousarray`` makes it on one thread."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["c_contiguous"]


def c_contiguous(array: np.ndarray) -> np.ndarray:
    """``array`` C-contiguous (itself if it is), copied by torch's multi-threaded ``contiguous()`` where torch can
    hold it (numpy's single-threaded ``ascontiguousarray`` otherwise)."""
    if array.flags.c_contiguous or not array.dtype.isnative:
        return np.ascontiguousarray(array)  # torch has no big-endian dtypes: numpy's copy, as MONAI would make
    try:
        return torch.from_numpy(array).contiguous().numpy()
    except (TypeError, ValueError):  # a dtype torch lacks (structured, strings), negative strides (flipped views)
        return np.ascontiguousarray(array)
