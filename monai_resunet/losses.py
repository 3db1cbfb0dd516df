"""Losses the bundles train with, on top of MONAI's."""

from __future__ import annotations

import torch
from monai.losses import DeepSupervisionLoss

__all__ = ["StackedDeepSupervisionLoss"]


class StackedDeepSupervisionLoss(DeepSupervisionLoss):
    """MONAI's :class:`~monai.losses.DeepSupervisionLoss` for networks that stack their deep-supervision outputs on
    dim 1 (``ResUNet(deep_supervision=True)`` and MONAI's ``DynUNet`` in training mode: ``(B, 1 + heads, C, ...)``,
    the full-resolution output first); any other prediction goes to ``loss`` unchanged.

    One loss entry therefore serves a bundle whether ``network_def#deep_supervision`` is on or off, and evaluation
    (the network in eval mode returns the main output only) needs no second loss. The stack is recognised by its
    rank: one dimension more than ``target``.

    Args:
        loss: the loss of each output, e.g. ``DiceCELoss(to_onehot_y=True, softmax=True)``.
        weight_mode: ``DeepSupervisionLoss``'s weights: ``"exp"`` (1, 0.5, 0.25, ...), ``"same"`` or ``"two"``.
        weights: explicit weights per output, finest first (override ``weight_mode``).

    Example::

        loss = StackedDeepSupervisionLoss(DiceCELoss(to_onehot_y=True, softmax=True))
        net = ResUNet(3, 1, 3, features=(8, 16, 32, 64), deep_supervision=True, deep_supr_num=2).train()
        value = loss(net(image), label)  # 1 × main + 0.5 × first head + 0.25 × second head
    """

    def forward(self, input: None | torch.Tensor | list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(input, torch.Tensor) and input.dim() == target.dim() + 1:
            input = list(torch.unbind(input, dim=1))
        return super().forward(input, target)
