"""DICOM-SEG segment descriptions for MONAI Label's dcmqi conversion, coded as the CLI's DICOM-SEG codes them (no
``monailabel`` import here).

MONAI Label 0.8.5 writes a DICOM-SEG with dcmqi's ``itkimage2segimage`` from a metadata template whose
``segmentAttributes`` it builds from the request's ``label_info`` (``{"name", "segmentAttribute", ...}`` per label
value); without them every segment is "unknown", coded as the spleen. ``segment_attributes`` gives each label value
its class name and the codes of :func:`monai_resunet.inference.writers.segment_codes` (the function behind
``--format dicom-seg``): a bundle's ``class_codes``, else SNOMED CT (``SCT``) from pydicom's code dictionary, else a
code of the private scheme ``99RESUNET`` whose meaning is the class name, so a viewer shows the class, never a
generic "Tissue".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from monai_resunet.inference.writers import PRIVATE_SCHEME, segment_codes

__all__ = ["PRIVATE_SCHEME", "segment_attributes"]

# distinct display colours for label values 1, 2, ...
_COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]  # fmt: skip


def _dcmqi_code(code: Any) -> dict[str, str]:
    """A pydicom ``Code`` as dcmqi's JSON code entry."""
    return {"CodeValue": str(code.value), "CodingSchemeDesignator": str(code.scheme_designator),
            "CodeMeaning": str(code.meaning)}  # fmt: skip


def segment_attributes(
    class_names: Sequence[str],
    values: Sequence[int],
    model_name: str = "",
    class_codes: Mapping[str, Any] | None = None,
    algorithm: str = "MONAI Label",
    algorithm_type: str = "SEMIAUTOMATIC",
) -> list[dict]:
    """MONAI Label ``label_info`` entries (one per label value in ``values``, in that order) with the dcmqi
    ``segmentAttribute`` of each: label number, class name, codes and colour.

    Args:
        class_names: the model's classes, index = label value (0: background).
        values: the non-zero label values present in the label image, sorted (the order MONAI Label reads them).
        model_name: written as the SEG's series description.
        class_codes: explicit codes by class name (the bundle's ``class_codes`` model property), as for the CLI.
        algorithm: ``SegmentAlgorithmName``.
        algorithm_type: ``SegmentAlgorithmType``: a saved label is the model's output as the reader corrected it.

    Example::

        segment_attributes(["background", "liver", "tumour"], [1, 2], "resunet3d_segmentation")
    """
    names = {v: str(class_names[v]) if v < len(class_names) else f"label {v}" for v in map(int, values) if v > 0}
    codes = segment_codes(names, class_codes)
    out = []
    for value, name in names.items():
        category, prop = codes[value]
        out.append(
            {
                "name": name,
                "model_name": model_name or "ResUNet",
                "segmentAttribute": {
                    "labelID": value,
                    "SegmentLabel": name,
                    "SegmentDescription": name,
                    "SegmentAlgorithmType": algorithm_type,
                    "SegmentAlgorithmName": algorithm,
                    "SegmentedPropertyCategoryCodeSequence": _dcmqi_code(category),
                    "SegmentedPropertyTypeCodeSequence": _dcmqi_code(prop),
                    "recommendedDisplayRGBValue": list(_COLOURS[(value - 1) % len(_COLOURS)]),
                },
            }
        )
    return out
