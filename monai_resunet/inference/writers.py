"""Label-map writers: NIfTI / NRRD / MHA on the input's grid, and DICOM-SEG referencing the source series.

Both writers are atomic: the file is written under a temporary name in the target folder (with the real
extension, since the backends choose the format by extension) and moved onto the target with ``os.replace``,
so an interrupted or failed run never leaves a half-written output, and an existing output stays intact.

- :func:`write_label_map`: a label map (channel-first with one channel, or no channel) as uint8 (uint16 when
  labels exceed 255) on the given affine, without resampling: ``.nii``/``.nii.gz`` through nibabel (the header
  codes MONAI's ``NibabelWriter`` sets, voxels handed over x-fastest), ``.nrrd``/``.mha`` through SimpleITK.
  Affines follow MONAI's convention: RAS, (x, y, z) indexing.
- :class:`LabelMapWriter`: the same writer as a MONAI ``ImageWriter``, for ``SaveImaged(writer=LabelMapWriter)`` in
  bundle configs (MONAI names the file; MONAI Label still recognises the step as ``SaveImaged`` and skips it).
- :func:`write_dicom_seg`: a DICOM Segmentation (highdicom, optional ``dicom`` extra) with one segment per
  non-background class, referencing the source series, its frame of reference and, frame by frame, the source
  image each SEG frame lies on. The label is mapped from MONAI's RAS (x, y, z) layout back to the source's
  (slice, row, column) order through the affines, so a label reoriented with ``Orientation("RAS")`` is fine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import PathLike
from monai.data import ImageWriter, MetaTensor
from monai.data.utils import orientation_ras_lps, to_affine_nd
from monai.utils import MetaKeys, SpaceKeys
from pydicom.dataset import Dataset

from monai_resunet.atomic_files import atomic_target, full_suffix
from monai_resunet.data.array_layout import c_contiguous
from monai_resunet.data.dicom_series import DicomSeries, read_dicom_series
from monai_resunet.data.nifti_reader import has_isal, igzip

__all__ = [
    "LABEL_MAP_SUFFIXES",
    "LabelMapWriter",
    "LabelWriteError",
    "PRIVATE_SCHEME",
    "check_dicom_seg_source",
    "remove_partial_files",
    "segment_codes",
    "write_dicom_seg",
    "write_label_map",
]

LABEL_MAP_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")


class LabelWriteError(OSError):
    """Writing an output failed; the message names the path and the reason (the target is left untouched)."""


def _to_numpy(label: Any) -> np.ndarray:
    if isinstance(label, torch.Tensor):
        return label.detach().cpu().numpy()
    return np.asarray(label)


def _label_and_affine(label: Any, affine: Any, path: Path, need_affine: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The label's spatial array (channel removed) and its RAS affine (``affine`` wins over a MetaTensor's)."""
    arr = _to_numpy(label)
    aff = None
    if affine is not None:
        aff = _to_numpy(affine).astype(np.float64)
    elif isinstance(label, MetaTensor):
        aff = _to_numpy(label.affine).astype(np.float64)
        if str(label.meta.get(MetaKeys.SPACE, SpaceKeys.RAS)) == str(SpaceKeys.LPS):
            aff = orientation_ras_lps(aff)  # a reader run with affine_lps_to_ras=False
        spatial_shape = label.meta.get(MetaKeys.SPATIAL_SHAPE)
        if spatial_shape is not None and len(spatial_shape) == 2 and aff.shape == (4, 4):
            aff = to_affine_nd(2, aff)  # MONAI keeps a 4×4 affine for 2D images too; (1, X, Y) is not a volume
    if aff is None and need_affine:
        raise ValueError(f"{path}: the label has no affine (pass a MetaTensor or affine=...); refusing to guess.")
    r = aff.shape[0] - 1 if aff is not None else (3 if arr.ndim >= 3 else 2)
    if aff is not None and (aff.shape != (r + 1, r + 1) or r not in (2, 3)):
        raise ValueError(f"{path}: affine must be 3x3 (2D) or 4x4 (3D), got shape {aff.shape}.")
    if arr.ndim == r + 1:
        if arr.shape[0] != 1:
            raise ValueError(
                f"{path}: label has {arr.shape[0]} channels (shape {arr.shape}); write one label map (argmax first)."
            )
        arr = arr[0]
    if arr.ndim != r:
        raise ValueError(f"{path}: label of shape {arr.shape} is not a {r}D label map (with or without a channel).")
    return arr, aff


