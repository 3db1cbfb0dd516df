"""Resumable training: ignite handlers that keep the training state and the best model on disk.

- :class:`ResumableCheckpoint` writes the full training state at the end of every epoch and, when asked,
  restores it before the first epoch, so a run killed at any moment (``kill -9`` included) loses at most the
  epoch in progress.
- :class:`BestModelCheckpoint` writes the best model (and the model properties inference needs) whenever the key
  metric improves, and keeps its best score across a resume.

MONAI's ``CheckpointSaver`` writes in place (``atomic=False``), so a kill during a save can leave a truncated
file; these handlers write to a temporary file in the same folder and rename it over the old one. Loading uses
``torch.load(weights_only=True)``: a checkpoint that carries pickled code is refused, not run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint

from monai_resunet.atomic_files import atomic_target
from monai_resunet.config_flags import as_bool
from monai_resunet.model_properties import (
    PROPERTIES_FILE,
    WEIGHTS_HASH_KEY,
    WeightsMismatchError,
    check_weights_pair,
    file_sha256,
    write_model_properties,
)

__all__ = ["BestModelCheckpoint", "ResumableCheckpoint", "atomic_torch_save", "require_checkpoint"]

logger = logging.getLogger("monai_resunet")


def atomic_torch_save(obj, path: str | os.PathLike) -> str:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename: readers never see half a file.
    Returns the SHA-256 of the file written (what :func:`monai_resunet.model_properties.check_weights_pair`
    compares)."""
    with atomic_target(path) as tmp:
        torch.save(obj, tmp)
        digest = file_sha256(tmp)
    return digest


class ResumableCheckpoint:
    """Save ``save_dict`` (network, optimizer, scheduler, trainer, ...) to ``save_dir/filename`` after every epoch,
    atomically; with ``resume`` true, restore it when the trainer starts.

    The trainer's ``max_epochs`` is the configured one, not the checkpoint's, so ``--resume true --epochs 20``
    extends a finished 10-epoch run to 20 epochs, and resuming an interrupted run ends at the same epoch count
    as an uninterrupted one. When ``resume`` is true but no checkpoint exists yet, training starts from scratch
    and says so.

    Args:
        save_dir: folder of the checkpoint (the bundle's ``models/``).
        save_dict: objects with ``state_dict``/``load_state_dict``, e.g. ``{"network": net, "optimizer": opt}``.
            The engine the handler is attached to is added as ``engine_key`` (a config cannot name the trainer
            inside the trainer's own handler list without a circular reference).
        resume: restore from the checkpoint at start (bool, or a string such as ``"true"`` from the CLI).
        filename: checkpoint file name.
        map_location: ``torch.load`` map location.
        is_rank0: only rank 0 writes (DDP); every rank loads.
        engine_key: key of the attached engine's own state (epoch, iteration) in the checkpoint.
        optional_keys: keys of ``save_dict`` a checkpoint may lack (it was written before they were added);
            those objects keep their fresh state on resume, and the log says so.

    Example::

        ResumableCheckpoint("models", {"network": net, "optimizer": opt}, resume=True).attach(trainer)
    """

    def __init__(
        self,
        save_dir: str,
        save_dict: dict,
        resume: bool | str = False,
        filename: str = "last_state.pt",
        map_location: str | torch.device | None = "cpu",
        is_rank0: bool = True,
        engine_key: str = "trainer",
        optional_keys: Sequence[str] = (),
    ) -> None:
        self.path = Path(save_dir) / filename
        self.optional_keys = tuple(optional_keys)
        self.save_dict = dict(save_dict)
        self.engine_key = engine_key
        self.resume = as_bool(resume)
        self.map_location = map_location
        self.is_rank0 = is_rank0

    def attach(self, engine: Engine) -> None:
        self.save_dict[self.engine_key] = engine
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def load(self, engine: Engine) -> None:
        if not self.resume:
            return
        if not self.path.is_file():
            if self.is_rank0:
                logger.info("resume requested but %s does not exist yet: training from scratch.", self.path)
            return
        try:
            checkpoint = torch.load(self.path, map_location=self.map_location, weights_only=True)
        except Exception as e:  # a truncated or foreign file: name it instead of a pickle traceback
            raise RuntimeError(f"{self.path}: cannot load the last-state checkpoint ({e}).") from None
        missing = [k for k in self.save_dict if k not in checkpoint]
        if [k for k in missing if k not in self.optional_keys]:
            raise RuntimeError(f"{self.path}: checkpoint lacks {missing}; it was not written by this bundle.")
        if missing and self.is_rank0:
            logger.info("%s has no %s (an older checkpoint): those start afresh.", self.path, missing)
        max_epochs = engine.state.max_epochs
        to_load = {k: v for k, v in self.save_dict.items() if k not in missing}
        Checkpoint.load_objects(to_load=to_load, checkpoint=checkpoint)
        engine.state.max_epochs = max_epochs
        if self.is_rank0:  # every rank loads; one line in the log
            logger.info(
                "resumed from %s: epoch %d done, continuing at epoch %d of %s.",
                self.path, engine.state.epoch, engine.state.epoch + 1, max_epochs,
            )  # fmt: skip

    def save(self, engine: Engine) -> None:
        if not self.is_rank0:
            return
        state = {}
        for key, obj in self.save_dict.items():
            if isinstance(obj, torch.nn.parallel.DistributedDataParallel):
                obj = obj.module
            state[key] = obj.state_dict()
        atomic_torch_save(state, self.path)


