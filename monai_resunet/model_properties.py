"""What a trained model needs at inference time beyond its weights: class names, modality, voxel spacing, patch
size, CT window. Training writes them beside ``models/model.pt`` (``models/model_properties.json``) so
``inference.json``, ``Segmenter`` and MONAI Label rebuild exactly the training pre-processing and a network with
the right number of outputs, whatever dataset the bundle was trained on. Without that file (a fresh bundle)
the defaults come from ``configs/metadata.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from monai_resunet.atomic_files import atomic_write_bytes

__all__ = [
    "write_model_properties",
    "read_model_properties",
    "update_metadata",
    "check_weights_pair",
    "file_sha256",
    "WeightsMismatchError",
    "PROPERTIES_FILE",
    "WEIGHTS_HASH_KEY",
]

PROPERTIES_FILE = "model_properties.json"
# SHA-256 of the weights file the properties belong to (written by BestModelCheckpoint), checked by readers
WEIGHTS_HASH_KEY = "weights_sha256"
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


class WeightsMismatchError(RuntimeError):
    """``model.pt`` is not the weights file ``model_properties.json`` was written for."""


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, cached by (path, size, mtime): configs read the properties several times."""
    st = os.stat(path)
    key = (os.fspath(path), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as fp:
            for block in iter(lambda: fp.read(1 << 20), b""):
                digest.update(block)
        _HASH_CACHE[key] = digest.hexdigest()
    return _HASH_CACHE[key]


def check_weights_pair(ckpt_dir: str | os.PathLike, weights: str = "model.pt", retries: int = 5) -> dict:
    """The properties in ``ckpt_dir``, checked against ``ckpt_dir/weights`` when they record its hash.

    Training renames the weights, then the properties; a reader between the two renames (or after a kill
    between them) sees new weights beside old properties. This re-reads the pair ``retries`` times, 0.2 s apart
    (a writer finishes in that time), then raises :class:`WeightsMismatchError` naming both files.

    Example::

        props = check_weights_pair("bundle/models")  # {} when there is no model_properties.json
    """
    ckpt_dir = Path(ckpt_dir)
    path, weights_path = ckpt_dir / PROPERTIES_FILE, ckpt_dir / weights
    for attempt in range(retries + 1):
        if not path.is_file():
            return {}
        try:
            props = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e}).") from None
        expected = props.get(WEIGHTS_HASH_KEY) if isinstance(props, dict) else None
        if not expected or not weights_path.is_file() or file_sha256(weights_path) == expected:
            return props
        if attempt < retries:
            time.sleep(0.2)
    raise WeightsMismatchError(
        f"{weights_path} is not the weights file {path} was written for ({WEIGHTS_HASH_KEY} differs): training "
        "was interrupted between writing the two, or one was replaced by hand. Resume the training "
        "(--resume true), which rewrites the pair, or restore both files together; if you replaced model.pt "
        f"on purpose, delete {path} or its '{WEIGHTS_HASH_KEY}' entry."
    )


def write_model_properties(ckpt_dir: str | os.PathLike, **properties) -> Path:
    """Write ``properties`` (JSON-serialisable) to ``ckpt_dir/model_properties.json`` atomically; when ``ckpt_dir``
    is a bundle's ``models/`` folder, make its ``configs/metadata.json`` describe the same model
    (:func:`update_metadata`), so ``verify_metadata``/``verify_net_in_out``/``ckpt_export`` agree with the weights.

    Example::

        write_model_properties("bundle/models", class_names=["background", "liver"], modality="CT")
    """
    clean = {k: list(v) if isinstance(v, tuple) else v for k, v in properties.items()}
    path = atomic_write_bytes(Path(ckpt_dir) / PROPERTIES_FILE, json.dumps(clean, indent=2).encode())
    meta_file = Path(ckpt_dir).parent / "configs" / "metadata.json"
    if meta_file.is_file():
        update_metadata(meta_file, clean)
    return path


def update_metadata(meta_file: str | os.PathLike, properties: dict) -> bool:
    """Rewrite ``network_data_format`` of a bundle's ``metadata.json`` (atomically, in the Model Zoo's JSON layout)
    from a trained model's properties: output channels and ``channel_def`` from ``class_names``, input modality,
    input channels from ``num_neighbours`` (2D), both spatial shapes from ``patch_size``. Returns whether it changed.

    Args:
        meta_file: the bundle's ``configs/metadata.json``.
        properties: what :func:`write_model_properties` wrote.

    Example::

        update_metadata("bundle/configs/metadata.json", {"class_names": ["background", "a", "b"]})
    """
    meta_file = Path(meta_file)
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta_file}: not valid JSON ({e}).") from None
    fmt = meta.get("network_data_format", {})
    image = fmt.get("inputs", {}).get("image")
    pred = fmt.get("outputs", {}).get("pred")
    if image is None or pred is None:
        return False
    before = json.dumps(meta)
    names = properties.get("class_names")
    if names:
        pred["num_channels"] = len(names)
        pred["channel_def"] = {str(i): str(n) for i, n in enumerate(names)}
    if properties.get("modality"):
        image["modality"] = properties["modality"]
    if properties.get("num_neighbours") is not None:  # 2D: the slice and its neighbours on each side
        channels = 1 + 2 * int(properties["num_neighbours"])
        image["num_channels"] = channels
        offsets = [i - channels // 2 for i in range(channels)]
        image["channel_def"] = {str(i): "image" if o == 0 else f"image slice {o:+d}" for i, o in enumerate(offsets)}
    if properties.get("patch_size"):
        image["spatial_shape"] = pred["spatial_shape"] = [int(v) for v in properties["patch_size"]]
    if json.dumps(meta) == before:
        return False
    atomic_write_bytes(meta_file, (json.dumps(meta, indent=4) + "\n").encode())
    return True


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
    props.update(check_weights_pair(bundle_root / "models"))  # refuses new weights beside old properties
    if key is None:
        return props
    return props.get(key, default)