def _label_dtype(arr: np.ndarray, path: Path, dtype: Any = None) -> np.ndarray:
    """Integer labels as uint8, or uint16 when they exceed 255 (``dtype`` forces one)."""
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{path}: label values are not integers (dtype {arr.dtype}); write argmax labels.")
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if lo < 0:
        raise ValueError(f"{path}: negative label value {lo:g}.")
    if dtype is None:
        if hi > np.iinfo(np.uint16).max:
            raise ValueError(f"{path}: label value {hi:g} exceeds uint16.")
        dtype = np.uint8 if hi <= np.iinfo(np.uint8).max else np.uint16
    elif hi > np.iinfo(np.dtype(dtype)).max:
        raise ValueError(f"{path}: label value {hi:g} does not fit {np.dtype(dtype)}.")
    return arr.astype(dtype, copy=False)


def _is_orthogonal(affine: np.ndarray) -> bool:
    m = affine[:-1, :-1]
    m = m / np.linalg.norm(m, axis=0)
    return bool(np.allclose(m.T @ m, np.eye(m.shape[0]), atol=1e-6))


def _fortran_order(arr: np.ndarray) -> np.ndarray:
    """The same array laid out x-fastest, as NIfTI stores voxels (the C-contiguous copy of its transpose, by torch's
    threaded ``contiguous()``): nibabel then writes it without its own single-threaded strided ``tobytes("F")``."""
    return c_contiguous(arr.T).T


def _write_nifti(arr: np.ndarray, affine: np.ndarray, tmp: Path) -> None:
    import nibabel as nib

    # not NibabelWriter.set_data_array/write: they squeeze trailing singleton dimensions, so a one-slice volume
    # (X, Y, 1) would come back 2D; nor its create_backend_obj, whose slow C-order copy would undo the x-fastest
    # layout; the image and header codes are the ones NibabelWriter.write sets
    affine = to_affine_nd(3, affine)
    img = nib.Nifti1Image(_fortran_order(arr), affine)
    img.set_data_dtype(arr.dtype)
    img.set_sform(affine, code=1)
    # a sheared affine (gantry tilt) cannot be a qform; code 0 makes readers use the exact sform
    img.set_qform(affine, code=1 if _is_orthogonal(affine) else 0)
    img.header.set_xyzt_units("mm")
    img.header.set_intent("label")
    if has_isal and tmp.name.endswith(".gz"):
        # ISA-L's deflate at nibabel's default level 1: the same gzip format, faster than Python's gzip
        with igzip.open(tmp, "wb", compresslevel=1) as f:
            img.to_file_map(img.make_file_map({"image": f}))
    else:
        nib.save(img, str(tmp))


def _write_sitk(arr: np.ndarray, affine: np.ndarray, tmp: Path, compress: bool) -> None:
    import SimpleITK as sitk

    lps = orientation_ras_lps(affine)  # ITK's world is LPS
    r = arr.ndim
    spacing = np.linalg.norm(lps[:r, :r], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(arr.T))  # SimpleITK arrays are (z, y, x)
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(lps[:r, r].tolist())
    image.SetDirection((lps[:r, :r] / spacing).flatten().tolist())
    sitk.WriteImage(image, str(tmp), useCompression=compress)


