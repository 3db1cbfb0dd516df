"""Which axes may be mirrored in training, measured on the training labels: an axis is left out where a class's
mirror image lands on *other* classes, i.e. where the classes are told apart by their side along that axis."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["mirror_overlaps", "decide_mirror_axes", "CONFUSION_THRESHOLD"]

# classes whose mirrored voxels fall on other classes more often than on themselves, and on at least this fraction
# of them (mean over classes), are told apart by their side along that axis
CONFUSION_THRESHOLD = 0.1


def mirror_overlaps(labels: Iterable[np.ndarray], num_classes: int) -> list[dict[str, list[int]]]:
    """Per axis, per foreground class: how many of the class's voxels, in the label map mirrored along that axis,
    carry the class itself (``self``) or another foreground class (``other``), summed over ``labels``.

    Each label map must already be cropped to the body's bounding box, so ``np.flip`` mirrors it about the body's
    own midline (the centre of that box), not about the centre of the scan's field of view.

    Args:
        labels: label maps (integer arrays, all with the same number of dimensions), background 0.
        num_classes: classes including the background.

    Example::

        counts = mirror_overlaps([label], num_classes=3)  # counts[0]["other"][1]: class 1 onto others, axis 0
    """
    counts: list[dict[str, list[int]]] | None = None
    for label in labels:
        label = np.asarray(label)
        if counts is None:
            counts = [{k: [0] * num_classes for k in ("voxels", "self", "other")} for _ in range(label.ndim)]
        for axis in range(label.ndim):
            mirrored = np.flip(label, axis)
            for c in range(1, num_classes):
                inside = label == c
                n = int(inside.sum())
                if not n:
                    continue
                landed = mirrored[inside]
                counts[axis]["voxels"][c] += n
                counts[axis]["self"][c] += int((landed == c).sum())
                counts[axis]["other"][c] += int(((landed != c) & (landed > 0)).sum())
    return counts or []


def decide_mirror_axes(
    counts: Sequence[dict[str, list[int]]],
    class_names: Sequence[str],
    threshold: float = CONFUSION_THRESHOLD,
) -> tuple[list[int], dict[str, str]]:
    """The axes to mirror and, per axis, the reason, from :func:`mirror_overlaps`'s counts.

    An axis is not mirrored when, averaged over the classes (each class counts once, whatever its size), the
    mirrored voxels of a class land on other classes more often than on itself, and on at least ``threshold`` of
    them: the classes are then told apart by their side along the axis, and a flipped patch would teach the
    network that a class may sit on the other side. One small class alone does not decide it.

    Example::

        axes, why = decide_mirror_axes(counts, ["background", "left_thing", "right_thing"])
    """
    axes: list[int] = []
    reasons: dict[str, str] = {}
    for axis, c in enumerate(counts):
        rows = []
        for k in range(1, len(c["voxels"])):
            n = c["voxels"][k]
            if n:
                rows.append((c["other"][k] / n, c["self"][k] / n, str(class_names[k]) if k < len(class_names) else k))
        if not rows:
            axes.append(axis)
            reasons[str(axis)] = "mirrored: no labelled voxels to tell sides apart"
            continue
        other = float(np.mean([r[0] for r in rows]))
        own = float(np.mean([r[1] for r in rows]))
        worst = max(rows, key=lambda r: r[0] - r[1])
        measured = (
            f"mirrored about the body's midline, a class's voxels land on average {other:.0%} on other classes and "
            f"{own:.0%} on itself (most: {worst[2]}, {worst[0]:.0%} vs {worst[1]:.0%})"
        )
        if other > own and other >= threshold:
            reasons[str(axis)] = f"not mirrored: {measured}, so the classes are told apart by their side along it"
        else:
            axes.append(axis)
            reasons[str(axis)] = f"mirrored: {measured}; not mostly on others (threshold {threshold:.0%})"
    return axes, reasons
