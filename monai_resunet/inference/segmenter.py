"""``Segmenter``: a trained bundle as one Python callable.

Everything is built from the bundle's own ``configs/inference.json`` (network, pre-processing, inferer,
post-processing), so scripts, the CLI and MONAI Label run exactly the pipeline ``python -m monai.bundle run``
runs; only the bundle's ``saver`` entry (the file-writing step its post-processing ends with) is left out, because
the caller decides where the label map goes.
Works for 3D sliding-window bundles and 2D slice-wise bundles alike (the inferer comes from the config).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose

from monai_resunet.model_properties import (
    PROPERTIES_FILE,
    WEIGHTS_HASH_KEY,
    WeightsMismatchError,
    check_weights_pair,
    read_model_properties,
)

__all__ = [
    "Segmenter",
    "CheckpointError",
    "InputImageError",
    "load_checkpoint",
    "transform_error_cause",
    "failure_reason",
]

logger = logging.getLogger("monai_resunet")

# times Segmenter.from_bundle builds the bundle again when model.pt changed under it (0.2 s apart)
_LOAD_RETRIES = 5


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, unsafe (pickled code) or does not fit the network."""


def load_checkpoint(
    network: torch.nn.Module, path: str | os.PathLike, map_location="cpu", weights_sha256: str | None = None
) -> None:
    """Load ``path`` into ``network`` with ``torch.load(weights_only=True)``.

    A plain ``state_dict`` and MONAI ``CheckpointSaver`` files (``{"model": state_dict}``, or the bundle's
    ``last_state.pt`` with ``"network"``) are accepted. A file carrying arbitrary pickled objects is refused
    without running them; a file that does not fit the network says which keys or shapes differ.

    Args:
        network: the module to load the weights into.
        path: the checkpoint file.
        map_location: as in ``torch.load``.
        weights_sha256: the SHA-256 the bytes must have (``model_properties.json``'s ``weights_sha256`` for the
            bundle's ``model.pt``): :class:`~monai_resunet.model_properties.WeightsMismatchError` when they differ,
            i.e. another model was saved after the properties were read. ``None``: no check.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; train the bundle first or pass checkpoint=...")
    try:
        data = path.read_bytes()  # read once: the bytes hashed are the bytes loaded
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({e.strerror or e}).") from None
    if weights_sha256 is not None and hashlib.sha256(data).hexdigest() != weights_sha256:
        properties = path.parent / PROPERTIES_FILE
        raise WeightsMismatchError(
            f"{path} is not the weights file {properties} was written for ({WEIGHTS_HASH_KEY} differs from the "
            "SHA-256 of the file loaded): a training run saved a new model while the bundle was being loaded, or "
            "one of the two files was replaced by hand. Load the bundle again, or restore both files together; if "
            f"you replaced model.pt on purpose, delete {properties} or its '{WEIGHTS_HASH_KEY}' entry."
        )
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused: the checkpoint holds pickled objects other than tensors and plain containers, "
            f"which torch.load(weights_only=True) will not execute ({str(e).splitlines()[0]})."
        ) from None
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e}).") from None
    if isinstance(state, dict):
        for key in ("model", "network", "state_dict"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: no state_dict of tensors found in the checkpoint.")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from a DDP-wrapped network
    own = network.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        details = "; ".join(
            f"{name} ({len(items)}): {', '.join(items[:3])}{' …' if len(items) > 3 else ''}"
            for name, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
            if items
        )
        raise CheckpointError(f"{path}: does not fit the bundle's network_def — {details}.")
    network.load_state_dict(state)


class InputImageError(RuntimeError):
    """An input cannot be read or pre-processed; the message names the input and the reason (a ``RuntimeError``,
    as MONAI's own transform errors are)."""


def transform_error_cause(error: BaseException) -> BaseException:
    """The exception a transform raised, without the ``RuntimeError("applying transform <...>")`` wrappers that
    MONAI's ``Compose`` puts around it (one per nesting level), which name an object, not the problem."""
    while isinstance(error, RuntimeError) and str(error).startswith("applying transform") and error.__cause__:
        error = error.__cause__
    return error


def failure_reason(error: BaseException, path: str | os.PathLike | None = None) -> str:
    """The first line of ``error`` for a per-input report line, without a leading ``"<path>: "`` (the report names
    the input already; ``path`` as given or as ``Path`` spells it, e.g. without a trailing slash)."""
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    if path is None:
        return reason
    for prefix in dict.fromkeys((f"{os.fspath(path)}: ", f"{Path(path)}: ")):
        if reason.startswith(prefix):
            return reason[len(prefix) :]
    return reason


def _run_transforms(chain: Compose, data: dict, source: str | os.PathLike) -> dict:
    try:
        return chain(data)
    except Exception as e:
        cause = transform_error_cause(e)
        reason = str(cause) or type(cause).__name__
        # every message starts with the input, once (failure_reason strips it for a per-input report line)
        prefix = f"{source}: "
        raise InputImageError(reason if reason.startswith(prefix) else prefix + reason) from cause


class Segmenter:
    """A bundle's trained network with its pre- and post-processing, as a callable.

    ``seg(image)`` takes a file path (NIfTI, NRRD, MHA, a DICOM file or a DICOM series folder), a numpy array
    with an ``affine`` (channel-less, spatial axes in the affine's order), or a ``MetaTensor`` (channel-less or
    channel-first with one channel), and returns the
    integer label map as a ``MetaTensor`` of shape ``(1, *spatial)`` on the input's own grid (same shape and
    affine as the input).

    Example::

        seg = Segmenter.from_bundle("bundles/resunet3d_segmentation", device="cpu")
        label = seg("scan.nii.gz")
        seg.segment_file("scan.nii.gz", "scan_seg.nii.gz")
    """

    # the inference.json entries used: the pre-processing and its loader (left out for in-memory inputs), the
    # post-processing and its file writer (left out: the caller writes the label)
    preprocessing_id = "preprocessing"
    loader_id = "preprocessing#transforms#0"
    postprocessing_id = "postprocessing"
    saver_id = "saver"

    def __init__(self, parser: ConfigParser, bundle_dir: Path) -> None:
        self.parser = parser
        self.bundle_dir = bundle_dir
        self.device: torch.device = parser.get_parsed_content("device")
        self.network: torch.nn.Module = parser.get_parsed_content("network")
        self.preprocessing: Compose = parser.get_parsed_content(self.preprocessing_id)
        # the same chain without its loader, for arrays and MetaTensors (the instance the chain holds, found by id)
        loader = parser.get_parsed_content(self.loader_id)
        self.after_load = Compose([t for t in self.preprocessing.transforms if t is not loader])
        self.inferer = parser.get_parsed_content("inferer")
        self.image_key: str = parser.get_parsed_content("image_key") if "image_key" in parser else "image"
        post = parser.get_parsed_content(self.postprocessing_id)
        saver = parser.get_parsed_content(self.saver_id) if self.saver_id in parser else None
        self.postprocessing = Compose([t for t in post.transforms if t is not saver])
        self.class_names: list[str] = list(parser.get_parsed_content("class_names"))
        # explicit DICOM-SEG codes by class name (config entry, else the model property); None: from the names
        self.class_codes: dict | None = (
            parser.get_parsed_content("class_codes") if "class_codes" in parser
            else read_model_properties(bundle_dir, "class_codes")
        )  # fmt: skip
        self.amp = bool(parser.get_parsed_content("amp")) if "amp" in parser else False
        self.network.eval()

    @classmethod
    def from_bundle(
        cls,
        bundle_dir: str | os.PathLike,
        device: str | torch.device | None = None,
        checkpoint: str | os.PathLike | None = None,
        config_file: str = "inference.json",
        **overrides,
    ) -> Segmenter:
        """Build from ``bundle_dir/configs/<config_file>`` and load ``models/model.pt`` (or ``checkpoint``).

        Args:
            bundle_dir: the bundle folder.
            device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``…; ``None``: the config's default (CUDA when available).
            checkpoint: weights to load instead of ``bundle_dir/models/model.pt``.
            config_file: the inference config inside ``configs/``.
            overrides: config overrides, e.g. ``sw_batch_size=4`` or ``**{"window_inferer#overlap": 0.25}``.
        """
        bundle = Path(bundle_dir).resolve()
        config = bundle / "configs" / config_file
        if not config.is_file():
            raise FileNotFoundError(f"{config}: no such bundle config; is {bundle} a bundle folder?")
        weights = Path(checkpoint) if checkpoint is not None else bundle / "models" / "model.pt"
        attempt = 0
        while True:
            segmenter, expected = cls._parse(bundle, config, weights, device, overrides)
            try:
                load_checkpoint(segmenter.network, weights, map_location=segmenter.device, weights_sha256=expected)
                return segmenter
            except WeightsMismatchError:
                attempt += 1
                if attempt > _LOAD_RETRIES:
                    raise
                time.sleep(0.2)  # a training run saved a new pair meanwhile: build again from the new properties

    @classmethod
    def _parse(
        cls, bundle: Path, config: Path, weights: Path, device: str | torch.device | None, overrides: dict
    ) -> tuple[Segmenter, str | None]:
        """The segmenter built from the config (no weights loaded yet), and the SHA-256 ``weights`` must have: the
        one the bundle's properties record when ``weights`` is its ``models/model.pt``, else ``None``."""
        models = bundle / "models"
        own_model = weights.resolve() == (models / "model.pt").resolve()
        # read before the config reads the properties: weights saved after this cannot match it
        expected = check_weights_pair(models).get(WEIGHTS_HASH_KEY) if own_model else None
        parser = ConfigParser()
        parser.read_config(str(config))
        meta = bundle / "configs" / "metadata.json"
        if meta.is_file():
            parser.read_meta(str(meta))
        parser["bundle_root"] = str(bundle)
        if device is not None:
            parser["device"] = torch.device(device)
        for key, value in overrides.items():
            parser[key] = value
        return cls(parser, bundle), expected

    def _prepare(self, image, affine: np.ndarray | None) -> dict:
        if isinstance(image, (str, os.PathLike)):
            path = Path(image)
            if not path.exists():
                raise FileNotFoundError(f"{path}: no such file or folder.")
            return _run_transforms(self.preprocessing, {self.image_key: str(path)}, source=path)
        if isinstance(image, MetaTensor):
            # a shallow copy: the caller's tensor and its meta dict stay as they were
            tensor = MetaTensor(image.as_tensor(), meta=dict(image.meta))  # the meta dict holds the affine
        elif isinstance(image, (np.ndarray, torch.Tensor)):
            if affine is None:
                raise ValueError("an array input needs its affine (voxel → world, 4×4): seg(array, affine=...).")
            tensor = MetaTensor(torch.as_tensor(np.asarray(image)), affine=torch.as_tensor(affine, dtype=torch.float64))
        else:
            raise TypeError(
                f"expected a path, a numpy array with an affine, or a MetaTensor, got {type(image).__name__}."
            )
        if tensor.ndim == 4 and tensor.shape[0] == 1:
            # channel-first already (LoadImage(ensure_channel_first=True) output, or a MONAI transform chain): the
            # pre-processing's EnsureChannelFirstd must not add a second channel
            tensor.meta["original_channel_dim"] = 0
        elif tensor.ndim == 3:
            tensor.meta["original_channel_dim"] = "no_channel"
        else:
            raise ValueError(
                f"expected a 3D volume, (X, Y, Z) or channel-first (1, X, Y, Z), got shape {tuple(tensor.shape)}."
            )
        tensor.meta.setdefault("original_affine", tensor.affine.clone())
        tensor.meta.setdefault("spatial_shape", tuple(tensor.shape[-3:]))
        return _run_transforms(self.after_load, {self.image_key: tensor}, source="the input array")

    @torch.no_grad()
    def __call__(self, image, affine: np.ndarray | None = None) -> MetaTensor:
        data = self._prepare(image, affine)
        inputs = data[self.image_key][None].to(self.device)
        with torch.autocast(self.device.type, enabled=self.amp and self.device.type == "cuda"):
            logits = self.inferer(inputs, self.network)
        # class scores go on in float32 (from AMP's float16 too); a label map (SlabArgmaxInferer) stays integer
        data["pred"] = logits[0].float() if logits.is_floating_point() else logits[0]
        data = self.postprocessing(data)
        return data["pred"].to(torch.uint8 if len(self.class_names) <= 256 else torch.int32).cpu()

    def segment_file(self, input_path: str | os.PathLike, output_path: str | os.PathLike) -> Path:
        """Segment ``input_path`` and write the label map to ``output_path``: ``.nii``/``.nii.gz``/``.nrrd``/
        ``.mha`` by extension, or ``.dcm`` for a DICOM-SEG that references a DICOM input. Written atomically."""
        from monai_resunet.inference.writers import write_dicom_seg, write_label_map

        output_path = Path(output_path)
        label = self(input_path)
        if output_path.suffix.lower() == ".dcm":
            # the series the reader chose (a folder may hold several), so the SEG references the images segmented
            series_uid = (label.meta.get("dicom_series_uid") if isinstance(label, MetaTensor) else None) or None
            write_dicom_seg(label, input_path, output_path, segment_names=self.class_names, series_uid=series_uid,
                            class_codes=self.class_codes)  # fmt: skip
        else:
            write_label_map(label, output_path)
        return output_path

    @property
    def segment_names(self) -> Sequence[str]:
        """Names of the foreground classes (label values 1, 2, …)."""
        return self.class_names[1:]
