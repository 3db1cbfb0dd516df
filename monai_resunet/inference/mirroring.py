"""Test-time mirroring (nnU-Net's default test-time augmentation) around any MONAI inferer.

Every window is also predicted flipped along each combination of the chosen axes; the logits are flipped back
and averaged (as nnU-Net averages them) before the inferer blends windows, so the result is still one logit map,
and label or score paths after it are unchanged. Off in the bundles (``mirror_axes: []``): a small gain for
extra inference time, measured in the 3D bundle's ``docs/experiments.md``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import Inferer

__all__ = ["MirrorInferer", "mirrored_prediction"]


def mirrored_prediction(
    network: Callable[..., torch.Tensor], window: torch.Tensor, axes: Sequence[int]
) -> torch.Tensor:
    """The mean of ``network``'s output over every combination of flips of ``window`` along the spatial ``axes``
    (0 = the first spatial axis of the window), each output flipped back; ``2 ** len(axes)`` network calls."""
    dims = sorted({int(a) + 2 for a in axes})
    subsets = [s for r in range(len(dims) + 1) for s in itertools.combinations(dims, r)]
    total = network(window)
    for dims_ in subsets[1:]:
        total = total + torch.flip(network(torch.flip(window, dims_)), dims_)
    return total / len(subsets)


class MirrorInferer(Inferer):
    """Run ``inferer`` with every window the network sees also predicted mirrored along ``spatial_axes``, the
    logits averaged (``mirrored_prediction``). The network and its weights are untouched.

    Args:
        inferer: the inferer to wrap (``SlabArgmaxInferer``, ``SlidingWindowInferer``, ``SliceInferer``...).
        spatial_axes: axes of the *window* to mirror along (0 = its first spatial axis; for ``SliceInferer`` the
            window is the 2D slice). Empty: no mirroring.

    Example::

        inferer = MirrorInferer(SlabArgmaxInferer(roi_size=(96, 96, 96)), spatial_axes=(0,))  # left-right
        labels = inferer(image[None], network)
    """

    def __init__(self, inferer: Inferer, spatial_axes: Sequence[int] = (0,)) -> None:
        super().__init__()
        if any(int(a) < 0 for a in spatial_axes):
            raise ValueError(f"spatial_axes are window axes counted from 0, got {list(spatial_axes)}")
        self.inferer = inferer
        self.spatial_axes = tuple(int(a) for a in spatial_axes)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        if not self.spatial_axes:
            return self.inferer(inputs, network, *args, **kwargs)

        def mirrored(window: torch.Tensor, *net_args: Any, **net_kwargs: Any) -> torch.Tensor:
            return mirrored_prediction(lambda x: network(x, *net_args, **net_kwargs), window, self.spatial_axes)

        return self.inferer(inputs, mirrored, *args, **kwargs)
