"""MONAI's ``Spacingd``, computed one slab of the output at a time, so resampling a huge scan needs memory for
the output and one slab, not for the whole volume's sampling grid.

MONAI's ``SpatialResample`` samples the whole output in one ``grid_sample`` call: it holds a float copy of the whole
input and a coordinate grid of 3 floats per output voxel (12 bytes) beside the 4-byte output. On a 512×512×1000 CT
that made ``Spacingd`` the peak-memory stage of inference (the 3D bundle's ``docs/experiments.md``).
``SlabSpatialResample`` lets MONAI plan the operation (its own lazy call: output grid, voxel transform, the record
``Invertd`` replays), then samples the output in slabs along its first spatial axis, each from the box of the input
that slab reads, cast to the compute dtype slab by slab; the result carries the metadata MONAI's eager call records.
When the voxel transform only scales and shifts each axis (no rotation: what ``Orientationd`` then ``Spacingd``
gives), a slab is interpolated one axis at a time (linear or nearest in 1D, which composes to exactly the trilinear
or nearest-neighbour rule of ``grid_sample``, with its border/zeros padding) without a coordinate grid, which is
also faster than MONAI's call (timings: the 3D bundle's ``docs/experiments.md``).
Whatever it cannot reproduce (spline orders, ``reflection`` padding, ``align_corners=True``, lazy or pending
transforms, MONAI's compiled resampler) goes to MONAI's own call unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.config import USE_COMPILED, DtypeLike, KeysCollection
from monai.data.meta_obj import get_track_meta
from monai.data.meta_tensor import MetaTensor
from monai.data.utils import AFFINE_TOL
from monai.transforms import Spacingd, SpatialResample
from monai.transforms.inverse import TraceableTransform
from monai.utils import LazyAttr, TraceKeys, get_equivalent_dtype

__all__ = ["SlabSpacingd", "SlabSpatialResample"]

# 4 Mi output voxels per slab: 16 MiB of output, 48 MiB of grid; a 512×512 CT slab of that size is a few
# dozen planes, so the per-call overhead of grid_sample stays negligible
DEFAULT_SLAB_VOXELS = 1 << 22


class SlabSpatialResample(SpatialResample):
    """``SpatialResample`` that computes its output in slabs of about ``slab_voxels`` voxels along the first
    spatial axis; same values (up to float rounding), same metadata, same ``inverse``.

    Args:
        slab_voxels: output voxels per slab (the slab is whole planes of the first spatial axis, at least one).
        mode, padding_mode, align_corners, dtype, lazy: as ``monai.transforms.SpatialResample``.

    Example::

        resample = SlabSpatialResample(mode="bilinear", dtype=np.float32)
        out = resample(image, dst_affine=target_affine, spatial_size=(287, 215, 1000))
    """

    def __init__(self, *args, slab_voxels: int = DEFAULT_SLAB_VOXELS, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if slab_voxels < 1:
            raise ValueError(f"slab_voxels must be positive, got {slab_voxels}")
        self.slab_voxels = int(slab_voxels)

    def __call__(  # type: ignore[override]
        self,
        img: torch.Tensor,
        dst_affine: torch.Tensor | None = None,
        spatial_size: Sequence[int] | torch.Tensor | int | None = None,
        mode: str | int | None = None,
        padding_mode: str | None = None,
        align_corners: bool | None = None,
        dtype: DtypeLike = None,
        lazy: bool | None = None,
    ) -> torch.Tensor:
        args = dict(dst_affine=dst_affine, spatial_size=spatial_size, mode=mode, padding_mode=padding_mode,
                    align_corners=align_corners, dtype=dtype)  # fmt: skip
        mode = self.mode if mode is None else mode
        padding_mode = self.padding_mode if padding_mode is None else padding_mode
        if (
            (self.lazy if lazy is None else lazy)
            or not isinstance(img, MetaTensor)
            or img.pending_operations
            or img.ndim != 4
            or isinstance(mode, int)  # spline orders: MONAI's Affine path, other centring conventions
            or str(padding_mode) not in ("zeros", "border")  # reflection about a slab's box is not the volume's
            or USE_COMPILED
            or not (get_track_meta() and self.tracing)  # no plan to read without tracked metadata
            or math.prod(img.shape[1:]) <= self.slab_voxels  # an input within one slab: MONAI's call as it is
        ):
            return super().__call__(img, **args, lazy=lazy)
        # MONAI plans the operation lazily: no voxels computed, its record holds the output size and the voxel
        # transform (output index -> input index), exactly what its eager call uses
        plan = super().__call__(img, **args, lazy=True)
        record = plan.pending_operations[-1]
        xform = torch.as_tensor(record[LazyAttr.AFFINE], dtype=torch.float64)
        out_size = [int(s) for s in record[LazyAttr.SHAPE]]
        unchanged = torch.allclose(xform, torch.eye(4, dtype=torch.float64), atol=AFFINE_TOL)
        if unchanged and out_size == list(img.shape[1:]):
            return super().__call__(img, **args, lazy=False)  # MONAI returns the input unchanged: nothing to slab
        align_corners = self.align_corners if align_corners is None else align_corners
        separable = str(mode) in ("bilinear", "nearest") and not align_corners and _is_axis_scaling(xform)
        compute_dtype = get_equivalent_dtype(dtype or self.dtype or img.dtype, torch.Tensor)
        values = self._resample_slabs(
            img, xform, out_size, args, (str(mode), str(padding_mode), compute_dtype) if separable else None
        )
        # the metadata MONAI's eager call records (spatial_resample: affine = input affine @ xform, one applied op)
        meta = TraceableTransform.track_transform_meta(
            img, sp_size=out_size, affine=xform, extra_info=dict(record[TraceKeys.EXTRA_INFO]),
            orig_size=record[TraceKeys.ORIG_SIZE], transform_info=self.get_transform_info(), lazy=False,
        )  # fmt: skip
        return MetaTensor(values).copy_meta_from(meta)

    def _resample_slabs(
        self, img: MetaTensor, xform: torch.Tensor, out_size: list[int], args: dict, separable: tuple | None
    ) -> torch.Tensor:
        source = img.as_tensor()
        src_affine = img.affine.to(torch.float64)
        dst_affine = src_affine @ xform  # the output grid's affine
        in_size = np.asarray(source.shape[1:])
        plane = math.prod(out_size[1:])
        step = max(1, self.slab_voxels // plane)
        out = torch.empty((source.shape[0], *out_size), dtype=torch.float32, device=source.device)
        # the 8 corners of a slab's index box; the input box a slab reads is their image under xform, ±1 voxel for
        # linear interpolation, clipped to the input (kept non-empty, so border padding still sees the edge)
        corners = np.array(np.meshgrid([0, 1], [0, 1], [0, 1], indexing="ij")).reshape(3, -1).T
        with self.trace_transform(False):
            for start in range(0, out_size[0], step):
                stop = min(start + step, out_size[0])
                extent = np.array([stop - start - 1, out_size[1] - 1, out_size[2] - 1])
                index_box = corners * extent + [start, 0, 0]
                mapped = (xform[:3, :3].numpy() @ index_box.T + xform[:3, 3:].numpy()).T
                low = np.clip(np.floor(mapped.min(0)).astype(int) - 1, 0, in_size - 1)
                high = np.clip(np.ceil(mapped.max(0)).astype(int) + 2, low + 1, in_size)
                box = source[(slice(None), *(slice(lo, hi) for lo, hi in zip(low, high)))]
                if separable is not None:  # per-axis scale and shift: interpolate axis by axis, no grid
                    mode, padding_mode, compute_dtype = separable
                    box_xform = xform.clone()
                    box_xform[:3, 3] += xform[:3, 0] * start - torch.as_tensor(low, dtype=torch.float64)
                    size = [stop - start, *out_size[1:]]
                    out[:, start:stop] = _resample_axis_by_axis(
                        box.to(compute_dtype), box_xform, size, mode, padding_mode
                    )
                    continue
                box_affine = src_affine.clone()
                box_affine[:3, 3] += src_affine[:3, :3] @ torch.as_tensor(low, dtype=torch.float64)
                slab_affine = dst_affine.clone()
                slab_affine[:3, 3] += dst_affine[:3, 0] * start
                slab = SpatialResample.__call__(
                    self, MetaTensor(box, affine=box_affine), **{**args, "dst_affine": slab_affine,
                    "spatial_size": [stop - start, *out_size[1:]]}, lazy=False,
                )  # fmt: skip
                out[:, start:stop] = slab.as_tensor() if isinstance(slab, MetaTensor) else slab
        return out


def _is_axis_scaling(xform: torch.Tensor, tol: float = 1e-9) -> bool:
    """True when the voxel transform maps each output axis onto the same input axis (scale and shift only)."""
    linear = xform[:3, :3]
    off_diagonal = linear - torch.diag(torch.diagonal(linear))
    return bool(off_diagonal.abs().max() <= tol * linear.abs().max()) and bool((torch.diagonal(linear) != 0).all())


def _resample_axis_by_axis(
    box: torch.Tensor, xform: torch.Tensor, out_size: Sequence[int], mode: str, padding_mode: str
) -> torch.Tensor:
    """``grid_sample``'s bilinear or nearest sampling (``align_corners=False``, border or zeros padding) of
    ``box`` (C, X, Y, Z) at output index i -> box position ``xform[a, a] * i + xform[a, 3]`` per axis ``a``, one 1D
    interpolation per axis; the axis that shrinks most goes first, so later passes touch fewer voxels."""
    out = box
    in_size = box.shape[1:]
    for axis in sorted(range(3), key=lambda a: out_size[a] / in_size[a]):
        n = int(in_size[axis])
        positions = float(xform[axis, axis]) * torch.arange(out_size[axis], dtype=torch.float64) + float(xform[axis, 3])
        shape = [1, 1, 1, 1]
        shape[1 + axis] = -1
        if padding_mode == "border":  # grid_sample clips the coordinate to the edge voxels' centres
            positions = positions.clamp(0, n - 1)
        if mode == "nearest":
            index = torch.round(positions)  # half to even, as grid_sample's nearbyint
            inside = (index >= 0) & (index <= n - 1)
            out = out.index_select(1 + axis, index.clamp(0, n - 1).long())
            if not inside.all():  # zeros padding
                out = out * inside.to(out.dtype).view(shape)
            continue
        first = torch.floor(positions)
        w_second = positions - first
        w_first = 1 - w_second
        if padding_mode == "zeros":  # a neighbour outside the box contributes 0
            w_first = w_first * ((first >= 0) & (first <= n - 1))
            w_second = w_second * ((first + 1 >= 0) & (first + 1 <= n - 1))
        a = out.index_select(1 + axis, first.clamp(0, n - 1).long())
        b = out.index_select(1 + axis, (first + 1).clamp(0, n - 1).long())
        out = torch.addcmul(a * w_first.to(out.dtype).view(shape), b, w_second.to(out.dtype).view(shape))
    return out


class SlabSpacingd(Spacingd):
    """``monai.transforms.Spacingd`` whose resampling runs slab by slab (``SlabSpatialResample``): the same output,
    metadata and inverse, with memory for the output plus one slab instead of a whole-volume sampling grid.

    Args:
        keys, pixdim, kwargs: as ``monai.transforms.Spacingd``.
        slab_voxels: output voxels per slab.

    Example::

        spacing = SlabSpacingd(["image", "label"], pixdim=(1.0, 1.0, 1.0), mode=["bilinear", "nearest"])
    """

    def __init__(
        self, keys: KeysCollection, pixdim: Sequence[float] | float, slab_voxels: int = DEFAULT_SLAB_VOXELS, **kwargs
    ) -> None:
        super().__init__(keys, pixdim, **kwargs)
        planned = self.spacing_transform.sp_resample
        self.spacing_transform.sp_resample = SlabSpatialResample(
            mode=planned.mode, padding_mode=planned.padding_mode, align_corners=planned.align_corners,
            dtype=planned.dtype, lazy=planned.lazy, slab_voxels=slab_voxels,
        )  # fmt: skip
