"""``StackedDeepSupervisionLoss``: the weighted sum over a stacked deep-supervision output, a plain prediction
unchanged (the 3D bundle trains with it: ``tests/test_bundle3d.py``)."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss

from monai_resunet.losses import StackedDeepSupervisionLoss


def test_stack_is_split_and_weighted_plain_prediction_unchanged():
    inner = DiceCELoss(to_onehot_y=True, softmax=True)
    loss = StackedDeepSupervisionLoss(inner)
    torch.manual_seed(0)
    target = torch.randint(0, 3, (2, 1, 8, 8, 8))
    stacked = torch.randn(2, 3, 3, 8, 8, 8)  # main output + 2 heads
    expected = inner(stacked[:, 0], target) + 0.5 * inner(stacked[:, 1], target) + 0.25 * inner(stacked[:, 2], target)
    torch.testing.assert_close(loss(stacked, target), expected)
    torch.testing.assert_close(loss(stacked[:, 0], target), inner(stacked[:, 0], target))
    same = StackedDeepSupervisionLoss(inner, weight_mode="same")
    torch.testing.assert_close(same(stacked, target), sum(inner(stacked[:, i], target) for i in range(3)))
