"""The one training loop of the benchmarks (``colin27`` trains for a time budget, ``speed`` times iterations).

A plain loop rather than the bundle's ``SupervisedTrainer``: the benchmarks time the data wait and the step
separately and pause the clock for held-out evaluation between steps, and their published numbers were measured so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Step", "endless", "train_steps"]


@dataclass
class Step:
    """One optimisation step: its number (from 1), loss, seconds waiting for the batch and computing, and patches."""

    iteration: int
    loss: float
    wait_s: float
    compute_s: float
    patches: int

    @property
    def seconds(self) -> float:
        """The step's time on the training clock: data wait plus forward, backward and optimizer step."""
        return self.wait_s + self.compute_s


def endless(loader: Iterable[Any]) -> Iterator[Any]:
    """The loader's batches, epoch after epoch (a time budget does not end at an epoch boundary)."""
    while True:
        yield from loader


def train_steps(
    network: Any,
    loss_fn: Callable[[Any, Any], Any],
    optimizer: Any,
    loader: Iterable[Any],
    clock: Callable[[], float] = time.perf_counter,
    as_tensor: bool = False,
) -> Iterator[Step]:
    """Train ``network`` on ``loader``'s ``image``/``label`` batches, one :class:`Step` per iteration, without end.

    The caller stops it (``itertools.islice``, or ``break`` when a budget is spent) and may do untimed work between
    steps (evaluation, a learning-rate change): only the code between ``next(loader)`` and ``optimizer.step()`` runs
    on ``clock``. ``as_tensor`` drops the MetaTensor wrappers before the forward pass.

    Example: ``for step in itertools.islice(train_steps(net, loss, opt, loader), 10): print(step.loss)``.
    """
    network.train()
    batches = endless(loader)
    iteration = 0
    while True:
        t0 = clock()
        batch = next(batches)
        images, labels = batch["image"], batch["label"]
        if as_tensor:
            images, labels = images.as_tensor(), labels.as_tensor()
        t1 = clock()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(network(images), labels)
        loss.backward()
        optimizer.step()
        t2 = clock()
        iteration += 1
        yield Step(iteration, float(loss.detach()), t1 - t0, t2 - t1, int(images.shape[0]))
