"""Class-balanced patch sampling whose per-volume work is done once, before the cache."""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import ClassesToIndicesd, Compose, RandCropByLabelClassesd, Transform

__all__ = ["DEFAULT_MAX_CENTRES_PER_CLASS", "FusedResampling", "class_balanced_crop"]

# nnU-Net keeps 10,000 candidate centres per class and case ("class_locations"): far more than the patches a
# class gets per epoch, at 8 bytes each instead of 8 bytes per voxel
DEFAULT_MAX_CENTRES_PER_CLASS = 10_000
INDICES_POSTFIX = "_cls_indices"  # ClassesToIndicesd's output key is label_key + this; the crop reads it there


def class_balanced_crop(
    keys: Sequence[str],
    label_key: str,
    spatial_size: Sequence[int],
    num_classes: int,
    num_samples: int,
    max_centres_per_class: int | None = DEFAULT_MAX_CENTRES_PER_CLASS,
    image_key: str | None = None,
    image_threshold: float = 0.0,
) -> list[Transform]:
    """``RandCropByLabelClassesd`` (every class, background included, equally likely as a patch centre) preceded by
    ``ClassesToIndicesd``, which finds each class's voxels once per volume.

    Without the indices, ``RandCropByLabelClassesd`` scans the whole label for every class on every call
    (several times slower per patch; measured in the 3D bundle's ``docs/experiments.md``). With them first and
    deterministic, ``CacheDataset`` (which caches up to the first random transform) stores them with the volume,
    so an iteration only draws centres. ``max_centres_per_class`` keeps that many evenly spaced (raster order)
    candidates of each class (``None``: all voxels).

    Centres are *not* restricted to an intensity range unless ``image_key`` is given: MONAI's examples restrict
    them to ``image > 0``, which after an MR z-score leaves out every voxel darker than the mean, most of some
    grey-matter structures (see the 3D bundle's ``docs/experiments.md``).

    Args:
        keys: keys to crop (image and label).
        label_key: the label map (one channel, values ``0 … num_classes - 1``).
        spatial_size: patch size (a 1 on the slice axis for 2D slices).
        num_classes: classes in the label, background included.
        num_samples: patches per volume per call.
        max_centres_per_class: candidate centres kept per class and volume.
        image_key: restrict centres to ``image > image_threshold`` of this image (``None``: no restriction).
        image_threshold: see ``image_key``.

    Example::

        sample = Compose(class_balanced_crop(["image", "label"], "label", (64, 64, 64), num_classes=3, num_samples=2))
    """
    return [
        ClassesToIndicesd(
            label_key, indices_postfix=INDICES_POSTFIX, num_classes=num_classes, image_key=image_key,
            image_threshold=image_threshold, max_samples_per_class=max_centres_per_class,
        ),
        # the crop pops indices_key, so the indices never reach a batch
        RandCropByLabelClassesd(
            list(keys), label_key=label_key, spatial_size=list(spatial_size), num_classes=num_classes,
            num_samples=num_samples, indices_key=label_key + INDICES_POSTFIX, warn=False,
        ),
    ]  # fmt: skip


class FusedResampling(Compose):
    """A ``Compose`` that always runs its transforms with MONAI's lazy resampling, whatever the enclosing ``Compose``
    asks for (an eager one passes ``lazy=False`` down, which would turn a plain nested ``Compose(lazy=True)`` eager).

    A patch crop followed by a rotation/scaling then becomes a single resampling of the whole cached volume: where
    the rotated or zoomed-out patch reaches past the crop it shows the image around it, not zero padding, as nnU-Net
    samples its augmented patches from the whole case; an unrotated patch stays a plain crop (MONAI's
    integer-translation fast path), and the patch is interpolated once instead of once per transform.
    It costs more than cropping first: MONAI's lazy resampling converts and samples the whole volume (timings:
    the 3D bundle's ``docs/experiments.md``).

    Example::

        spatial = FusedResampling([RandSpatialCropd(keys, (64, 64, 64)), RandAffined(keys, prob=0.3, rotate_range=0.5)])
    """

    def __call__(self, input_, start=0, end=None, threading=False, lazy: bool | None = None):
        return super().__call__(input_, start=start, end=end, threading=threading, lazy=True)