def write_label_map(label: Any, path: PathLike, affine: Any = None, dtype: Any = None, compress: bool = True) -> Path:
    """Write a label map on its own grid (no resampling), atomically, choosing the format by extension.

    Args:
        label: ``MetaTensor`` or array/tensor, (1, X, Y, Z) or (X, Y, Z) (2D: (1, X, Y) or (X, Y)), integer
            values (floats holding integers are accepted).
        path: ``.nii``, ``.nii.gz``, ``.nrrd`` or ``.mha`` file to write; its folder is created if needed.
        affine: RAS affine of the (x, y, z) indices (MONAI's convention); default: ``label.affine``.
            Pass the input image's affine (or invert the preprocessing first) to write on the input's grid.
        dtype: output dtype; default uint8, or uint16 when labels exceed 255.
        compress: compress ``.nrrd``/``.mha`` (``.nii.gz`` is always compressed, ``.nii`` never).

    Returns:
        the written path.

    Raises:
        ValueError: unsupported extension, missing affine, multi-channel or non-integer labels.
        LabelWriteError: the backend failed; nothing is left at ``path`` (an existing file is kept).

    Example::

        pred = Invertd(...)(...)["pred"]  # (1, X, Y, Z) MetaTensor on the input's grid
        write_label_map(pred.argmax(0, keepdim=True), "out/case1_seg.nii.gz")
    """
    path = Path(os.fspath(path)).expanduser()
    suffix = full_suffix(path)
    if suffix not in LABEL_MAP_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported label-map format {suffix!r}; use one of {', '.join(LABEL_MAP_SUFFIXES)}."
        )
    arr, aff = _label_and_affine(label, affine, path, need_affine=True)
    arr = _label_dtype(arr, path, dtype)
    if not np.isfinite(aff).all() or abs(np.linalg.det(aff[:-1, :-1])) < 1e-12:
        raise ValueError(f"{path}: the affine is singular or not finite:\n{aff}")
    try:
        with atomic_target(path) as tmp:
            if suffix in (".nii", ".nii.gz"):
                _write_nifti(arr, aff, tmp)
            else:
                _write_sitk(arr, aff, tmp, compress)
    except Exception as e:
        raise LabelWriteError(f"{path}: writing the label map failed ({type(e).__name__}: {e}).") from e
    return path


class LabelMapWriter(ImageWriter):
    """A MONAI ``ImageWriter`` for ``SaveImage(d)(writer=LabelMapWriter)``: MONAI names the file (output folder,
    postfix, extension), ``write_label_map`` writes it, atomically (a temporary file renamed into place, so a failed
    or interrupted write never leaves a partial file), as uint8/uint16 labels on the label's own grid.

    It does not resample: ``SaveImaged(resample=False)`` (labels already on the input's grid, as ``InvertLabelMapd``
    leaves them); with ``resample=True`` it refuses labels whose affine differs from the ``original_affine``.

    Args:
        output_dtype: label dtype (``None``: uint8, or uint16 above 255).
        kwargs: other ``SaveImage`` writer options (ignored: labels are written as they are).

    Example::

        save = SaveImaged("pred", output_dir="out", output_postfix="seg", resample=False, writer=LabelMapWriter)
    """

    output_dtype: Any = None

    def set_data_array(self, data_array: Any, channel_dim: int | None = 0, squeeze_end_dims: bool = True, **kwargs):
        self.data_obj = data_array  # write_label_map removes a leading channel of one and checks the rest

    def set_metadata(self, meta_dict: Mapping | None = None, resample: bool = True, **options):
        meta = dict(meta_dict or {})
        self.affine = meta.get(MetaKeys.AFFINE)
        original = meta.get(MetaKeys.ORIGINAL_AFFINE)
        if resample and original is not None and self.affine is not None:
            if not np.allclose(_to_numpy(original), _to_numpy(self.affine), atol=1e-4):
                raise ValueError(
                    f"{meta.get(MetaKeys.FILENAME_OR_OBJ, 'label')}: LabelMapWriter does not resample; invert the "
                    "labels onto the input's grid first (InvertLabelMapd) and save with resample=False."
                )

    def write(self, filename: PathLike, verbose: bool = True, **kwargs):
        label = self.data_obj
        # SaveImage's default output_dtype is float32: labels stay integers (uint8/uint16) unless an integer is asked
        integer = self.output_dtype is not None and np.issubdtype(np.dtype(self.output_dtype), np.integer)
        write_label_map(label, filename, affine=None if isinstance(label, MetaTensor) else self.affine,
                        dtype=self.output_dtype if integer else None)  # fmt: skip


