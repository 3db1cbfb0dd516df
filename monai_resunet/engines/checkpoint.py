"""Resumable training: an ignite handler that writes the full training state atomically at the end of every
epoch and, when asked, restores it before the first epoch, so a run killed at any moment (``kill -9``
included) loses at most the epoch in progress.

MONAI's ``CheckpointSaver`` writes in place (``atomic=False``), so a kill during a save can leave a truncated
file; this handler writes to a temporary file in the same folder and renames it over the old one. It loads
with ``torch.load(weights_only=True)``: a checkpoint that carries pickled code is refused, not run.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint

__all__ = ["ResumableCheckpoint", "atomic_torch_save", "as_bool", "require_checkpoint"]

logger = logging.getLogger("monai_resunet")


def as_bool(value) -> bool:
    """Config flags arrive from the command line as strings (``--resume true``); accept those too."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes", "y", "on"):
            return True
        if lowered in ("false", "0", "no", "n", "off", "", "none"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}.")
    return bool(value)


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    ) -> None:
        self.path = Path(save_dir) / filename
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
            logger.info("resume requested but %s does not exist yet: training from scratch.", self.path)
            return
        try:
            checkpoint = torch.load(self.path, map_location=self.map_location, weights_only=True)
        except Exception as e:  # a truncated or foreign file: name it instead of a pickle traceback
            raise RuntimeError(f"{self.path}: cannot load the last-state checkpoint ({e}).") from None
        missing = [k for k in self.save_dict if k not in checkpoint]
        if missing:
            raise RuntimeError(f"{self.path}: checkpoint lacks {missing}; it was not written by this bundle.")
        max_epochs = engine.state.max_epochs
        Checkpoint.load_objects(to_load=self.save_dict, checkpoint=checkpoint)
        engine.state.max_epochs = max_epochs
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
