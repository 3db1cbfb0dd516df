"""``SlabArgmaxInferer``: sliding-window inference that writes a label map slab by slab, with bounded memory.

MONAI's ``SlidingWindowInferer`` stitches the windows into a full-resolution float map of every class plus a
count map, i.e. ``(num_classes + 1) × 4`` bytes per voxel, before anything can be arg-maxed; ``buffer_steps``
only changes how windows are buffered on ``sw_device`` and still allocates the full map on ``device``. When only
the label map is wanted, this inferer keeps class scores for one slab at a time: windows run in the order of
their start along ``slab_dim``, and as soon as no window left to run reaches a slab, the slab is arg-maxed into a
``uint8`` label volume and its scores are dropped. Every window runs exactly once, with MONAI's own window grid
and blending weights, so there is no re-computation at slab borders and the labels are MONAI's arg-max, voxel
for voxel (see ``SlabArgmaxInferer`` for why a voxel whose class scores tie to float rounding may differ).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.data.meta_tensor import MetaTensor
from monai.data.utils import compute_importance_map, dense_patch_slices, get_valid_patch_size
from monai.inferers import Inferer
from monai.utils import (
    BlendMode,
    PytorchPadMode,
    convert_to_dst_type,
    ensure_tuple,
    ensure_tuple_rep,
    fall_back_tuple,
    look_up_option,
)

__all__ = ["SlabArgmaxInferer"]


def _scan_interval(image_size: Sequence[int], roi_size: Sequence[int], overlap: Sequence[float]) -> tuple[int, ...]:
    # the rule of monai.inferers.utils._get_scan_interval (private there), so that the window grid is MONAI's
    intervals = []
    for size, roi, ov in zip(image_size, roi_size, overlap):
        intervals.append(int(roi) if roi == size else max(int(roi * (1 - ov)), 1))
    return tuple(intervals)


_ARGMAX_PLANES = 8


def _argmax_classes_into(scores: torch.Tensor, out: torch.Tensor) -> None:
    """``out[...] = scores.argmax(0)`` (the first maximum wins, as ``argmax``'s), by one comparison per class.

    ``argmax`` over the outermost dimension of a slab dominated the stitching; element-wise comparisons are
    vectorised along the contiguous planes, and the labels are written in place without argmax's int64 result.
    """
    with torch.no_grad():  # labels carry no gradient (and out= does not take tensors that require one)
        best = scores[0].clone()
        out.zero_()
        for c in range(1, scores.shape[0]):
            out.masked_fill_(scores[c] > best, c)  # strictly greater: a tie keeps the lower class, as argmax does
            torch.maximum(best, scores[c], out=best)


def _label_dtype(num_classes: int) -> torch.dtype:
    if num_classes <= 256:
        return torch.uint8
    return torch.int16 if num_classes <= 2**15 else torch.int32


class SlabArgmaxInferer(Inferer):
    """Sliding-window inference that returns the arg-max label map, never the full-resolution class scores.

    The input is cut, conceptually, into slabs along ``slab_dim``. MONAI's sliding-window grid (``roi_size``,
    ``overlap``) is laid over the whole volume, and its windows run sorted by their start along ``slab_dim``
    (``sw_batch_size`` at a time). Their blended scores (network output × the ``mode`` importance map, as in
    ``sliding_window_inference``) are added into a buffer of ``slab_size + roi_size[slab_dim]`` voxels along
    ``slab_dim``. Once the next window starts at ``z``, nothing left can reach the voxels before ``z``: that part
    of the buffer is arg-maxed over classes into the label volume and the buffer moves on. So only one slab of
    scores (plus a window's depth of context) exists at a time, and no window is computed twice.

    Memory on ``device``: the label volume (1 byte per voxel up to 256 classes) plus
    ``num_classes × (slab_size + roi_size[slab_dim]) × (the other spatial sizes) × 4`` bytes, instead of
    ``(num_classes + 1) × 4`` bytes per voxel for ``SlidingWindowInferer``; plus the network's own activations on
    ``sw_device`` for ``sw_batch_size`` windows, as for any sliding-window inference.

    The labels equal ``SlidingWindowInferer(...)(inputs, network).argmax(1)``: the same windows, weights and
    network calls. Two things can make single voxels differ, both only where two classes' scores tie to float
    rounding: the full path divides the scores by the count map before the arg-max, which this inferer skips
    (the division is by the same positive number for every class of a voxel, so it cannot change the arg-max
    except by rounding two almost equal scores to the same value); and with ``slab_dim`` other than the first
    spatial dimension (MONAI enumerates windows with the last dimension fastest), the windows that overlap a voxel
    are added in a different order, so its sum differs in the last bit. With ``slab_dim=0`` the summation
    order, and so the sums, are MONAI's.

    The output is ``(batch, 1, *spatial)`` integer labels (``uint8`` for up to 256 classes, ``int16``/``int32``
    beyond) on ``device``; for a ``MetaTensor`` input it is a ``MetaTensor`` carrying the input's metadata (affine,
    applied operations), so ``Invertd`` can take it back to the original grid, with ``nearest_interp=True``.

    Args:
        roi_size: the window size, as for ``SlidingWindowInferer`` (non-positive components: the whole image).
        sw_batch_size: windows per network call.
        overlap: overlap of neighbouring windows, per spatial dimension or one for all (in [0, 1)).
        mode: blending of overlapping windows, ``"constant"`` or ``"gaussian"``.
        sigma_scale: the Gaussian's sigma relative to the window size (``mode="gaussian"``).
        padding_mode: padding when the image is smaller than ``roi_size``, as for ``SlidingWindowInferer``.
        cval: the value for ``padding_mode="constant"``.
        slab_size: voxels along ``slab_dim`` arg-maxed together (at least 1; ``None``: ``roi_size[slab_dim]``).
            Smaller slabs use less memory and move the buffer more often; each move copies one window's depth.
        slab_dim: the spatial dimension to slab along (0 is the first spatial dimension, -1 the last); the
            longest axis of a scan (usually the last, z) gives the smallest slabs.
        sw_device: device for the windows and the network (default: the input's device).
        device: device for the score buffer and the label volume (default: the input's device).

    Example::

        inferer = SlabArgmaxInferer(roi_size=(96, 96, 96), sw_batch_size=2, overlap=0.5, mode="gaussian")
        with torch.no_grad():
            labels = inferer(image[None], network)  # (1, 1, H, W, D) uint8, image's meta kept
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int,
        sw_batch_size: int = 1,
        overlap: Sequence[float] | float = 0.25,
        mode: BlendMode | str = BlendMode.CONSTANT,
        sigma_scale: Sequence[float] | float = 0.125,
        padding_mode: PytorchPadMode | str = PytorchPadMode.CONSTANT,
        cval: float = 0.0,
        slab_size: int | None = None,
        slab_dim: int = -1,
        sw_device: torch.device | str | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be at least 1, got {sw_batch_size}.")
        if slab_size is not None and slab_size < 1:
            raise ValueError(f"slab_size must be at least 1 (or None), got {slab_size}.")
        for o in ensure_tuple(overlap):
            if not 0 <= o < 1:
                raise ValueError(f"overlap must be >= 0 and < 1, got {overlap}.")
        self.roi_size = roi_size
        self.sw_batch_size = int(sw_batch_size)
        self.overlap = overlap
        self.mode = look_up_option(mode, BlendMode)
        self.sigma_scale = sigma_scale
        self.padding_mode = look_up_option(padding_mode, PytorchPadMode)
        self.cval = cval
        self.slab_size = slab_size
        self.slab_dim = slab_dim
        self.sw_device = sw_device
        self.device = device

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """Run ``network`` over ``inputs`` (``(batch, channels, *spatial)``) and return the arg-max labels.

        Args:
            inputs: the batch, channel first, as for ``SlidingWindowInferer``.
            network: a callable returning one tensor of class scores (logits or probabilities) per window batch,
                ``(n, num_classes, *roi_size)``.
            args: extra positional arguments for ``network``.
            kwargs: extra keyword arguments for ``network``.
        """
        num_spatial_dims = inputs.ndim - 2
        if num_spatial_dims < 1:
            raise ValueError(f"inputs must be (batch, channels, *spatial), got shape {tuple(inputs.shape)}.")
        dim = self.slab_dim + num_spatial_dims if self.slab_dim < 0 else self.slab_dim
        if not 0 <= dim < num_spatial_dims:
            raise ValueError(f"slab_dim {self.slab_dim} is out of range for {num_spatial_dims} spatial dimensions.")
        device = torch.device(self.device) if self.device is not None else inputs.device
        sw_device = torch.device(self.sw_device) if self.sw_device is not None else inputs.device
        meta = MetaTensor([]).copy_meta_from(inputs, copy_attr=False) if isinstance(inputs, MetaTensor) else None
        x = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        compute_dtype = x.dtype
        batch_size, _, *image_size_ = x.shape
        roi_size = fall_back_tuple(self.roi_size, image_size_)

        # pad an image smaller than the window exactly as sliding_window_inference does (half before, rest after)
        pad_before = [max(r - s, 0) // 2 for r, s in zip(roi_size, image_size_)]
        pad: list[int] = []
        for d in reversed(range(num_spatial_dims)):
            diff = max(roi_size[d] - image_size_[d], 0)
            pad += [diff // 2, diff - diff // 2]
        if any(pad):
            x = F.pad(x, pad=pad, mode=self.padding_mode.value, value=self.cval)
        image_size = tuple(max(s, r) for s, r in zip(image_size_, roi_size))

        overlap = ensure_tuple_rep(self.overlap, num_spatial_dims)
        slices = dense_patch_slices(image_size, roi_size, _scan_interval(image_size, roi_size, overlap))
        # stable: among windows with the same start along dim, MONAI's order is kept
        slices = sorted(slices, key=lambda s: s[dim].start)
        window = get_valid_patch_size(image_size, roi_size)
        weight = compute_importance_map(
            window, mode=self.mode, sigma_scale=self.sigma_scale, device=sw_device, dtype=compute_dtype
        )[None, None]
        depth = window[dim]
        capacity = min(image_size[dim], depth + (self.slab_size or depth))

        labels: torch.Tensor | None = None
        for b in range(batch_size):
            scores: torch.Tensor | None = None  # (classes, *image_size with `capacity` along dim)
            lo = 0  # where the buffer starts along dim
            hi = 0  # the furthest window end added so far

            def flush(end: int) -> None:
                # arg-max [lo, end) along dim into the labels (without the padding) and move the buffer to `end`
                nonlocal lo
                assert scores is not None and labels is not None
                start, stop = max(lo, pad_before[dim]), min(end, pad_before[dim] + image_size_[dim])
                src = [slice(p, p + s) for p, s in zip(pad_before, image_size_)]
                dst = [slice(None)] * num_spatial_dims
                # a few planes at a time, so the running maximum (float, one class's planes) stays small
                for z0 in range(start, stop, _ARGMAX_PLANES):
                    z1 = min(stop, z0 + _ARGMAX_PLANES)
                    src[dim] = slice(z0 - lo, z1 - lo)
                    dst[dim] = slice(z0 - pad_before[dim], z1 - pad_before[dim])
                    _argmax_classes_into(scores[(slice(None), *src)], labels[(b, 0, *dst)])
                kept = hi - end
                if kept > 0:
                    tail = scores.narrow(dim + 1, end - lo, kept)
                    if end - lo < kept:  # a slab thinner than the window: the tail overlaps where it goes
                        tail = tail.clone()
                    scores.narrow(dim + 1, 0, kept).copy_(tail)
                scores.narrow(dim + 1, max(kept, 0), capacity - max(kept, 0)).zero_()
                lo = end

            for first in range(0, len(slices), self.sw_batch_size):
                batch_slices = slices[first : first + self.sw_batch_size]
                win = torch.cat([x[(slice(b, b + 1), slice(None), *s)] for s in batch_slices]).to(sw_device)
                # labels carry no gradient, so where the caller already disabled it (MONAI's evaluator: no_grad) the
                # network runs in inference mode: no version counters or autograd metadata (a little faster).
                # Only the window's scores are inference tensors; the buffers below stay normal tensors, so later
                # transforms may modify the labels.
                with torch.inference_mode(not torch.is_grad_enabled()):
                    out = network(win, *args, **kwargs)
                    if not isinstance(out, torch.Tensor):
                        raise TypeError(
                            f"SlabArgmaxInferer needs a network that returns one tensor, got {type(out).__name__}."
                        )
                    if tuple(out.shape[2:]) != tuple(window):
                        raise ValueError(
                            f"the network's output windows {tuple(out.shape[2:])} differ from its input windows "
                            f"{tuple(window)}; SlabArgmaxInferer needs same-size outputs."
                        )
                    # the same arithmetic as sliding_window_inference (in place, so an AMP output stays half
                    # precision until it is added), then move to `device` and add
                    out *= weight
                    out = out.to(device)
                if scores is None:
                    num_classes = out.shape[1]
                    if labels is None:
                        labels = torch.empty(
                            (batch_size, 1, *image_size_), dtype=_label_dtype(num_classes), device=device
                        )
                    buffer_size = list(image_size)
                    buffer_size[dim] = capacity
                    scores = torch.zeros((num_classes, *buffer_size), dtype=compute_dtype, device=device)
                for s, o in zip(batch_slices, out):
                    if s[dim].stop - lo > capacity:
                        # windows run in order of their start: nothing left reaches the voxels before this one
                        flush(s[dim].start)
                    local = list(s)
                    local[dim] = slice(s[dim].start - lo, s[dim].stop - lo)
                    scores[(slice(None), *local)] += o
                    hi = max(hi, s[dim].stop)
            flush(image_size[dim])

        assert labels is not None
        if meta is not None:
            return convert_to_dst_type(labels, meta, dtype=labels.dtype, device=device)[0]
        return labels