def _onto_source_grid(arr: np.ndarray, label_affine: np.ndarray, series: DicomSeries, path: Path) -> np.ndarray:
    """Re-index ``arr`` (on ``label_affine``) onto the source series' (column, row, slice) grid.

    Only flips and axis permutations of the same grid are allowed (what ``Orientation`` does); anything else
    (resampled, cropped) must be brought back to the input's grid first, e.g. with ``Invertd``.
    """
    src_affine = series.affine(lps_to_ras=True)
    to_src = np.linalg.solve(src_affine, to_affine_nd(3, label_affine))  # label index -> source index
    perm = np.rint(to_src[:3, :3])
    shift = to_src[:3, 3]
    is_perm = np.array_equal(np.abs(perm).sum(0), np.ones(3)) and np.array_equal(np.abs(perm).sum(1), np.ones(3))
    if not (is_perm and np.allclose(to_src[:3, :3], perm, atol=1e-3) and np.allclose(shift, np.rint(shift), atol=1e-3)):
        raise ValueError(
            f"{path}: the label is not on the source series' grid (label affine\n{label_affine}\nvs source "
            f"affine\n{src_affine}); invert the preprocessing (e.g. Invertd) to get it back on the input's grid."
        )
    # source axis i comes from label axis axes[i], reversed where perm[i, axes[i]] == -1
    axes = [int(np.flatnonzero(perm[i])[0]) for i in range(3)]
    out = arr.transpose(axes)
    for i in range(3):
        if perm[i, axes[i]] < 0:
            out = np.flip(out, axis=i)
    expected_shift = [(series.spatial_shape[i] - 1) if perm[i, axes[i]] < 0 else 0 for i in range(3)]
    if out.shape != series.spatial_shape or not np.allclose(shift, expected_shift, atol=1e-3):
        raise ValueError(
            f"{path}: the label (shape {arr.shape}) covers a different extent than the source series (shape "
            f"{series.spatial_shape}); invert any crop/pad (e.g. Invertd) first."
        )
    return np.ascontiguousarray(out)


# coding scheme of the codes given to classes without a SNOMED CT code (DICOM's "99" prefix: a private scheme)
PRIVATE_SCHEME = "99RESUNET"

# DICOM CID 7191-7198: the segmented property types of each category of CID 7150 (the pairs DCMQI and highdicom
# use); a type's category is the one whose list holds its code. The category codes are DICOM's current ones, kept
# here so they do not depend on the pydicom release (pydicom 2 still has the retired 123037004 for anatomy)
_CATEGORY_CIDS = {
    7191: ("85756007", "Tissue"),
    7192: ("91723000", "Anatomical Structure"),
    7193: ("260787004", "Physical object"),
    7194: ("49755003", "Morphologically Abnormal Structure"),
    7195: ("246464006", "Function"),
    7196: ("309825002", "Spatial and Relational Concept"),
    7197: ("91720002", "Body Substance"),
    7198: ("105590001", "Substance"),
}
_ANATOMY_CIDS = (4, 8134)  # anatomic regions / structures outside the segmentation lists (e.g. Bone)


def _code_of(spec: Any, what: str) -> Any:
    """A pydicom ``Code`` from ``Code``, ``[value, scheme, meaning]`` or ``{"CodeValue": ..., ...}`` (dcmqi)."""
    from pydicom.sr.coding import Code

    if isinstance(spec, Code):
        return spec
    if isinstance(spec, Mapping):
        spec = [spec.get("CodeValue", spec.get("value")), spec.get("CodingSchemeDesignator", spec.get("scheme")),
                spec.get("CodeMeaning", spec.get("meaning"))]  # fmt: skip
    if isinstance(spec, Sequence) and not isinstance(spec, str) and len(spec) == 3 and all(spec):
        return Code(str(spec[0]), str(spec[1]), str(spec[2]))
    raise ValueError(f"{what}: a code must be [value, scheme, meaning] (e.g. [\"10200004\", \"SCT\", \"Liver\"]), "
                     f"got {spec!r}.")  # fmt: skip


def _sct_code(keyword: str) -> Any | None:
    """``codes.SCT.<keyword>``, or ``None`` when pydicom has no such keyword or (pydicom 2) several codes for it."""
    from pydicom.sr.codedict import codes

    try:
        return getattr(codes.SCT, keyword)
    except (AttributeError, RuntimeError):  # pydicom 2 raises RuntimeError for an ambiguous keyword
        return None


