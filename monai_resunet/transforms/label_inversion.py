"""Taking a label map from the network's grid back to the input's grid with one byte per voxel.

``Invertd(nearest_interp=True)`` replays the inverse of every pre-processing step: for ``Spacingd`` that is a
``grid_sample`` over the whole volume in float (a float32/float64 copy of the label and a coordinate grid of
3 floats per output voxel), which made the inversion the peak-memory stage of whole-scan inference
(the 3D bundle's ``docs/experiments.md``). But the steps of ``segmentation_preprocessing`` (orientation, spacing,
crop, pad) only permute, flip, scale and shift the voxel axes, so the map from an input voxel to its nearest
network voxel is separable: one index vector per axis. ``InvertLabelMapd`` computes those vectors from the two
affines and gathers the labels directly into a label volume of the input's size and integer dtype.

Two details make it equal to ``Invertd``: voxels the pre-processing padded on (``SpatialPadd``) are never
mapped back (``Invertd`` removes the padding first, then resamples with border padding, so positions just past
the resampled grid take its edge value), and input voxels outside the box ``CropForegroundd`` kept are
background (``Invertd`` pads them with zeros).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data.meta_tensor import MetaTensor
from monai.transforms import Invertd, MapTransform

__all__ = ["InvertLabelMapd", "axis_aligned_index_map"]


def axis_aligned_index_map(
    source_affine: np.ndarray, target_affine: np.ndarray, target_shape: Sequence[int], tol: float = 1e-4
) -> tuple[list[int], list[np.ndarray]] | None:
    """For each target (input-grid) axis, the source (network-grid) axis it runs along and the nearest source
    index of every target voxel, or ``None`` when the grids are not axis-aligned (rotated relative to each other).

    ``source_affine``/``target_affine`` map voxel indices to world coordinates (4×4). Indices are rounded half to
    even, as ``grid_sample(mode="nearest")`` does; out-of-range indices are returned as they are (the caller
    treats them as background).
    """
    to_source = np.linalg.inv(np.asarray(source_affine, dtype=np.float64)) @ np.asarray(target_affine, np.float64)
    linear = to_source[:3, :3]
    scale = np.abs(linear).max()
    axes: list[int] = []
    indices: list[np.ndarray] = []
    for t_axis in range(3):
        column = linear[:, t_axis]
        s_axis = int(np.argmax(np.abs(column)))
        if np.any(np.abs(np.delete(column, s_axis)) > tol * scale) or s_axis in axes:
            return None  # a rotation mixes axes: not separable
        axes.append(s_axis)
    for t_axis, s_axis in enumerate(axes):
        positions = to_source[s_axis, t_axis] * np.arange(target_shape[t_axis]) + to_source[s_axis, 3]
        indices.append(np.rint(positions).astype(np.int64))
    return axes, indices


_PAD_CLASSES = ("SpatialPad", "BorderPad", "DivisiblePad", "Pad")


def _kept_geometry(image: Any, grid_shape: Sequence[int]) -> tuple[list[int], list[int], np.ndarray, list[int]] | None:
    """Read from ``image.applied_operations`` what of the network grid (``grid_shape``) the pre-processing padded
    on, and the box of the input it kept: ``(first, last, box_affine, box_shape)`` where ``first..last`` (inclusive,
    per network axis) is the un-padded part, and ``box_affine``/``box_shape`` the grid the resampling started from
    (the cropped input). ``None`` when the operations are not the orientation/crop/resample/pad chain this mapping
    reproduces exactly (the caller then falls back to ``Invertd``)."""
    operations = list(getattr(image, "applied_operations", None) or [])
    first = [0] * len(grid_shape)
    last = [int(n) - 1 for n in grid_shape]
    while operations and operations[-1].get("class") in _PAD_CLASSES:
        padded = operations.pop()["extra_info"]["padded"][1:]  # the first pair is the channel axis
        for axis, (before, after) in enumerate(padded):
            first[axis] += int(before)
            last[axis] -= int(after)
    if not operations or any(lo > hi for lo, hi in zip(first, last)):
        return None
    resample = operations[-1]
    if resample.get("class") not in ("SpatialResample", "SlabSpatialResample"):
        return None
    box_affine = np.asarray(resample["extra_info"]["src_affine"], dtype=np.float64)
    return first, last, box_affine, [int(n) for n in resample["orig_size"]]


class InvertLabelMapd(MapTransform):
    """Take an integer label map (channel first, on the network's grid, as ``SlabArgmaxInferer`` returns it)
    back to the grid the input had when it was loaded, by nearest neighbour, without float copies.

    The output has the input's ``spatial_shape`` and ``original_affine`` (from ``orig_key``'s metadata, as
    ``LoadImaged`` records them), the label's dtype, and the label's other metadata (file name for
    ``SaveImaged``); voxels outside the network's grid (cropped away as background) are 0. When the two grids are
    rotated relative to each other, which ``segmentation_preprocessing`` never produces, it falls back to
    ``Invertd(nearest_interp=True)`` with ``transform``.

    Args:
        keys: label keys to invert.
        transform: the pre-processing ``Compose`` (only used for the fallback).
        orig_key: the pre-processed image whose metadata holds ``original_affine`` and ``spatial_shape``.
        allow_missing_keys: don't raise if a key is missing.

    Example::

        post = Compose([InvertLabelMapd("pred", transform=preprocessing, orig_key="image"), SaveImaged("pred", ...)])
    """

    def __init__(
        self, keys: KeysCollection, transform: Any, orig_key: str = "image", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.orig_key = orig_key
        self.fallback = Invertd(keys, transform=transform, orig_keys=orig_key, nearest_interp=True, to_tensor=True)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.orig_key]
        meta = image.meta if isinstance(image, MetaTensor) else d.get(f"{self.orig_key}_meta_dict", {})
        original_affine = meta.get("original_affine")
        original_shape = meta.get("spatial_shape")
        for key in self.key_iterator(d):
            label = d[key]
            if original_affine is None or original_shape is None or not isinstance(label, MetaTensor):
                d = self.fallback(d)  # no metadata to map with: let MONAI replay the transforms
                continue
            target_shape = [int(s) for s in original_shape]
            geometry = _kept_geometry(image, label.shape[1:]) if label.ndim == 4 else None
            mapped = axis_aligned_index_map(label.affine.numpy(), np.asarray(original_affine), target_shape)
            box = axis_aligned_index_map(geometry[2], np.asarray(original_affine), target_shape) if geometry else None
            if mapped is None or box is None:
                d = self.fallback(d)  # not the axis-aligned chain this mapping reproduces: let MONAI replay it
                continue
            d[key] = self._gather(label, mapped, box, geometry, original_affine)
        return d

    @staticmethod
    def _gather(
        label: MetaTensor,
        mapped: tuple[list[int], list[np.ndarray]],
        box: tuple[list[int], list[np.ndarray]],
        geometry: tuple[list[int], list[int], np.ndarray, list[int]],
        original_affine,
    ) -> MetaTensor:
        axes, indices = mapped
        first, last, _, box_shape = geometry
        source = label.as_tensor()
        out_shape = [len(i) for i in indices]
        out = torch.zeros((source.shape[0], *out_shape), dtype=source.dtype, device=source.device)
        # an input voxel is written where it lies inside the kept (cropped) box; its label comes from the nearest
        # voxel of the resampled grid without the padding, clamped to that grid's edge as Invertd's border padding
        valid = [(b >= 0) & (b < box_shape[a]) for b, a in zip(box[1], box[0])]
        if all(v.any() for v in valid):
            ranges = [np.flatnonzero(v) for v in valid]
            gather = [
                torch.as_tensor(np.clip(i[r], first[a], last[a]), device=source.device)
                for i, r, a in zip(indices, ranges, axes)
            ]
            # source axes reordered to follow the target axes, then one gather per axis (each a 1-byte copy)
            part = source.permute(0, *(1 + a for a in axes))
            for dim, idx in enumerate(gather):
                part = part.index_select(1 + dim, idx)
            out[(slice(None), *(slice(r[0], r[-1] + 1) for r in ranges))] = part
        result = MetaTensor(out, affine=torch.as_tensor(np.asarray(original_affine), dtype=torch.float64))
        result.meta.update({k: v for k, v in label.meta.items() if k not in ("affine", "spatial_shape")})
        result.meta["affine"] = result.affine
        result.meta["spatial_shape"] = np.asarray(out_shape)
        return result