class BestModelCheckpoint:
    """Save the network's weights to ``save_dir/filename`` (a plain ``state_dict``, as MONAI's ``CheckpointSaver``
    with ``save_key_metric`` writes it) whenever the evaluator it is attached to reaches a new best key metric,
    atomically, together with the model properties that inference needs to use those weights.

    It replaces ``CheckpointSaver(save_key_metric=True, key_metric_filename="model.pt")`` for two reasons:

    - ``CheckpointSaver`` deletes the previous best file, then writes the new one in place: a kill in between
      leaves no best model, or half of one. Here the new file replaces the old one in a single rename.
    - Its record of the best score lives only in memory, so after a resume the first validation overwrote the best
      model whatever its score. This handler has ``state_dict``/``load_state_dict`` (the evaluator's
      ``best_metric`` and ``best_metric_epoch``): put it in :class:`ResumableCheckpoint`'s ``save_dict`` and a
      resumed run keeps the best model until it is beaten.

    The new-best test is MONAI's own: the evaluator's ``best_metric_epoch`` equals the epoch just validated (the
    workflow updates it with its ``metric_cmp_fn`` before handlers run). ``properties`` go to
    ``model_properties.json`` beside the weights right after them (writing them when training starts, as before,
    paired a new data set's classes with the previous run's weights until the first validation), with the SHA-256
    of the weights file they belong to (``weights_sha256``): two files cannot be replaced in one atomic step, so
    a kill between the two renames leaves new weights beside old properties, and readers
    (:func:`monai_resunet.read_model_properties`) refuse such a pair instead of using it. ``model.pt`` stays a
    plain ``state_dict`` (MONAI's ``CheckpointLoader`` and the Model Zoo tools load it unchanged). A resumed run
    repairs an interrupted pair: it rewrites the properties for the ``model.pt`` on disk, which this run wrote.

    Args:
        save_dir: folder of the weights (the bundle's ``models/``).
        network: the network (a ``DistributedDataParallel`` wrapper is unwrapped).
        filename: weights file name.
        properties: keyword arguments of :func:`monai_resunet.write_model_properties`, or ``None`` for none.
        is_rank0: only rank 0 writes (DDP; the key metric is already reduced over ranks).

    Example::

        best = BestModelCheckpoint("models", net, properties={"class_names": ["background", "liver"]})
        best.attach(evaluator)
        ResumableCheckpoint("models", {"network": net, "best_model": best}, resume=True).attach(trainer)
    """

    def __init__(
        self,
        save_dir: str,
        network: torch.nn.Module,
        filename: str = "model.pt",
        properties: dict | None = None,
        is_rank0: bool = True,
    ) -> None:
        self.save_dir = Path(save_dir)
        self.path = self.save_dir / filename
        self.network = network
        self.properties = properties
        self.is_rank0 = is_rank0
        self.engine: Engine | None = None

    def attach(self, engine: Engine) -> None:
        self.engine = engine
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.best_metric_epoch != engine.state.epoch or not self.is_rank0:
            return
        network = self.network
        if isinstance(network, torch.nn.parallel.DistributedDataParallel):
            network = network.module
        digest = atomic_torch_save(network.state_dict(), self.path)
        if self.properties is not None:  # second rename: until it lands, readers see a hash mismatch and wait
            write_model_properties(self.save_dir, **self.properties, **{WEIGHTS_HASH_KEY: digest})
        logger.info(
            "new best %s %.4f at epoch %d: saved %s", engine.state.key_metric_name, engine.state.best_metric,
            engine.state.epoch, self.path,
        )  # fmt: skip

    def state_dict(self) -> dict:
        if self.engine is None:
            raise RuntimeError("BestModelCheckpoint: attach it to the evaluator before saving its state.")
        return {
            "best_metric": float(self.engine.state.best_metric),
            "best_metric_epoch": self.engine.state.best_metric_epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        if self.engine is None:
            raise RuntimeError("BestModelCheckpoint: attach it to the evaluator before resuming.")
        self.engine.state.best_metric = float(state["best_metric"])
        self.engine.state.best_metric_epoch = int(state["best_metric_epoch"])
        self.repair_pair()

    def repair_pair(self) -> bool:
        """After a kill between the two renames, rewrite the properties for the weights on disk (this run's own
        best model: the weights are renamed first). Returns whether it rewrote them."""
        if not self.is_rank0 or self.properties is None or not self.path.is_file():
            return False
        try:
            check_weights_pair(self.save_dir, self.path.name, retries=0)
            return False
        except WeightsMismatchError:
            pass
        write_model_properties(self.save_dir, **self.properties, **{WEIGHTS_HASH_KEY: file_sha256(self.path)})
        logger.warning(
            "%s did not match %s (a run killed between writing the two): properties rewritten for the weights.",
            self.path, self.save_dir / PROPERTIES_FILE,
        )  # fmt: skip
        return True


def require_checkpoint(path: str | os.PathLike) -> str:
    """``path`` if it is a file; otherwise a clear error saying how to get trained weights (used by the bundles'
    inference configs before ``CheckpointLoader`` would fail inside ``torch.load``)."""
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"{path}: no trained weights. Train the bundle first "
            "(python -m monai.bundle run training --config_file <bundle>/configs/train.json --dataset_dir DIR) "
            "or put a model.pt there; set load_pretrain false to run untrained."
        )
    return str(path)
