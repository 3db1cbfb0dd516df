"""Per-class metric values as scalars: a ``MeanDice(reduction="mean_batch")`` metric lands in
``engine.state.metrics`` as one tensor, which MLflow (``--tracking mlflow``) and TensorBoard cannot log and
``StatsHandler`` prints as a tensor repr. This handler replaces it by one scalar per class, named after the
class, right after the metrics are computed."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ignite.engine import Engine, Events

__all__ = ["PerClassMetrics", "per_class_values"]


def per_class_values(name: str, value: torch.Tensor, class_names: Sequence[str]) -> dict[str, float]:
    """``{"<name>/<class name>": value}`` for a per-class metric tensor: ``n`` values are named after the last
    ``n`` class names (metrics computed without background), or numbered when there are more values than names."""
    values = value.flatten().tolist()
    names = list(class_names)[-len(values) :] if len(class_names) >= len(values) else range(len(values))
    return {f"{name}/{class_name}": float(v) for class_name, v in zip(names, values)}


class PerClassMetrics:
    """Split tensor-valued metrics of an evaluator into ``"<metric>/<class name>"`` scalars.

    Attach it to the evaluator *before* logging handlers (first in the bundle's ``validate#handlers``); it runs
    on ``EPOCH_COMPLETED`` after the metrics themselves.

    Args:
        class_names: class names by label value, background first; a tensor of ``n`` values is named after the
            last ``n`` names (metrics computed without background).
        metric_names: which metrics to split; ``None``: every tensor with more than one value.

    Example::

        PerClassMetrics(["background", "liver", "tumour"]).attach(evaluator)
        # state.metrics["val_class_dice"] = tensor([0.9, 0.7]) → "val_class_dice/liver": 0.9, ".../tumour": 0.7
    """

    def __init__(self, class_names: list[str], metric_names: list[str] | None = None) -> None:
        self.class_names = list(class_names)
        self.metric_names = metric_names

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        metrics = engine.state.metrics
        for name in list(metrics):
            value = metrics[name]
            if self.metric_names is not None and name not in self.metric_names:
                continue
            if not isinstance(value, torch.Tensor) or value.numel() <= 1:
                continue
            del metrics[name]
            metrics.update(per_class_values(name, value, self.class_names))
