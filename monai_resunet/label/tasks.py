"""MONAI Label tasks for the ResUNet bundles: ``BundleInferTask`` / ``BundleTrainTask`` subclasses.

What they add to MONAI Label 0.8.5's bundle tasks:

- **Class names from the trained model**: the stock tasks read labels from ``configs/metadata.json``; ours read
  ``models/model_properties.json`` (written by training, falling back to the metadata), and follow it when a
  training run rewrites it while the server is up (the config is re-parsed, the network rebuilt).
- **The MONAI 1.6 ``Spacingd`` bug** (HTTP 500 ``'str' object has no attribute 'update'``): MONAI 1.6's
  ``Spacingd`` calls ``.update()`` on every ``<key>_*`` entry of the data dict for NIfTI inputs, and MONAI Label
  puts the string ``image_path`` there. The infer task hides such non-dict entries while the pre-transforms run
  and puts them back afterwards.
- **Training without an MSD ``dataset.json``**: our ``train.json`` derives ``class_names``/``modality`` from
  ``dataset_dir/dataset.json``; MONAI Label gives a datalist instead. The train task overrides ``class_names``,
  ``modality``, ``pixdim``, ``patch_size``, ``ct_window`` (and the 2D bundle's ``slice_axis``,
  ``num_neighbours``) from the trained model's properties, so fine-tuning keeps the model's pre-processing; sets
  ``epochs`` with ``max_epochs`` (the LR schedule follows it); validates on the training list when MONAI Label's
  split leaves no validation case (the best-Dice checkpoint ``model.pt`` is written by validation); and takes
  extra bundle overrides from the request (``bundle_overrides``, or the few keys shown in the train options).
- **Dimension**: both bundles take 3D volumes (the 2D one segments them slice by slice), so MONAI Label is told
  ``dimension=3`` for both.

Imports ``monailabel``: only for the MONAI Label environment (``pipelines/deploy/label_env.sh``).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from monai.handlers import CheckpointLoader
from monai.transforms import Spacingd
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask
from monailabel.utils.others.generic import name_to_device

from monai_resunet.label.compat import hide_non_dict_meta_keys
from monai_resunet.model_properties import PROPERTIES_FILE, read_model_properties

__all__ = ["ResUNetInferTask", "ResUNetTrainTask", "hide_non_dict_meta_keys", "model_labels"]

logger = logging.getLogger(__name__)

# model properties that define the trained model's pre-processing, overridden in training when present
PIPELINE_PROPERTIES = (
    "modality", "pixdim", "patch_size", "ct_window", "ct_target_range", "num_levels", "flip_axes", "slice_axis",
    "num_neighbours",
)  # fmt: skip

# request keys (shown in MONAI Label's train options) passed to the bundle as overrides of the same name
TRAIN_OPTION_KEYS = ("learning_rate", "batch_size", "num_samples", "num_workers", "cache_rate", "val_interval")


def model_labels(bundle_path: str | os.PathLike) -> dict[str, int]:
    """``{class name: label value}`` without the background (value 0), as MONAI Label clients expect."""
    names = read_model_properties(bundle_path, "class_names") or []
    return {str(name): i for i, name in enumerate(names) if i > 0}


def weight_files(bundle_path: str | os.PathLike) -> list[str]:
    """``models/*.pt`` that hold network weights (``model.pt`` first), for MONAI Label's ``model_filename``
    option; the training state ``last_state.pt`` (network + optimizer + scheduler) is not one."""
    models = os.path.join(bundle_path, "models")
    names = (
        [n for n in os.listdir(models) if n.endswith(".pt") and n != "last_state.pt"] if os.path.isdir(models) else []
    )
    return sorted(names, key=lambda n: (n != "model.pt", len(n), n)) or ["model.pt"]


def _properties_mtime(bundle_path: str | os.PathLike) -> float:
    path = os.path.join(bundle_path, "models", PROPERTIES_FILE)
    return os.stat(path).st_mtime if os.path.exists(path) else 0.0


SAVER_ID = "saver"  # inference.json's file writer, the last step of its postprocessing

_SCORES = "resunet_scores"  # request flag: run the bundle's score_inferer (class scores, not labels)


class ResUNetInferTask(BundleInferTask):
    """``BundleInferTask`` for the ResUNet bundles (see the module docstring).

    Args:
        path: the bundle folder (``<app>/model/<name>``).
        conf: the app's ``--conf`` values.
        load_strict: load ``models/model.pt`` strictly (a checkpoint that does not fit the network is an error,
            not a silently half-loaded model). MONAI Label's default is ``False``.
        kwargs: passed to ``BundleInferTask`` (``type``, ``dropout``, ``train_mode``, ``skip_writer``, ...);
            ``post_filter`` defaults to ``None``: the post-processing is the bundle's list without its ``saver``.
    """

    def __init__(self, path: str, conf: dict[str, str], load_strict: bool = True, **kwargs: Any):
        # the bundle's file writer is left out by its id ("saver", see post_transforms), not by type
        kwargs.setdefault("post_filter", None)
        super().__init__(path, conf, load_strict=load_strict, **kwargs)
        if not self.valid:
            return
        self.dimension = 3  # both bundles segment 3D volumes (the 2D one slice by slice)
        self._config["model_filename"] = weight_files(path)
        self.labels = model_labels(path) or self.labels
        self._properties_mtime = _properties_mtime(path)

    def has_weights(self) -> bool:
        return bool(self.get_path())

    def refresh(self) -> bool:
        """Re-read the bundle config when ``models/model_properties.json`` changed (a training run rewrote it),
        so class names, spacing and patch size follow the weights that ``_get_network`` reloads. Returns whether
        anything was reloaded."""
        mtime = _properties_mtime(self.bundle_path)
        if mtime == self._properties_mtime:
            return False
        logger.info(f"{self.bundle_path}: {PROPERTIES_FILE} changed; reloading the bundle config")
        self.bundle_config = self._load_bundle_config(self.bundle_path, self.bundle_config_path)
        self.bundle_config.config["use_click"] = False
        if self.dropout > 0:
            self.bundle_config["network_def"]["dropout"] = self.dropout
        self.network = self.bundle_config.get_parsed_content(self.const.key_network_def(), instantiate=True)
        self.labels = model_labels(self.bundle_path) or self.labels
        self.clear_cache()
        self._properties_mtime = mtime
        return True

    def __call__(self, request, callbacks=None):
        self.refresh()
        if not self.has_weights():
            raise MONAILabelException(
                MONAILabelError.INFERENCE_ERROR,
                f"{os.path.basename(self.bundle_path)}: no trained weights (models/model.pt). Train it first "
                f"(POST /train/{os.path.basename(self.bundle_path)}) or copy a trained model.pt into the bundle.",
            )
        return super().__call__(request, callbacks)

    def post_transforms(self, data=None):
        """The bundle's ``postprocessing`` without the step that is its ``saver`` entry (MONAI Label writes the
        label itself)."""
        post = list(super().post_transforms(data))
        saver = self.bundle_config.get_parsed_content(SAVER_ID) if SAVER_ID in self.bundle_config else None
        return [t for t in post if saver is None or t is not saver]

    def run_pre_transforms(self, data: dict[str, Any], transforms):
        spacing_keys = {k for t in transforms if isinstance(t, Spacingd) for k in t.keys}
        hidden = hide_non_dict_meta_keys(data, spacing_keys)
        try:
            out = super().run_pre_transforms(data, transforms)
        finally:
            data.update(hidden)
        for k, v in hidden.items():
            out.setdefault(k, v)
        return out

    def inferer(self, data=None):
        """The bundle's ``inferer``; for :meth:`predict`, its ``score_inferer`` when it has one (the 3D bundle's
        ``inferer`` returns labels, slab by slab, and scoring needs the class scores)."""
        if data is not None and data.get(_SCORES) and self.bundle_config.get("score_inferer"):
            return self.bundle_config.get_parsed_content("score_inferer", instantiate=True)
        return super().inferer(data)

    def predict(self, image: str, device: str | None = None) -> torch.Tensor:
        """The network's output (logits, channel first) for ``image`` on the pre-processed grid (the body crop
        at the model's spacing), without post-processing: what uncertainty scoring needs."""
        self.refresh()
        req = copy.deepcopy(self._config)
        req.update({"image": image, "image_path": image, "logging": "WARNING", _SCORES: True})
        req["device"] = name_to_device(device or req.get("device", "cuda"))
        data = self.run_pre_transforms(req, self.pre_transforms(req))
        data = self.run_inferer(data, device=req["device"])
        return data[self.output_label_key]


class ResUNetTrainTask(BundleTrainTask):
    """``BundleTrainTask`` for the ResUNet bundles (see the module docstring).

    The request may carry, beside MONAI Label's own keys (``max_epochs``, ``val_split``, ``pretrained``,
    ``device``, ...): ``learning_rate``, ``batch_size``, ``num_samples``, ``num_workers``, ``cache_rate``,
    ``val_interval`` (shown in the train options), and ``bundle_overrides``, a dict of any bundle config ids,
    e.g. ``{"patch_size": [48, 48, 48], "train#dataset#cache_rate": 0}``.
    """

    def __init__(self, path: str, conf: dict[str, str], load_strict: bool = True, **kwargs: Any):
        super().__init__(path, conf, load_strict=load_strict, **kwargs)
        self._request: dict = {}

    def config(self):
        options = super().config()
        options["model_filename"] = weight_files(self.bundle_path)
        for key in TRAIN_OPTION_KEYS:
            value = self.bundle_config.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                options[key] = value
        return options

    def __call__(self, request, datastore):
        request = dict(request)
        if not request.get("run_id"):  # clients send the option's default "" back
            request["run_id"] = "run"
        self._request = request
        return super().__call__(request, datastore)

    def _load_checkpoint(self, model_pytorch, pretrained, train_handlers):
        # train_handlers is the bundle config's own list, which MONAI Label 0.8.5 never re-reads: the loader an
        # earlier request inserted would stay, so a later "pretrained": false (or another model_filename) would be
        # ignored. Decide afresh for every request.
        train_handlers[:] = [
            h for h in train_handlers if not (isinstance(h, dict) and h.get("_target_") == CheckpointLoader.__name__)
        ]
        # MONAI Label 0.8.5 calls os.path.exists(None) here when pretrained is false
        if pretrained and model_pytorch and os.path.exists(model_pytorch):
            super()._load_checkpoint(model_pytorch, pretrained, train_handlers)

    def _update_overrides(self, overrides):
        props = read_model_properties(self.bundle_path)
        if not props.get("class_names"):
            raise MONAILabelException(
                MONAILabelError.INVALID_INPUT,
                f"{self.bundle_path}: no class names in models/{PROPERTIES_FILE} or configs/metadata.json "
                "(network_data_format.outputs.pred.channel_def).",
            )
        overrides["class_names"] = list(props["class_names"])
        # fine-tuning keeps the recipe the weights were trained with (below): no plan from a data-set folder here
        if "use_plan" in self.bundle_config:
            overrides["use_plan"] = False
        for key in PIPELINE_PROPERTIES:
            if key in props and self.bundle_config.get(key) is not None:
                overrides[key] = props[key]

        max_epochs = overrides.get(self.const.key_train_trainer_max_epochs())
        if max_epochs is not None:
            overrides["epochs"] = int(max_epochs)  # the LR schedule's length follows @epochs

        device = overrides.get(self.const.key_device())
        if isinstance(device, torch.device) or isinstance(device, str):
            # an expression, not a torch.device object: the multi-GPU path exports the config as JSON
            overrides[self.const.key_device()] = f"$torch.device('{device}')"

        train_data = overrides.get(self.const.key_train_dataset_data()) or []
        if not train_data:
            raise MONAILabelException(
                MONAILabelError.INVALID_INPUT,
                "No labelled images to train on: save final labels first (labels/final in the datastore).",
            )
        val_key = self.const.key_validate_dataset_data()
        if val_key in overrides and not overrides[val_key]:
            logger.warning("No validation cases after the split; validating on the training cases")
            overrides[val_key] = list(train_data)

        for key in TRAIN_OPTION_KEYS:
            if key in self._request and self.bundle_config.get(key) is not None:
                overrides[key] = self._request[key]
        extra = self._request.get("bundle_overrides") or {}
        if not isinstance(extra, Mapping):
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, "bundle_overrides must be a JSON object.")
        overrides.update(extra)
        logger.info(f"Bundle overrides: { {k: v for k, v in overrides.items() if not k.endswith('#data')} }")
        return overrides