def _category(cid: int) -> Any:
    """The CID 7150 category whose segmented property types are listed in ``cid`` (7191-7198)."""
    from pydicom.sr.coding import Code

    value, meaning = _CATEGORY_CIDS[cid]
    return Code(value, "SCT", meaning)


def _category_of(type_code: Any) -> Any | None:
    """The CID 7150 category of a SNOMED CT type code, from the CID it is listed in; ``None`` when unlisted."""
    from pydicom.sr._cid_dict import cid_concepts

    def listed(cid: int) -> bool:
        keywords = cid_concepts.get(cid, {}).get("SCT", [])
        return any(c is not None and c.value == type_code.value for c in map(_sct_code, keywords))

    if type_code.scheme_designator != "SCT":
        return None
    for cid in _CATEGORY_CIDS:
        if listed(cid):
            return _category(cid)
    if any(listed(cid) for cid in _ANATOMY_CIDS):
        return _category(7192)
    return None


def _sct_type(name: str) -> Any | None:
    """The SNOMED CT code whose pydicom keyword is the class name in CamelCase ("caudate_nucleus" →
    ``codes.SCT.CaudateNucleus``), with a leading left/right dropped and British spellings tried."""
    words = name.replace("_", " ").replace("-", " ").lower().split()
    candidates = [words]
    if words and words[0] in ("left", "right", "l", "r"):
        candidates.append(words[1:])
    spellings = {"tumour": "tumor", "oesophagus": "esophagus", "haemorrhage": "hemorrhage", "oedema": "edema"}
    candidates += [[spellings.get(w, w) for w in c] for c in list(candidates)]
    for c in candidates:
        keyword = "".join(w.capitalize() for w in c)
        code = _sct_code(keyword) if keyword and keyword.isidentifier() else None
        if code is not None:
            return code
    return None


def segment_codes(
    segment_names: Sequence[str] | Mapping[int, str], class_codes: Mapping[str, Any] | None = None
) -> dict[int, tuple[Any, Any]]:
    """``{label value: (category, type)}`` pydicom codes of each non-background class, for :func:`write_dicom_seg`.

    In order: an explicit entry of ``class_codes`` (by class name: ``[value, scheme, meaning]`` for the type, or
    ``{"category": [...], "type": [...]}``); the SNOMED CT code named like the class in pydicom's code dictionary
    (``codes.SCT.Liver``), with its category from the DICOM list it belongs to (CID 7191-7198; Physical Object when
    it is in none); else a code of the private scheme ``PRIVATE_SCHEME`` (value: the label value, meaning: the class
    name) in category Physical Object, so a viewer shows the class name, never a generic "Tissue". The CLI's
    DICOM-SEG and the SEGs MONAI Label saves (``monai_resunet.label.seg_codes``) both code classes through this
    function.

    Args:
        segment_names: class names by label value, background first, or ``{label value: name}``.
        class_codes: explicit codes by class name (a bundle's ``class_codes`` model property).

    Example::

        segment_codes(["background", "liver"])[1]  # (Code 91723000 Anatomical Structure, Code 10200004 Liver)
        segment_codes(["background", "lesion a"], {"lesion a": ["52988006", "SCT", "Lesion"]})
    """
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    names = dict(segment_names) if isinstance(segment_names, Mapping) else dict(enumerate(segment_names))
    explicit = {str(k).lower(): v for k, v in (class_codes or {}).items()}
    out: dict[int, tuple[Any, Any]] = {}
    for value, name in names.items():
        if int(value) == 0:
            continue
        spec = explicit.get(str(name).lower())
        if spec is not None:
            if isinstance(spec, Mapping) and "type" in spec:
                type_code = _code_of(spec["type"], f"class_codes[{name!r}]")
                category = spec.get("category")
                category = _code_of(category, f"class_codes[{name!r}]") if category else _category_of(type_code)
            else:
                type_code = _code_of(spec, f"class_codes[{name!r}]")
                category = _category_of(type_code)
            out[int(value)] = (category or codes.SCT.Tissue, type_code)
            continue
        type_code = _sct_type(str(name))
        category = _category_of(type_code) if type_code is not None else None
        if type_code is None:
            category, type_code = _category(7193), Code(str(int(value)), PRIVATE_SCHEME, str(name)[:64])
        elif category is None:  # a SNOMED CT type missing from pydicom's (older) CID lists: still coded as such
            category = _category(7193)
        out[int(value)] = (category, type_code)
    return out


