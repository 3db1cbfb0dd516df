"""DICOM-SEG segment descriptions for MONAI Label's dcmqi conversion: class names to SNOMED CT codes (no
``monailabel`` import here).

MONAI Label 0.8.5 writes a DICOM-SEG with dcmqi's ``itkimage2segimage`` from a metadata template whose
``segmentAttributes`` it builds from the request's ``label_info`` (``{"name", "segmentAttribute", ...}`` per label
value); without them every segment is "unknown", coded as the spleen. ``segment_attributes`` gives each label value
its class name and a code: SNOMED CT (``SCT``, as DCMQI and highdicom use) for the anatomy and findings listed in
``SNOMED_TYPES``, else a code of a private scheme (``99RESUNET``, DICOM's form for private schemes) whose meaning is
the class name, so a viewer shows the class, never a generic "Tissue".
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["SNOMED_TYPES", "PRIVATE_SCHEME", "segment_code", "segment_attributes"]

ANATOMY = ("123037004", "SCT", "Anatomical Structure")
ALTERED = ("49755003", "SCT", "Morphologically Altered Structure")
PHYSICAL_OBJECT = ("260787004", "SCT", "Physical object")
PRIVATE_SCHEME = "99RESUNET"

# class name (lower case, "_" and "-" as spaces) -> (category, (code, scheme, meaning)); SNOMED CT concepts of
# DICOM CID 7150/7151 (segmentation property categories and anatomic structures)
SNOMED_TYPES: dict[str, tuple[tuple[str, str, str], tuple[str, str, str]]] = {
    "liver": (ANATOMY, ("10200004", "SCT", "Liver")),
    "spleen": (ANATOMY, ("78961009", "SCT", "Spleen")),
    "kidney": (ANATOMY, ("64033007", "SCT", "Kidney")),
    "pancreas": (ANATOMY, ("15776009", "SCT", "Pancreas")),
    "brain": (ANATOMY, ("12738006", "SCT", "Brain")),
    "lung": (ANATOMY, ("39607008", "SCT", "Lung")),
    "heart": (ANATOMY, ("80891009", "SCT", "Heart")),
    "prostate": (ANATOMY, ("41216001", "SCT", "Prostate")),
    "urinary bladder": (ANATOMY, ("89837001", "SCT", "Urinary bladder")),
    "bladder": (ANATOMY, ("89837001", "SCT", "Urinary bladder")),
    "aorta": (ANATOMY, ("15825003", "SCT", "Aorta")),
    "stomach": (ANATOMY, ("69695003", "SCT", "Stomach")),
    "gallbladder": (ANATOMY, ("28231008", "SCT", "Gallbladder")),
    "esophagus": (ANATOMY, ("32849002", "SCT", "Esophagus")),
    "bone": (ANATOMY, ("272673000", "SCT", "Bone")),
    "tumor": (ALTERED, ("108369006", "SCT", "Neoplasm")),
    "tumour": (ALTERED, ("108369006", "SCT", "Neoplasm")),
    "neoplasm": (ALTERED, ("108369006", "SCT", "Neoplasm")),
    "lesion": (ALTERED, ("52988006", "SCT", "Lesion")),
}

# distinct display colours for label values 1, 2, ...
_COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]  # fmt: skip


def _code(c: tuple[str, str, str]) -> dict[str, str]:
    return {"CodeValue": c[0], "CodingSchemeDesignator": c[1], "CodeMeaning": c[2]}


def segment_code(name: str, value: int) -> tuple[dict[str, str], dict[str, str]]:
    """(category, type) codes, dcmqi-style dicts, of class ``name`` (label ``value``): SNOMED CT when listed in
    ``SNOMED_TYPES``, else the private ``99RESUNET`` code ``value`` meaning ``name``.

    Example::

        segment_code("Liver", 1)[1]   # {"CodeValue": "10200004", "CodingSchemeDesignator": "SCT", ...}
    """
    key = name.strip().lower().replace("_", " ").replace("-", " ")
    if key in SNOMED_TYPES:
        category, prop = SNOMED_TYPES[key]
        return _code(category), _code(prop)
    return _code(PHYSICAL_OBJECT), _code((str(value), PRIVATE_SCHEME, name[:64]))


def segment_attributes(
    class_names: Sequence[str],
    values: Sequence[int],
    model_name: str = "",
    algorithm: str = "MONAI Label",
    algorithm_type: str = "SEMIAUTOMATIC",
) -> list[dict]:
    """MONAI Label ``label_info`` entries (one per label value in ``values``, in that order) with the dcmqi
    ``segmentAttribute`` of each: label number, class name, codes and colour.

    Args:
        class_names: the model's classes, index = label value (0: background).
        values: the non-zero label values present in the label image, sorted (the order MONAI Label reads them).
        model_name: written as the SEG's series description.
        algorithm: ``SegmentAlgorithmName``.
        algorithm_type: ``SegmentAlgorithmType``: a saved label is the model's output as the reader corrected it.

    Example::

        segment_attributes(["background", "liver", "tumour"], [1, 2], "resunet3d_segmentation")
    """
    out = []
    for value in values:
        value = int(value)
        name = str(class_names[value]) if 0 < value < len(class_names) else f"label {value}"
        category, prop = segment_code(name, value)
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
                    "SegmentedPropertyCategoryCodeSequence": category,
                    "SegmentedPropertyTypeCodeSequence": prop,
                    "recommendedDisplayRGBValue": list(_COLOURS[(value - 1) % len(_COLOURS)]),
                },
            }
        )
    return out
