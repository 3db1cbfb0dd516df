"""2D-from-3D pieces for the slice-wise bundle: neighbouring slices as extra input channels ("2.5D") and the
class-balanced sampling of single slices from whole volumes."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, SqueezeDimd, Transform

from monai_resunet.transforms.sampling import class_balanced_crop

__all__ = ["AddNeighbourSlicesd", "slice_sampling"]


class AddNeighbourSlicesd(MapTransform):
    """Stack each slice's neighbours along ``slice_axis`` as extra channels: a ``(1, X, Y, Z)`` volume becomes
    ``(2k + 1, X, Y, Z)`` where channel ``j`` holds the volume shifted by ``j - k`` slices (edges repeat). Slicing
    the result anywhere along ``slice_axis`` then gives a 2D input with its ``k`` neighbours on each side, for
    training patches and for ``SliceInferer`` alike. ``num_neighbours=0`` leaves the data unchanged.

    The channel stacking is not spatial, so ``Invertd`` of a prediction is unaffected by it.

    Args:
        keys: image keys.
        slice_axis: spatial axis the slices are taken along (0, 1 or 2; 2 is axial in RAS).
        num_neighbours: ``k``, slices taken on each side.
        allow_missing_keys: don't raise when a key is absent.

    Example::

        AddNeighbourSlicesd("image", slice_axis=2, num_neighbours=1)  # (1, 64, 64, 40) → (3, 64, 64, 40)
    """

    def __init__(
        self, keys: KeysCollection, slice_axis: int = 2, num_neighbours: int = 0, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis}.")
        if num_neighbours < 0:
            raise ValueError(f"num_neighbours must be ≥ 0, got {num_neighbours}.")
        self.slice_axis = slice_axis
        self.num_neighbours = num_neighbours

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if self.num_neighbours == 0:
            return d
        for key in self.key_iterator(d):
            img = d[key]
            if img.shape[0] != 1:
                raise ValueError(f"AddNeighbourSlicesd expects a single-channel image for '{key}', got {img.shape}.")
            dim = self.slice_axis + 1
            n = img.shape[dim]
            index = torch.arange(n, device=img.device)
            channels = [
                torch.index_select(img, dim, (index + shift).clamp(0, n - 1))
                for shift in range(-self.num_neighbours, self.num_neighbours + 1)
            ]
            d[key] = torch.cat(channels, dim=0)  # MetaTensor meta (affine, applied operations) is kept
        return d


def slice_sampling(
    keys: Sequence[str] = ("image", "label"),
    label_key: str = "label",
    patch_size: Sequence[int] = (256, 256),
    slice_axis: int = 2,
    num_classes: int = 2,
    num_samples: int = 8,
) -> list[Transform]:
    """Sample ``num_samples`` 2D patches per volume, centred on each class with equal probability, as single
    slices along ``slice_axis``: a ``(C, X, Y, Z)`` volume gives ``(C, *patch_size)`` patches.

    Example::

        sampler = Compose(slice_sampling(patch_size=(128, 128), slice_axis=2, num_classes=3))
    """
    if len(patch_size) != 2:
        raise ValueError(f"patch_size of a slice must have 2 values, got {patch_size}.")
    size = list(patch_size)
    size.insert(slice_axis, 1)
    return [
        *class_balanced_crop(keys, label_key, size, num_classes, num_samples),
        SqueezeDimd(list(keys), dim=slice_axis + 1),
    ]