def check_dicom_seg_source(source: PathLike, series_uid: str | None = None) -> DicomSeries:
    """Check, before any inference, that ``source`` can be referenced by a DICOM-SEG: a DICOM file or series
    folder whose images carry a FrameOfReferenceUID. Raises ``ValueError`` naming the input and the reason.

    Args:
        source: the input to segment.
        series_uid: the series to pick from a folder.

    Example::

        check_dicom_seg_source("/data/patient1/CT")  # ValueError for scan.nrrd: not a DICOM source
    """
    from monai_resunet.data.dicom_series import DicomReadError, _looks_like_dicom

    p = Path(os.fspath(source))
    if p.is_file() and not _looks_like_dicom(str(p))[0] and full_suffix(p) not in (".dcm", ".dicom", ".ima"):
        raise ValueError(
            f"{p}: --format dicom-seg needs a DICOM source (a DICOM-SEG references the source images and their "
            f"frame of reference); this input is a {full_suffix(p) or 'non-DICOM'} file: use --format nifti/nrrd."
        )
    try:
        series = read_dicom_series(p, series_uid)
    except DicomReadError as e:
        raise ValueError(f"--format dicom-seg: {e}") from None
    if not str(series.first.get("FrameOfReferenceUID", "") or "").strip():
        raise ValueError(
            f"{p}: --format dicom-seg needs a DICOM source with a frame of reference, and this series has no "
            "FrameOfReferenceUID; use --format nifti/nrrd/mha."
        )
    return series


def remove_partial_files(folder: PathLike, names: Sequence[str]) -> list[Path]:
    """Delete the temporary files :func:`monai_resunet.atomic_files.atomic_target` leaves for ``names`` in
    ``folder`` when a run is killed mid-write (``.<name>.<id>.partial<ext>``); returns what it removed.

    Example::

        remove_partial_files("out", ["case1_seg.nii.gz"])  # before a re-run of a killed batch
    """
    folder = Path(os.fspath(folder))
    removed = []
    for name in names:
        for stale in folder.glob(f".{name}.*.partial*"):
            stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


