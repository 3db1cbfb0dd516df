"""Intensity normalisation chosen from the modality named in ``dataset.json``: CT gets a Hounsfield window scaled to
[0, 1], MR (and anything else) a z-score over the non-zero voxels, the two recipes nnU-Net and the MONAI model zoo
use. One transform so a bundle config names the modality instead of carrying two branches."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, NormalizeIntensityd, ScaleIntensityRanged

__all__ = ["NormalizeByModalityd", "foreground_select_fn"]


class NormalizeByModalityd(MapTransform):
    """Normalise image intensities by modality.

    - ``"CT"``: clip to ``ct_window`` (Hounsfield units) and map it linearly onto ``ct_target_range`` (default
      [0, 1]; a plan's z-scored range makes this nnU-Net's clip + foreground z-score) with ``ScaleIntensityRanged``.
    - ``"MR"`` and any other modality: z-score over the non-zero voxels, channel-wise (``NormalizeIntensityd``);
      zero background stays zero, so intensity-free padding remains background.

    Args:
        keys: image keys to normalise.
        modality: modality name, case-insensitive (``dataset.json``'s ``modality["0"]``).
        ct_window: (min, max) Hounsfield window for CT.
        ct_target_range: what the window's ends map to; ``((lo - mean) / std, (hi - mean) / std)`` z-scores.
        allow_missing_keys: don't raise when a key is absent.

    Example::

        norm = NormalizeByModalityd("image", modality="CT", ct_window=(-175, 250))
    """

    def __init__(
        self,
        keys: KeysCollection,
        modality: str = "MR",
        ct_window: Sequence[float] = (-175.0, 250.0),
        allow_missing_keys: bool = False,
        ct_target_range: Sequence[float] = (0.0, 1.0),
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.modality = str(modality).upper()
        if self.modality == "CT":
            low, high = ct_window
            b_min, b_max = (float(v) for v in ct_target_range)
            self.delegate: MapTransform = ScaleIntensityRanged(
                keys, a_min=low, a_max=high, b_min=b_min, b_max=b_max, clip=True, allow_missing_keys=allow_missing_keys
            )
        else:
            self.delegate = NormalizeIntensityd(
                keys, nonzero=True, channel_wise=True, allow_missing_keys=allow_missing_keys
            )

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        return self.delegate(data)


def _all_if_empty(mask: torch.Tensor) -> torch.Tensor:
    # MONAI's bounding box of an empty mask is empty (a crop to nothing); with nothing selected, keep everything
    return mask if mask.any() else torch.ones_like(mask)


def _above_zero(x: torch.Tensor) -> torch.Tensor:
    return _all_if_empty(x > 0)


def _ct_body(x: torch.Tensor) -> torch.Tensor:
    return _all_if_empty(x > -500)  # air is about -1000 HU; anything denser belongs to the patient or the table


def foreground_select_fn(modality: str):
    """The ``CropForegroundd`` ``select_fn`` for a modality's raw intensities (module-level, so it pickles into
    DataLoader workers). An image with no voxel above the threshold (blank, or a CT given to an MR model) counts as
    all foreground, so the crop keeps the whole image instead of cropping it to an empty box.

    Example::

        CropForegroundd(["image", "label"], source_key="image", select_fn=foreground_select_fn("CT"))
    """
    return _ct_body if str(modality).upper() == "CT" else _above_zero
