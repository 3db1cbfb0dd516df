"""The MONAI Label app serving the ResUNet bundles (inference, training, active learning), fully offline.

An app folder (``python -m monai_resunet label-app DIR``) holds a one-line ``main.py`` importing
``ResUNetLabelApp`` and the bundles under ``DIR/model/<name>/``, the layout of MONAI Label's ``monaibundle``
sample app. Unlike that app this one never downloads: bundles are found only in ``DIR/model``, and nothing calls
GitHub, NGC or Hugging Face at start-up.

``--conf`` keys (``monailabel start_server --app DIR --studies STUDIES --conf KEY VALUE``):

- ``models``: comma-separated bundle names under ``DIR/model`` (default: all of them).
- ``scoring_model``: the bundle whose prediction entropy ranks unlabelled images (default: the first).
- ``skip_trainers``: ``true`` to serve inference only.
- ``preload``: ``true`` to load the networks at start-up (MONAI Label's option).
- ``modalities``: with a DICOMweb ``--studies`` URL, the modalities whose series are listed (default ``CT,MR``).

With a DICOMweb ``--studies`` URL (a PACS), the datastore is ``dicomweb.ResUNetDICOMWebDatastore``: clear errors
for unreadable series and saved labels stored as DICOM-SEG with the model's class names and codes (as the CLI's). dcmqi
(``itkimage2segimage``, from PyPI's ``dcmqi`` in the venv) is put on PATH so MONAI Label does not download it.

A bundle without ``models/model.pt`` is served for training only; its inference answers HTTP 409 with the reason
until a training run (``POST /train/<name>``) writes the weights, then it appears without a restart.

Imports ``monailabel``: only for the MONAI Label environment (``pipelines/deploy/label_env.sh``).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from typing import Any

from fastapi import HTTPException
from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.utils.others.generic import strtobool

import monai_resunet
from monai_resunet.label.dicomweb import ResUNetDICOMWebDatastore
from monai_resunet.label.strategy import EntropyStrategy, PredictionEntropyScoring
from monai_resunet.label.tasks import ResUNetInferTask, ResUNetTrainTask
from monai_resunet.model_properties import read_model_properties

__all__ = ["ResUNetLabelApp", "find_bundles", "dcmqi_on_path"]

logger = logging.getLogger(__name__)


def dcmqi_on_path() -> str | None:
    """Put the ``itkimage2segimage`` installed beside this Python (PyPI's ``dcmqi`` in the venv) first on PATH,
    so MONAI Label finds it instead of downloading dcmqi from GitHub; returns the tool's path (``None``: absent)."""
    bin_dir = os.path.dirname(sys.executable)
    if os.access(os.path.join(bin_dir, "itkimage2segimage"), os.X_OK):
        path = os.environ.get("PATH", "")
        if bin_dir not in path.split(os.pathsep):
            os.environ["PATH"] = bin_dir + os.pathsep + path
    return shutil.which("itkimage2segimage")


def find_bundles(model_dir: str | os.PathLike, names: str | None = None) -> dict[str, str]:
    """``{name: path}`` of the bundles in ``model_dir`` (folders with ``configs/inference.json`` or
    ``configs/train.json``); ``names``, comma-separated, selects some of them and must all exist (nothing is
    downloaded)."""
    model_dir = str(model_dir)
    found = {}
    if os.path.isdir(model_dir):
        for name in sorted(os.listdir(model_dir)):
            configs = os.path.join(model_dir, name, "configs")
            if any(os.path.isfile(os.path.join(configs, c)) for c in ("inference.json", "train.json")):
                found[name] = os.path.join(model_dir, name)
    wanted = [n.strip() for n in (names or "").split(",") if n.strip() and n.strip().lower() != "all"]
    missing = [n for n in wanted if n not in found]
    if missing:
        raise MONAILabelException(
            MONAILabelError.APP_INIT_ERROR,
            f"Bundle(s) {missing} not found in {model_dir} (found: {sorted(found)}). This app does not download "
            "bundles: write the app with `python -m monai_resunet label-app DIR` or copy the bundle folder there.",
        )
    if not found:
        raise MONAILabelException(MONAILabelError.APP_INIT_ERROR, f"No bundle in {model_dir}.")
    return {n: found[n] for n in wanted} if wanted else found


class ResUNetLabelApp(MONAILabelApp):
    """MONAI Label app for the ResUNet bundles in ``<app_dir>/model``."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        self.model_dir = os.path.join(app_dir, "model")
        self.bundles = find_bundles(self.model_dir, conf.get("models"))
        self.scoring_model = conf.get("scoring_model") or next(iter(self.bundles))
        if self.scoring_model not in self.bundles:
            raise MONAILabelException(
                MONAILabelError.APP_INIT_ERROR,
                f"scoring_model {self.scoring_model!r} is not one of {list(self.bundles)}",
            )
        self.modalities = [m for m in (conf.get("modalities") or "CT,MR").split(",") if m.strip()]
        if studies.startswith(("http://", "https://")) and dcmqi_on_path() is None:
            logger.warning("itkimage2segimage (dcmqi) not found: `pip install dcmqi` in this environment")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"MONAI Label - ResUNet bundles (monai_resunet {monai_resunet.__version__})",
            description="Residual U-Net segmentation bundles (3D and 2D slice-wise) served offline",
            version=monai_resunet.__version__,
        )

    # datastore --------------------------------------------------------------------------------------------------

    def init_datastore(self) -> Datastore:
        datastore = super().init_datastore()
        if type(datastore) is DICOMWebDatastore:
            datastore.__class__ = ResUNetDICOMWebDatastore  # same state and watcher, our reading and SEG on top
            datastore.configure(self.modalities, self.seg_classes)
        return datastore

    def seg_classes(self, model: str | None = None) -> tuple[str, list[str], dict | None]:
        """``(bundle name, class names, class codes)`` of ``model`` (default: the first bundle) for a saved SEG."""
        name = model if model in self.bundles else next(iter(self.bundles))
        props = read_model_properties(self.bundles[name])
        return name, list(props.get("class_names") or []), props.get("class_codes")

    # tasks ------------------------------------------------------------------------------------------------------

    def _make_infer(self, name: str) -> ResUNetInferTask | None:
        task = ResUNetInferTask(self.bundles[name], self.conf)
        if task.is_valid():
            logger.info(f"+++ Adding Inferer:: {name} => {self.bundles[name]}")
            return task
        logger.warning(f"{name}: no models/model.pt yet; inference is enabled once a training run writes it")
        return None

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for name in self.bundles:
            task = self._make_infer(name)
            if task is not None:
                infers[name] = task
        return infers

    def _refresh_infers(self) -> None:
        """Add the inference tasks of bundles that got their first weights since start-up."""
        for name, path in self.bundles.items():
            if name not in self._infers and os.path.isfile(os.path.join(path, "models", "model.pt")):
                task = self._make_infer(name)
                if task is not None:
                    self._infers[name] = task

    def init_trainers(self) -> dict[str, TrainTask]:
        trainers: dict[str, TrainTask] = {}
        if strtobool(self.conf.get("skip_trainers", "false")):
            return trainers
        for name, path in self.bundles.items():
            task = ResUNetTrainTask(path, self.conf)
            if task.is_valid():
                logger.info(f"+++ Adding Trainer:: {name} => {path}")
                trainers[name] = task
        return trainers

    def init_strategies(self) -> dict[str, Strategy]:
        strategies: dict[str, Strategy] = {"entropy": EntropyStrategy(), "random": Random(), "first": First()}
        logger.info(f"Active Learning Strategies:: {list(strategies)}")
        return strategies

    def init_scoring_methods(self) -> dict[str, ScoringMethod]:
        return {"entropy": PredictionEntropyScoring(lambda: self._scoring_task(), self.scoring_model)}

    def _scoring_task(self) -> ResUNetInferTask | None:
        self._refresh_infers()
        task = self._infers.get(self.scoring_model)
        return task if isinstance(task, ResUNetInferTask) else None

    # requests ---------------------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        self._refresh_infers()
        return super().info()

    def infer(self, request, datastore=None):
        model = request.get("model")
        self._refresh_infers()
        if model in self.bundles and model not in self._infers:
            # an HTTP error with its reason (MONAI Label answers a bare 500 "Internal Server Error" otherwise)
            raise HTTPException(
                status_code=409,
                detail=f"{model}: no trained weights (models/model.pt) yet. Train it first (POST /train/{model}) "
                f"or copy a trained model.pt into {self.bundles[model]}/models.",
            )
        return super().infer(request, datastore)

    def model_file(self, model, validate=True):
        self._refresh_infers()
        return super().model_file(model, validate)