def write_dicom_seg(
    label: Any,
    source: PathLike | Sequence[Dataset] | DicomSeries,
    path: PathLike,
    segment_names: Sequence[str] | Mapping[int, str],
    affine: Any = None,
    series_uid: str | None = None,
    segment_codes: Mapping[int, tuple[Any, Any]] | None = None,
    class_codes: Mapping[str, Any] | None = None,
    series_description: str = "ResUNet segmentation",
    series_number: int = 900,
    manufacturer: str = "monai_resunet",
    manufacturer_model_name: str = "ResUNet",
    software_versions: str | None = None,
    device_serial_number: str = "0",
    algorithm_name: str = "monai_resunet ResUNet",
    omit_empty_frames: bool = True,
) -> Path:
    """Write a label map as a DICOM Segmentation (BINARY, one segment per non-background class), atomically.

    Args:
        label: label map on the source series' grid: a ``MetaTensor`` (its affine is used to undo any
            reorientation, e.g. ``Orientation("RAS")``) or an array in :class:`DicomSeriesReader`'s (x, y, z) =
            (column, row, slice) layout; with or without a channel of size 1.
        source: the source series: folder or file, its datasets (headers suffice), or a :class:`DicomSeries`.
        path: ``.dcm`` file to write.
        segment_names: class names by label value, background first (``["background", "liver", "tumour"]``,
            as in MSD ``dataset.json`` and bundle metadata), or ``{label value: name}``; value 0 is never written.
        affine: RAS affine of ``label`` (overrides a MetaTensor's).
        series_uid: series to pick when ``source`` is a folder holding several.
        segment_codes: ``{label value: (category, type)}`` codes (pydicom ``Code``); default: :func:`segment_codes`
            of ``segment_names`` and ``class_codes`` (SNOMED CT by class name, else a private code).
        class_codes: explicit codes by class name, see :func:`segment_codes`.
        series_description, series_number, manufacturer, manufacturer_model_name, software_versions,
            device_serial_number: the SEG's series and equipment attributes.
        algorithm_name: AlgorithmName of every segment (AUTOMATIC, family "Artificial Intelligence").
        omit_empty_frames: leave out frames without any labelled pixel (highdicom's default).

    Returns:
        the written path.

    Example::

        write_dicom_seg(pred, "/data/patient1/CT", "out/patient1_seg.dcm", ["background", "liver", "tumour"])
        seg = highdicom.seg.segread("out/patient1_seg.dcm")
    """
    path = Path(os.fspath(path)).expanduser()
    try:
        import highdicom as hd
        from pydicom.sr.codedict import codes
    except ImportError as e:
        raise ImportError(f"{path}: writing DICOM-SEG needs highdicom: pip install 'monai_resunet[dicom]'.") from e

    if isinstance(source, DicomSeries):
        series = source
    elif isinstance(source, (str, os.PathLike)):
        series = read_dicom_series(source, series_uid)
    else:
        series = DicomSeries.from_datasets(list(source))
    arr, aff = _label_and_affine(label, affine, path, need_affine=False)
    if arr.ndim == 2 and series.spatial_shape[2] == 1:
        arr, aff = arr[..., None], None  # a 2D label of a one-slice source: same grid by construction
    if aff is not None:
        arr = _onto_source_grid(arr, aff, series, path)
    elif arr.shape != series.spatial_shape:
        raise ValueError(
            f"{path}: label shape {arr.shape} differs from the source series' (columns, rows, slices) "
            f"{series.spatial_shape}."
        )
    arr = _label_dtype(arr, path)

    names = dict(segment_names) if isinstance(segment_names, Mapping) else dict(enumerate(segment_names))
    names = {int(k): str(v) for k, v in names.items() if int(k) != 0}
    present = [int(v) for v in np.unique(arr) if v != 0]
    unnamed = [v for v in present if v not in names]
    if unnamed:
        raise ValueError(f"{path}: label value(s) {unnamed} have no entry in segment_names {segment_names!r}.")
    numbers = sorted(names)
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"{path}: segment_names must name label values 1..N without gaps, got {numbers}.")

    from monai_resunet import __version__

    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, family=codes.cid7162.ArtificialIntelligence, version=__version__
    )
    derived = globals()["segment_codes"](names, class_codes)  # the parameter shadows the function
    descriptions = []
    for number in numbers:
        category, prop_type = (segment_codes or derived).get(number, derived[number])
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=names[number][:64],  # LO: 64 characters at most
                segmented_property_category=category,
                segmented_property_type=prop_type,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
            )
        )
    # (column, row, slice) -> (slice, row, column): SEG frames are 2D (rows, columns) images, one per slice
    frames = arr.transpose(2, 1, 0)
    if series.is_multiframe:
        # one multi-frame source: SEG frame f must match source frame f, in the file's (unsorted) frame order
        in_file_order = np.zeros_like(frames)
        for k, (_, f) in enumerate(series.slices):
            in_file_order[f] = frames[k]
        frames = in_file_order
    # single-frame sources: frame k of pixel_array lies on series.datasets[k] (sorted the same way)
    try:
        seg = hd.seg.Segmentation(
            source_images=list(series.datasets),
            pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=manufacturer,
            manufacturer_model_name=manufacturer_model_name,
            software_versions=software_versions or __version__,
            device_serial_number=device_serial_number,
            series_description=series_description,
            omit_empty_frames=omit_empty_frames and bool(present),  # an all-empty label still gets its frames
        )
    except Exception as e:
        raise ValueError(f"{path}: highdicom cannot build the segmentation ({type(e).__name__}: {e}).") from e
    try:
        with atomic_target(path) as tmp:
            seg.save_as(tmp)
    except Exception as e:
        raise LabelWriteError(f"{path}: writing the DICOM-SEG failed ({type(e).__name__}: {e}).") from e
    return path
