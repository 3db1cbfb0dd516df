"""What a trained model needs at inference time beyond its weights: class names, modality, voxel spacing, patch
size, CT window. Training writes them beside ``models/model.pt`` (``models/model_properties.json``) so
``inference.json``, ``Segmenter`` and MONAI Label rebuild exactly the training pre-processing and a network with
the right number of outputs, whatever dataset the bundle was trained on. Without that file (a fresh bundle)
the defaults come from ``configs/metadata.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from monai_resunet.atomic_files import atomic_write_bytes

__all__ = ["write_model_properties", "read_model_properties", "PROPERTIES_FILE"]

PROPERTIES_FILE = "model_properties.json"


def write_model_properties(ckpt_dir: str | os.PathLike, **properties) -> Path:
    """Write ``properties`` (JSON-serialisable) to ``ckpt_dir/model_properties.json`` atomically."""
    clean = {k: list(v) if isinstance(v, tuple) else v for k, v in properties.items()}
    return atomic_write_bytes(Path(ckpt_dir) / PROPERTIES_FILE, json.dumps(clean, indent=2).encode())


def _metadata_defaults(bundle_root: Path) -> dict:
    meta_path = bundle_root / "configs" / "metadata.json"
    if not meta_path.is_file():
        return {}
    meta = json.loads(meta_path.read_text())
    fmt = meta.get("network_data_format", {})
    image = fmt.get("inputs", {}).get("image", {})
    pred = fmt.get("outputs", {}).get("pred", {})
    out: dict = {}
    channel_def = pred.get("channel_def")
    if channel_def:
        out["class_names"] = [channel_def[k] for k in sorted(channel_def, key=int)]
    if image.get("modality"):
        out["modality"] = image["modality"]
    return out


def read_model_properties(bundle_root: str | os.PathLike, key: str | None = None, default=None):
    """The trained model's properties: ``models/model_properties.json`` if training wrote it, else what
    ``configs/metadata.json`` says (class names from the output ``channel_def``, the input modality).

    Args:
        bundle_root: the bundle folder.
        key: return only this property (``default`` when absent).
        default: value for a missing ``key``.

    Example (in a config)::

        "class_names": "$monai_resunet.read_model_properties(@bundle_root, 'class_names')"
    """
    bundle_root = Path(bundle_root)
    props = _metadata_defaults(bundle_root)
    path = bundle_root / "models" / PROPERTIES_FILE
    if path.is_file():
        try:
            props.update(json.loads(path.read_text()))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e}).") from None
    if key is None:
        return props
    return props.get(key, default)
