"""Active learning for segmentation: rank unlabelled images by the model's prediction entropy.

``PredictionEntropyScoring`` (a MONAI Label scoring method, ``POST /scoring/entropy``) runs the model once on
every unlabelled image and stores, in the datastore's image info, the mean voxel entropy of its softmax output
normalised by ``log(C)`` (0: certain everywhere, 1: uniform over the C classes). The mean is taken over the
network's own input, the body crop resampled to the training spacing, so images of different fields of view
and resolutions are compared on the same footing and empty air does not dilute the score. Scores carry the
model file's timestamp and are recomputed after each training.

``EntropyStrategy`` (``POST /activelearning/entropy``) serves the unlabelled image with the highest score,
skipping images it served recently to another request (so two annotators are not handed the same image), and
images not scored yet after all scored ones.

Why not MONAI Label's own: ``EpistemicScoring`` needs Monte-Carlo dropout (a network trained with dropout and
5+ forward passes per image); single-pass softmax entropy is the usual cheap uncertainty baseline for
segmentation active learning and needs nothing from training. ``Dice`` and ``Sum`` score finished labels, not
unlabelled images (and ``Dice`` treats label maps as binary).

Imports ``monailabel``: only for the MONAI Label environment.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import torch
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy

__all__ = ["PredictionEntropyScoring", "EntropyStrategy", "normalised_entropy", "SCORE_KEY", "SCORE_TS_KEY"]

logger = logging.getLogger(__name__)

SCORE_KEY = "prediction_entropy"
SCORE_TS_KEY = "prediction_entropy_ts"


def normalised_entropy(logits: torch.Tensor) -> float:
    """Mean over voxels of the softmax entropy of channel-first ``logits`` (C, *spatial), divided by log(C)."""
    logits = torch.as_tensor(logits).float()
    if logits.shape[0] < 2:
        raise ValueError(f"need at least two output channels, got shape {tuple(logits.shape)}")
    logp = torch.log_softmax(logits, dim=0)
    entropy = -(logp.exp() * logp).sum(dim=0)
    return float(entropy.mean() / math.log(logits.shape[0]))


class PredictionEntropyScoring(ScoringMethod):
    """Score unlabelled images by the normalised prediction entropy of a ``ResUNetInferTask``.

    Args:
        infer_task: the task, or a callable returning it (or ``None`` while the bundle has no weights), so an
            app can hand over a task that appears after its first training.
        model: the model's name, for the description and the logs.
        max_samples: score at most this many images per call (0: all).

    Request keys: ``max_samples``, ``device``, ``force`` (recompute scores that are up to date).
    """

    def __init__(self, infer_task, model: str = "", max_samples: int = 0):
        super().__init__(f"Prediction entropy (softmax, normalised by log C) of {model or 'the model'}")
        self._task = infer_task
        self.model = model
        self.max_samples = max_samples

    @property
    def infer_task(self):
        return self._task() if callable(self._task) and not hasattr(self._task, "bundle_path") else self._task

    def __call__(self, request, datastore: Datastore):
        task = self.infer_task
        if task is None or not task.has_weights():
            logger.warning(f"{SCORE_KEY}: {self.model} has no trained weights yet; nothing scored")
            return {"total": 0, "skipped": 0, "executed": 0, "reason": "no trained weights"}
        path = task.get_path()
        model_ts = int(os.stat(path).st_mtime)
        force = bool(request.get("force", False))
        max_samples = int(request.get("max_samples", self.max_samples) or 0)
        device = request.get("device")
        unlabeled = datastore.get_unlabeled_images()
        todo = [i for i in unlabeled if force or datastore.get_image_info(i).get(SCORE_TS_KEY) != model_ts]
        todo = todo[:max_samples] if max_samples else todo
        start = time.time()
        scores = {}
        for image_id in todo:
            logits = task.predict(datastore.get_image_uri(image_id), device=device)
            score = normalised_entropy(logits)
            datastore.update_image_info(image_id, {SCORE_KEY: score, SCORE_TS_KEY: model_ts})
            scores[image_id] = round(score, 5)
            logger.info(f"{SCORE_KEY}: {image_id} => {score:.5f}")
        summary = {
            "total": len(unlabeled),
            "skipped": len(unlabeled) - len(todo),
            "executed": len(todo),
            "latency": round(time.time() - start, 3),
            "scores": scores,
        }
        logger.info(f"{SCORE_KEY}: {summary}")
        return summary


class EntropyStrategy(Strategy):
    """Next image to label: the unlabelled image with the highest ``prediction_entropy``.

    Args:
        reserve_seconds: an image served by this strategy is not served again for this long (another annotator
            is probably labelling it), unless every unlabelled image was served within that time.
    """

    def __init__(self, reserve_seconds: int = 3600):
        super().__init__("Highest prediction entropy first (run the 'entropy' scoring method to refresh)")
        self.reserve_seconds = reserve_seconds

    def __call__(self, request, datastore: Datastore) -> dict[str, Any] | None:
        images = datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels"))
        if not images:
            return None
        name = request.get("strategy", "entropy")
        now = int(time.time())
        ranked = []
        for image_id in images:
            info = datastore.get_image_info(image_id)
            score = info.get(SCORE_KEY)
            served = info.get("strategy", {}).get(name, {}).get("ts", 0)
            reserved = now - served < self.reserve_seconds
            # not reserved first, then scored before unscored, then highest score, then id (deterministic)
            ranked.append((reserved, score is None, -(score or 0.0), image_id, score))
        ranked.sort()
        reserved, _, _, image_id, score = ranked[0]
        logger.info(f"{name}: selected {image_id} ({SCORE_KEY}={score}, reserved={reserved}) of {len(images)}")
        return {"id": image_id, SCORE_KEY: score}
