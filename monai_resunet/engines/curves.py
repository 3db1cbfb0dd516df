"""Training curves: per-epoch mean loss of the trainer and the validation metrics of its evaluator, kept in a
JSON history beside the outputs and drawn as a PNG (loss and Dice against epoch) when training ends.

The history survives a resume: entries of epochs already done are reloaded, so the figure of a resumed run
shows the whole run.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from monai_resunet.atomic_files import atomic_target, atomic_write_bytes
from monai_resunet.engines.class_metrics import per_class_values

__all__ = ["TrainingCurves"]

logger = logging.getLogger("monai_resunet")


class TrainingCurves:
    """Record loss and validation metrics per epoch; write ``history.json`` every epoch and ``curves.png`` at the end.

    Args:
        output_dir: where ``history.json`` and ``curves.png`` go.
        evaluator: the validation engine whose ``state.metrics`` are recorded after each epoch (``None``: loss only).
        class_names: names of the classes; a per-class metric tensor (``MeanDice(reduction="mean_batch")``) is
            recorded as one entry per class, named after the last ``len(tensor)`` of these (background excluded).
        is_rank0: only rank 0 writes (DDP).
        filename: name of the PNG.

    Example::

        TrainingCurves("eval", evaluator=validator).attach(trainer)
    """

    def __init__(
        self,
        output_dir: str,
        evaluator: Engine | None = None,
        class_names: list[str] | None = None,
        is_rank0: bool = True,
        filename: str = "curves.png",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.evaluator = evaluator
        self.class_names = list(class_names) if class_names else []
        self.is_rank0 = is_rank0
        self.filename = filename
        self.history: list[dict] = []
        self._losses: list[float] = []
        self._pending_resume = False

    def attach(self, engine: Engine) -> None:
        # the history of a resumed run is read at its first epoch, after ResumableCheckpoint restored the epoch
        # (on STARTED); this handler comes before the checkpoint in the list, so an epoch's entry is written before
        # the checkpoint that counts it as done, and a kill between the two loses nothing
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._resumed)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        # after ValidationHandler (attached earlier in the handler list) has run the evaluator for this epoch
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    @property
    def history_path(self) -> Path:
        return self.output_dir / "history.json"

    def _started(self, engine: Engine) -> None:
        self.history, self._pending_resume = [], True

    def _resumed(self, engine: Engine) -> None:
        if not self._pending_resume:
            return
        self._pending_resume = False
        if engine.state.epoch > 1 and self.history_path.is_file():  # resumed: keep the epochs already done
            old = json.loads(self.history_path.read_text())
            self.history = [h for h in old if h["epoch"] < engine.state.epoch]

    def _iteration(self, engine: Engine) -> None:
        output = engine.state.output
        items = output if isinstance(output, list) else [output]
        for item in items:
            loss = item.get("loss") if isinstance(item, dict) else None
            if isinstance(loss, (torch.Tensor, float, int)):  # decollated outputs hold the loss as a float
                self._losses.append(float(loss))
                break

    def _epoch(self, engine: Engine) -> None:
        entry: dict = {"epoch": engine.state.epoch}
        if self._losses:
            entry["loss"] = sum(self._losses) / len(self._losses)
        self._losses = []
        if self.evaluator is not None and self.evaluator.state.epoch_length:
            for name, value in self.evaluator.state.metrics.items():
                entry.update(self._flatten(name, value))
        self.history = [h for h in self.history if h["epoch"] != entry["epoch"]] + [entry]
        if self.is_rank0:
            atomic_write_bytes(self.history_path, json.dumps(self.history, indent=1).encode())

    def _flatten(self, name: str, value) -> dict[str, float]:
        if isinstance(value, torch.Tensor) and value.numel() > 1:  # not split by PerClassMetrics
            return {k: v for k, v in per_class_values(name, value, self.class_names).items() if math.isfinite(v)}
        if isinstance(value, torch.Tensor):
            value = value.item()
        return {name: float(value)} if isinstance(value, (int, float)) and math.isfinite(value) else {}

    def _completed(self, engine: Engine) -> None:
        if self.is_rank0 and self.history:
            self.plot(self.output_dir / self.filename)

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        epochs = [h["epoch"] for h in self.history]
        metric_names = sorted({k for h in self.history for k in h if k not in ("epoch", "loss")})
        fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
        ax_loss.plot(epochs, [h.get("loss", float("nan")) for h in self.history], marker=".")
        ax_loss.set(xlabel="epoch", ylabel="training loss", title="Loss")
        for name in metric_names:
            ax_metric.plot(epochs, [h.get(name, float("nan")) for h in self.history], marker=".", label=name)
        ax_metric.set(xlabel="epoch", ylabel="metric", title="Validation", ylim=(0, 1))
        if metric_names:
            ax_metric.legend(loc="lower right", fontsize="small")
        fig.tight_layout()
        try:
            with atomic_target(path) as tmp:
                fig.savefig(tmp, dpi=100)
        finally:
            plt.close(fig)
        logger.info("training curves written to %s", path)
