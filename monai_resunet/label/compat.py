"""Work-arounds for MONAI Label 0.8.5 on MONAI 1.6 that need no ``monailabel`` import (unit-testable anywhere).

MONAI 1.6's ``Spacingd.__call__`` ends with, for each key it resamples::

    meta_keys = [k for k in d.keys() if k is not None and k.startswith(f"{key}_")]
    for meta_key in meta_keys:
        if "filename_or_obj" in d[key].meta and is_supported_format(d[key].meta["filename_or_obj"], ["nii", "nii.gz"]):
            d[meta_key].update(d[key].meta)

so every ``image_*`` entry of a NIfTI input must be a dict. MONAI Label's inference puts the input file name in
``image_path`` (a ``str``): ``AttributeError: 'str' object has no attribute 'update'`` and HTTP 500 on every
bundle inference that resamples (MONAI 1.5.2 has no such loop).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["hide_non_dict_meta_keys"]


def hide_non_dict_meta_keys(data: dict, keys: Iterable[str]) -> dict:
    """Pop and return the entries ``<key>_*`` of ``data`` (for each of ``keys``) that are not mappings, so
    ``Spacingd`` can run; put them back with ``data.update(hidden)`` afterwards.

    Example::

        hidden = hide_non_dict_meta_keys(data, ["image"])   # removes data["image_path"] (a str)
        data = Spacingd("image", pixdim=(2, 2, 2))(data)
        data.update(hidden)
    """
    hidden = {}
    for key in keys:
        prefix = f"{key}_"
        for k in list(data):
            if isinstance(k, str) and k.startswith(prefix) and not isinstance(data[k], Mapping):
                hidden[k] = data.pop(k)
    return hidden
