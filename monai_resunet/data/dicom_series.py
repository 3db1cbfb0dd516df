"""DICOM series reading with exact geometry: a MONAI ``ImageReader`` for series folders and single DICOM files.

MONAI's own readers leave gaps for real-world DICOM folders: ``PydicomReader`` stacks every file of a folder (a
second series or a README breaks it: "all input arrays must have the same shape"), orders slices by
``InstanceNumber`` and takes the slice spacing from the z coordinate only; ``ITKReader`` needs ``itk``.
highdicom's ``get_volume_from_series`` is exact but refuses any series that is not perfectly regular, and uses
``SpacingBetweenSlices`` as a hint, which real scanners fill with the wrong value. :class:`DicomSeriesReader`
(pydicom only) instead:

- groups a folder's files by ``SeriesInstanceUID``, ignores non-DICOM and non-image files, and picks the series
  given by ``series_uid`` or else the largest image series (logging which one it chose and what it skipped);
- orders slices by ``ImagePositionPatient`` projected on the slice normal, takes the slice step from the
  positions, keeps oblique orientations exactly, and puts the volume on the same world grid as SimpleITK's
  ``ImageSeriesReader`` (whose ``ForceOrthogonalDirectionOff`` grid it follows when the stack is tilted);
- warns (logger ``monai_resunet``) about uneven spacing, missing slices and gantry tilt;
- reads enhanced multi-frame files (per-frame functional groups) and single 2D files as one-slice volumes;
- applies ``RescaleSlope``/``RescaleIntercept`` (float32 output when they are not the identity);
- raises :class:`DicomReadError` (a ``ValueError``) naming the path and the problem, including which decoder
  package to install for a compressed transfer syntax.

Output follows MONAI's reader conventions (``ITKReader``/``PydicomReader``): the array is indexed (x, y, z) =
(column, row, slice), the affine maps these indices to RAS world coordinates (DICOM's LPS with x and y negated),
and the meta dict holds ``affine``, ``original_affine``, ``spatial_shape``, ``space`` and ``dicom_*`` identifiers.

Importing this module registers the reader under ``"dicomseriesreader"`` in MONAI's ``SUPPORTED_READERS``, so
``LoadImage(reader="DicomSeriesReader")`` works; it is registered with the lowest priority, so MONAI's automatic
reader choice is unchanged unless :func:`register_dicom_series_reader` is called with ``preferred=True``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.config import PathLike
from monai.data.image_reader import ImageReader, _copy_compatible_dict, _stack_images
from monai.data.utils import affine_to_spacing, orientation_ras_lps
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple
from pydicom.dataset import Dataset
from pydicom.uid import UID

__all__ = [
    "DicomReadError",
    "DicomSeries",
    "DicomSeriesReader",
    "read_dicom_series",
    "read_dicom_series_datasets",
    "register_dicom_series_reader",
    "input_summary",
]

logger = logging.getLogger("monai_resunet")

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
# Modalities of objects that are not images of the patient to segment (an RT dose grid has Rows/Columns too), with
# what they are, for the message that refuses them.
NON_IMAGE_MODALITIES = {
    "SEG": "a segmentation",
    "RTSTRUCT": "radiotherapy structure contours",
    "RTPLAN": "a radiotherapy plan",
    "RTDOSE": "a radiotherapy dose grid",
    "RTRECORD": "a radiotherapy treatment record",
    "SR": "a structured report",
    "PR": "a presentation state",
    "KO": "a key object selection",
    "REG": "a registration",
    "DOC": "an encapsulated document",
}

# What to pip install to decode a transfer syntax, for the error message (pydicom's ``missing_dependencies`` names
# plugins and versions, not pip packages).
_J2K = "pip install pylibjpeg pylibjpeg-openjpeg (or: pip install python-gdcm)"
_JPEG = "pip install pylibjpeg pylibjpeg-libjpeg (or: pip install python-gdcm)"
_JPEG_LOSSY = "pip install pylibjpeg pylibjpeg-libjpeg (or: pip install pillow, or: pip install python-gdcm)"
_JPEG_LS = "pip install pylibjpeg pylibjpeg-libjpeg (or: pip install pyjpegls, or: pip install python-gdcm)"
_HTJ2K = "pip install pylibjpeg pylibjpeg-openjpeg"
_DECODER_HINTS = {
    "1.2.840.10008.1.2.4.50": _JPEG_LOSSY,  # JPEG baseline
    "1.2.840.10008.1.2.4.51": _JPEG_LOSSY,  # JPEG extended
    "1.2.840.10008.1.2.4.57": _JPEG,  # JPEG lossless
    "1.2.840.10008.1.2.4.70": _JPEG,  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80": _JPEG_LS,  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": _JPEG_LS,  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": _J2K,  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": _J2K,  # JPEG 2000
    "1.2.840.10008.1.2.4.92": _J2K,  # JPEG 2000 multi-component lossless
    "1.2.840.10008.1.2.4.93": _J2K,  # JPEG 2000 multi-component
    "1.2.840.10008.1.2.4.201": _HTJ2K,  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202": _HTJ2K,  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203": _HTJ2K,  # HTJ2K
    "1.2.840.10008.1.2.5": "pip install pylibjpeg pylibjpeg-rle",  # RLE (pydicom decodes it natively too)
}


class DicomReadError(ValueError):
    """A DICOM file or folder that cannot be read as an image volume; the message names the path and why."""


def _f(values: Any, n: int, what: str, path: str) -> np.ndarray:
    """``values`` (DS multi-value) as ``n`` finite floats, or a :class:`DicomReadError` naming ``what``."""
    try:
        arr = np.asarray([float(v) for v in ensure_tuple(values)], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DicomReadError(f"{path}: {what} is not numeric ({values!r}).") from e
    if arr.shape != (n,) or not np.isfinite(arr).all():
        raise DicomReadError(f"{path}: {what} must be {n} finite numbers, got {values!r}.")
    return arr


def _num(value: Any, default: float) -> float:
    """A DS/IS value as float; empty, missing or malformed values (common in real headers) give ``default``."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if np.isfinite(out) and out != 0.0 else default


def _rescale_of(item: Dataset) -> tuple[float, float]:
    slope = _num(item.get("RescaleSlope"), 1.0)  # a zero slope is a broken header, not a request to blank
    intercept = _num(item.get("RescaleIntercept"), 0.0)
    return slope, intercept


def _functional_group(ds: Dataset, frame: int, name: str) -> Dataset | None:
    """Item of functional group ``name`` for ``frame``: per-frame first, then shared (enhanced multi-frame)."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame) and name in per_frame[frame] and per_frame[frame][name]:
        return per_frame[frame][name][0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and name in shared[0] and shared[0][name]:
        return shared[0][name][0]
    return None


def _is_multiframe(ds: Dataset) -> bool:
    """Several frames, or an enhanced image (its geometry lives in functional groups even with one frame)."""
    return _num_frames(ds) > 1 or "PerFrameFunctionalGroupsSequence" in ds


def _num_frames(ds: Dataset) -> int:
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def _decoder_hint(tsyntax: UID) -> str:
    hint = _DECODER_HINTS.get(str(tsyntax))
    if hint is None:
        try:
            from pydicom.pixels import get_decoder

            missing = get_decoder(tsyntax).missing_dependencies
        except Exception:  # no decoder at all for this syntax (e.g. MPEG video): nothing to suggest
            missing = []
        hint = f"one of the pydicom plugins: {'; '.join(missing)}" if missing else "no known decoder"
    return hint


def _decoder_available(tsyntax: UID) -> bool:
    """Whether an installed decoder handles ``tsyntax``: pydicom 3's decoder registry, or pydicom 2's pixel data
    handlers (the MONAI Label environment needs pydicom < 3). ``NotImplementedError`` when pydicom has no decoder
    for the syntax at all."""
    try:
        from pydicom.pixels import get_decoder
    except ImportError:  # pydicom 2
        from pydicom import config

        handlers = [h for h in config.pixel_data_handlers if h.supports_transfer_syntax(tsyntax)]
        if not handlers:
            raise NotImplementedError(f"no pixel data handler supports {tsyntax}") from None
        return any(h.is_available() for h in handlers)
    return get_decoder(tsyntax).is_available


def _decode_pixels(ds: Dataset, path: str) -> np.ndarray:
    """``ds.pixel_array`` with the failure modes turned into :class:`DicomReadError` messages."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DicomReadError(f"{path}: no pixel data (truncated file, or not an image).")
    meta = getattr(ds, "file_meta", None)
    tsyntax = UID(meta.get("TransferSyntaxUID", "1.2.840.10008.1.2.1")) if meta is not None else None
    if tsyntax is not None and tsyntax.is_compressed:
        hint = _decoder_hint(tsyntax)
        try:
            available = _decoder_available(tsyntax)
        except NotImplementedError:
            raise DicomReadError(
                f"{path}: pixel data use transfer syntax {tsyntax.name} ({tsyntax}), which pydicom cannot decode."
            ) from None
        if not available:
            raise DicomReadError(
                f"{path}: pixel data are compressed with {tsyntax.name} ({tsyntax}) and no decoder for it is "
                f"installed; install one: {hint}."
            )
        try:
            return ds.pixel_array
        except Exception as e:
            raise DicomReadError(
                f"{path}: cannot decode {tsyntax.name} ({tsyntax}) pixel data ({type(e).__name__}: {e}); the "
                f"file may be corrupt, or the installed decoder cannot handle it; other decoders: {hint}."
            ) from None
    if "PixelData" in ds:
        # check the length ourselves: pydicom's message for a short buffer does not say "truncated"
        try:
            bits = int(ds.BitsAllocated)
            expected = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * _num_frames(ds)
        except (AttributeError, TypeError, ValueError):
            raise DicomReadError(f"{path}: Rows, Columns or BitsAllocated missing or invalid.") from None
        expected = expected * bits // 8 if bits >= 8 else (expected + 7) // 8
        got = len(ds.PixelData)
        if got < expected:
            raise DicomReadError(
                f"{path}: pixel data hold {got} bytes, {expected} expected (Rows x Columns x frames x "
                f"BitsAllocated/8): the file is truncated or corrupt."
            )
    try:
        return ds.pixel_array
    except Exception as e:
        raise DicomReadError(f"{path}: cannot read pixel data ({type(e).__name__}: {e}).") from None


def _read_header(path: str, force: bool = False) -> Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, force=force)
    except Exception as e:
        raise DicomReadError(f"{path}: not a readable DICOM file ({type(e).__name__}: {e}).") from None


def _looks_like_dicom(path: str) -> tuple[bool, bool]:
    """(is DICOM candidate, has the DICM preamble). Preamble-less files (old ACR-NEMA style) are candidates
    when they start with a group 0x0002 or 0x0008 tag, so a README or .DS_Store is never parsed."""
    try:
        with open(path, "rb") as fp:
            head = fp.read(132)
    except OSError:
        return False, False
    if len(head) == 132 and head[128:132] == b"DICM":
        return True, True
    return head[:2] in (b"\x02\x00", b"\x08\x00"), False


def _is_mosaic(ds: Dataset) -> bool:
    """A Siemens mosaic: ImageType holds MOSAIC (the CSA header's NumberOfImagesInMosaic says how many tiles)."""
    image_type = [str(v).upper() for v in ensure_tuple(ds.get("ImageType", []) or [])]
    return "MOSAIC" in image_type


def _modality(ds: Dataset) -> str:
    return str(ds.get("Modality", "") or "").strip().upper()


def _is_image(ds: Dataset) -> bool:
    return "Rows" in ds and "Columns" in ds and _modality(ds) not in NON_IMAGE_MODALITIES


def _not_an_image(ds: Dataset) -> str:
    """Why :func:`_is_image` refused ``ds``: its modality (an RT dose grid has Rows/Columns), or no pixel matrix."""
    modality = _modality(ds)
    if modality in NON_IMAGE_MODALITIES:
        return f"Modality {modality}: {NON_IMAGE_MODALITIES[modality]}, not an image series to segment."
    return f"not an image (Modality {modality or '?'}, no Rows/Columns)."


@dataclass
class DicomSeries:
    """One DICOM image volume: its datasets sorted along the slice normal, and its geometry.

    Build it with :func:`read_dicom_series` (from a folder or file) or :meth:`from_datasets`. ``datasets`` may hold
    headers only (read with ``stop_before_pixels``); :meth:`pixel_array` then reads the pixels from ``files``.

    Attributes:
        path: folder or file the series came from (for messages).
        datasets: single-frame datasets in slice order, or the one multi-frame dataset.
        files: file of each dataset ("" for in-memory datasets).
        slices: for each slice in order, ``(dataset index, frame index)`` (frame index 0 for single-frame files).
        affine_lps: 4x4 map from (column, row, slice) indices to DICOM LPS patient coordinates (mm).
        rows, columns: in-plane size.
        rescale: ``(slope, intercept)`` of each slice in order.
    """

    path: str
    datasets: list[Dataset]
    files: list[str]
    slices: list[tuple[int, int]]
    affine_lps: np.ndarray
    rows: int
    columns: int
    rescale: list[tuple[float, float]] = field(default_factory=list)
    skipped_series: list[str] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line naming what was read and what was skipped, e.g. ``series 1.2.3 'AX T1' (120 files); skipped 1
        other series, 2 files (not DICOM)``."""
        ds = self.first
        desc = str(ds.get("SeriesDescription", "")).strip()
        n = len({f for f in self.files if f}) or len(self.datasets)
        frames = f", {len(self.slices)} frames" if self.is_multiframe else ""
        line = f"series {ds.get('SeriesInstanceUID', '?')}{f' {desc!r}' if desc else ''} ({n} file(s){frames})"
        skipped = []
        if self.skipped_series:
            skipped.append(f"{len(self.skipped_series)} other series")
        if self.skipped_files:
            reasons: dict[str, int] = {}
            for item in self.skipped_files:
                reason = item[item.rfind(" (") + 2 : -1] if item.endswith(")") and " (" in item else "skipped"
                reasons[reason] = reasons.get(reason, 0) + 1
            skipped += [f"{k} file(s) ({r})" for r, k in reasons.items()]
        return line + (f"; skipped {', '.join(skipped)}" if skipped else "")

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """(columns, rows, slices): MONAI's (x, y, z) order."""
        return self.columns, self.rows, len(self.slices)

    @property
    def first(self) -> Dataset:
        return self.datasets[0]

    @property
    def is_multiframe(self) -> bool:
        return len(self.datasets) == 1 and _is_multiframe(self.datasets[0])

    @property
    def has_rescale(self) -> bool:
        return any(s != 1.0 or i != 0.0 for s, i in self.rescale)

    def affine(self, lps_to_ras: bool = True) -> np.ndarray:
        """4x4 map from (x, y, z) = (column, row, slice) indices to RAS (default) or LPS world coordinates."""
        return orientation_ras_lps(self.affine_lps.copy()) if lps_to_ras else self.affine_lps.copy()

    @classmethod
    def from_datasets(
        cls,
        datasets: Sequence[Dataset],
        files: Sequence[str] | None = None,
        path: str = "",
        spacing_rtol: float = 0.02,
        tilt_tolerance_deg: float = 0.1,
    ) -> DicomSeries:
        """Sort ``datasets`` (one series: single-frame images, or one multi-frame image) and derive the geometry.

        Args:
            datasets: the series' datasets in any order (headers suffice).
            files: their files, same order; ``None`` for in-memory datasets.
            path: folder or file named in messages.
            spacing_rtol: slice gaps further than this fraction from the median gap count as uneven spacing.
            tilt_tolerance_deg: a stack tilted more than this from the slice normal is kept sheared (gantry tilt);
                below it the grid is orthogonal, exactly as SimpleITK's ``ImageSeriesReader`` builds it.

        Example::

            series = DicomSeries.from_datasets([pydicom.dcmread(f) for f in files], files)
            image = series.pixel_array()  # (columns, rows, slices)
        """
        datasets = list(datasets)
        files = [str(f) for f in files] if files is not None else [""] * len(datasets)
        path = path or (os.path.dirname(files[0]) if files and files[0] else "<datasets>")
        if not datasets:
            raise DicomReadError(f"{path}: no DICOM images.")
        names = [f or f"{path}[{i}]" for i, f in enumerate(files)]
        for ds, name in zip(datasets, names):
            if not _is_image(ds):
                raise DicomReadError(f"{name}: {_not_an_image(ds)}")
            if int(ds.get("SamplesPerPixel", 1)) != 1:
                raise DicomReadError(
                    f"{name}: {ds.SamplesPerPixel} samples per pixel ({ds.get('PhotometricInterpretation', '')}); "
                    "only single-sample (grayscale) images make a volume."
                )
            photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
            if photometric not in ("MONOCHROME1", "MONOCHROME2", ""):
                # PALETTE COLOR stores indices into a colour table: segmenting them as intensities is meaningless
                raise DicomReadError(
                    f"{name}: PhotometricInterpretation {photometric}: a colour image, not grayscale intensities "
                    "(MONOCHROME1/MONOCHROME2); it cannot be segmented as a scan."
                )
            if _is_mosaic(ds):
                raise DicomReadError(
                    f"{name}: a Siemens mosaic (several slices tiled in one image, ImageType MOSAIC); un-mosaic the "
                    "series first, e.g. dcm2niix -z y -o OUT_DIR SERIES_DIR, and segment the NIfTI it writes."
                )
        multi = [n for ds, n in zip(datasets, names) if _is_multiframe(ds)]
        if multi and len(datasets) > 1:
            raise DicomReadError(
                f"{path}: the series mixes {len(multi)} multi-frame file(s) (e.g. {multi[0]}) with other files; "
                "only one multi-frame file or a set of single-frame files makes a volume."
            )
        rows, columns = int(datasets[0].Rows), int(datasets[0].Columns)
        for ds, name in zip(datasets, names):
            if (int(ds.Rows), int(ds.Columns)) != (rows, columns):
                raise DicomReadError(
                    f"{path}: inconsistent slice shapes: {rows}x{columns} in {names[0]} but {ds.Rows}x{ds.Columns} "
                    f"in {name}."
                )

        if multi:
            positions, orientations, spacings, rescale, slab = _multiframe_geometry(datasets[0], names[0])
            refs = [(0, k) for k in range(len(positions))]
        else:
            positions, orientations, spacings, rescale = [], [], [], []
            no_geometry = any(
                "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds for ds in datasets
            )
            if no_geometry and len(datasets) > 1:
                raise DicomReadError(
                    f"{path}: slices without ImagePositionPatient/ImageOrientationPatient cannot be stacked into a "
                    "volume."
                )
            for ds, name in zip(datasets, names):
                if no_geometry:  # a lone 2D image without patient geometry (e.g. secondary capture)
                    logger.warning(f"{name}: no ImagePositionPatient/ImageOrientationPatient; identity orientation.")
                    positions.append(np.zeros(3))
                    orientations.append(np.array([1.0, 0, 0, 0, 1.0, 0]))
                else:
                    positions.append(_f(ds.ImagePositionPatient, 3, "ImagePositionPatient", name))
                    orientations.append(_f(ds.ImageOrientationPatient, 6, "ImageOrientationPatient", name))
                ps = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing") or (1.0, 1.0)
                spacings.append(_f(ps, 2, "PixelSpacing", name))
                rescale.append(_rescale_of(ds))
            first = datasets[0]
            slab = _num(first.get("SpacingBetweenSlices"), _num(first.get("SliceThickness"), 1.0))
            refs = [(i, 0) for i in range(len(datasets))]

        for o, r in zip(orientations[1:], refs[1:]):
            if not np.allclose(o, orientations[0], atol=1e-4):
                raise DicomReadError(
                    f"{path}: slices have different orientations ({orientations[0].round(4).tolist()} in "
                    f"{names[refs[0][0]]} vs {o.round(4).tolist()} in {names[r[0]]}); not one volume."
                )
        for s, r in zip(spacings[1:], refs[1:]):
            if not np.allclose(s, spacings[0], rtol=1e-4):
                raise DicomReadError(
                    f"{path}: slices have different pixel spacings ({spacings[0].tolist()} vs {s.tolist()} in "
                    f"{names[r[0]]}); not one volume."
                )
        order, affine_lps = _stack_geometry(
            np.asarray(positions), orientations[0], spacings[0], slab, path, spacing_rtol, tilt_tolerance_deg
        )
        if multi:
            return cls(path, datasets, files, [refs[k] for k in order], affine_lps, rows, columns,
                       [rescale[k] for k in order])  # fmt: skip
        return cls(
            path,
            [datasets[k] for k in order],
            [files[k] for k in order],
            [(i, 0) for i in range(len(order))],
            affine_lps,
            rows,
            columns,
            [rescale[k] for k in order],
        )

    def pixel_array(self, rescale: bool = True) -> np.ndarray:
        """The volume as a (columns, rows, slices) array: stored values, or rescaled ones as float32.

        Args:
            rescale: apply RescaleSlope/RescaleIntercept when they are not the identity (output float32).
        """
        frames: dict[int, np.ndarray] = {}
        for i in sorted({d for d, _ in self.slices}):
            ds = self.datasets[i]
            name = self.files[i] or f"{self.path}[{i}]"
            if "PixelData" not in ds and self.files[i]:
                try:
                    ds = pydicom.dcmread(self.files[i])
                except Exception as e:
                    raise DicomReadError(f"{name}: cannot read ({type(e).__name__}: {e}).") from None
            arr = _decode_pixels(ds, name)
            if arr.ndim != (3 if _num_frames(ds) > 1 else 2) or arr.shape[-2:] != (self.rows, self.columns):
                raise DicomReadError(
                    f"{name}: pixel array of shape {arr.shape}, expected {self.rows}x{self.columns} per frame."
                )
            frames[i] = arr
        volume = np.stack([frames[d][f] if frames[d].ndim == 3 else frames[d] for d, f in self.slices])
        if rescale and self.has_rescale:
            slope = np.asarray([s for s, _ in self.rescale], dtype=np.float32)[:, None, None]
            intercept = np.asarray([i for _, i in self.rescale], dtype=np.float32)[:, None, None]
            volume = volume.astype(np.float32) * slope + intercept
        # (slice, row, column) -> (column, row, slice): MONAI's (x, y, z), as ITKReader returns it
        return np.ascontiguousarray(volume.transpose(2, 1, 0))

    def identifiers(self) -> dict[str, Any]:
        """``dicom_*`` meta entries identifying the source (for DICOM-SEG references and provenance)."""
        ds = self.first
        return {
            "dicom_series_uid": str(ds.get("SeriesInstanceUID", "")),
            "dicom_study_uid": str(ds.get("StudyInstanceUID", "")),
            "dicom_frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "")),
            "dicom_modality": str(ds.get("Modality", "")),
            "dicom_sop_class_uid": str(ds.get("SOPClassUID", "")),
            "dicom_series_description": str(ds.get("SeriesDescription", "")),
            "dicom_files": list(self.files),
            "dicom_read_summary": self.summary(),
        }


def _multiframe_geometry(ds: Dataset, name: str):
    """Per-frame positions, orientations, pixel spacings and rescale of an enhanced multi-frame image."""
    n = _num_frames(ds)
    positions, orientations, spacings, rescale = [], [], [], []
    for k in range(n):
        pos = _functional_group(ds, k, "PlanePositionSequence")
        ori = _functional_group(ds, k, "PlaneOrientationSequence")
        if pos is None or ori is None or "ImagePositionPatient" not in pos or "ImageOrientationPatient" not in ori:
            raise DicomReadError(
                f"{name}: multi-frame image without PlanePositionSequence/PlaneOrientationSequence for frame {k + 1} "
                "(not an enhanced multi-frame volume)."
            )
        positions.append(_f(pos.ImagePositionPatient, 3, f"frame {k + 1} ImagePositionPatient", name))
        orientations.append(_f(ori.ImageOrientationPatient, 6, f"frame {k + 1} ImageOrientationPatient", name))
        measures = _functional_group(ds, k, "PixelMeasuresSequence")
        ps = (measures.get("PixelSpacing") if measures is not None else None) or ds.get("PixelSpacing") or (1, 1)
        spacings.append(_f(ps, 2, f"frame {k + 1} PixelSpacing", name))
        pvt = _functional_group(ds, k, "PixelValueTransformationSequence")
        rescale.append(_rescale_of(pvt if pvt is not None else ds))
    measures = _functional_group(ds, 0, "PixelMeasuresSequence")
    slab = 1.0
    if measures is not None:
        slab = _num(measures.get("SpacingBetweenSlices"), _num(measures.get("SliceThickness"), 1.0))
    return positions, orientations, spacings, rescale, slab


def _stack_geometry(
    positions: np.ndarray,
    iop: np.ndarray,
    pixel_spacing: np.ndarray,
    single_slice_spacing: float,
    path: str,
    spacing_rtol: float,
    tilt_tolerance_deg: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Slice order along the normal and the LPS affine of (column, row, slice) indices; warns on odd stacks."""
    row_cos, col_cos = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    normal = np.cross(row_cos, col_cos)
    if np.linalg.norm(normal) < 1e-3:
        raise DicomReadError(f"{path}: ImageOrientationPatient {iop.tolist()} has parallel row and column cosines.")
    normal /= np.linalg.norm(normal)
    proj = positions @ normal
    # the normal, not InstanceNumber or file names: those do not follow the anatomy in real data
    order = np.argsort(proj, kind="stable")
    positions, proj = positions[order], proj[order]
    n = len(order)
    if n == 1:
        step = normal * single_slice_spacing
    else:
        gaps = np.diff(proj)
        dup = np.flatnonzero(gaps < 1e-3)
        if dup.size:
            raise DicomReadError(
                f"{path}: {dup.size + 1 if dup.size == 1 else dup.size} slices share a position (e.g. "
                f"{positions[dup[0]].round(3).tolist()}): the series holds several volumes (time points, echoes "
                "or repeated acquisitions); pick one series or split it."
            )
        _warn_spacing(gaps, path, spacing_rtol)
        total = positions[-1] - positions[0]
        along = float(total @ normal)
        tilt = float(np.degrees(np.arctan2(np.linalg.norm(total - along * normal), along)))
        if tilt > tilt_tolerance_deg:
            # keep each slice where it is: a sheared grid, as SimpleITK's ForceOrthogonalDirectionOff
            step = total / (n - 1)
            logger.warning(
                f"{path}: slice positions are not along the slice normal (gantry tilt of {tilt:.2f} degrees); the "
                "affine is sheared so every slice keeps its true position. Resample (e.g. Spacing) before tools "
                "that assume orthogonal axes."
            )
        else:
            # SimpleITK ImageSeriesReader (ForceOrthogonalDirection on): along the normal, |last - first| / (n - 1)
            step = normal * float(np.linalg.norm(total)) / (n - 1)
    affine = np.eye(4)
    affine[:3, 0] = row_cos * pixel_spacing[1]  # column index moves along the row direction, by column spacing
    affine[:3, 1] = col_cos * pixel_spacing[0]  # row index moves along the column direction, by row spacing
    affine[:3, 2] = step
    affine[:3, 3] = positions[0]
    return order, affine


def _warn_spacing(gaps: np.ndarray, path: str, rtol: float) -> None:
    median = float(np.median(gaps))
    tol = max(rtol * median, 1e-4)
    multiples = np.rint(gaps / median)
    missing = (multiples >= 2) & (np.abs(gaps - multiples * median) <= tol * multiples)
    uneven = ~missing & (np.abs(gaps - median) > tol)
    mean = float(gaps.sum() / len(gaps))
    if missing.any():
        n_missing = int((multiples[missing] - 1).sum())
        where = ", ".join(f"after slice {i} ({gaps[i]:.4g} mm)" for i in np.flatnonzero(missing)[:5])
        logger.warning(
            f"{path}: about {n_missing} slice(s) missing: gaps {where} where the median spacing is {median:.4g} mm. "
            f"The volume uses the mean spacing {mean:.4g} mm (as SimpleITK does), so slices are misplaced by up "
            "to a slice near the gaps."
        )
    if uneven.any():
        logger.warning(
            f"{path}: uneven slice spacing: gaps from {gaps.min():.4g} to {gaps.max():.4g} mm (median {median:.4g} "
            f"mm). The volume uses the mean spacing {mean:.4g} mm (as SimpleITK does)."
        )


def _is_incomplete_image(ds: Dataset) -> bool:
    """An image storage object whose header stops before Rows/Columns: a truncated or corrupt file."""
    meta = getattr(ds, "file_meta", None)
    sop_class = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
    return bool(sop_class) and "Image Storage" in UID(sop_class).name and ("Rows" not in ds or "Columns" not in ds)


def _scan_folder(folder: Path) -> tuple[dict[str, list[tuple[str, Dataset]]], list[str], dict[str, list[str]]]:
    """Image headers of ``folder``'s files grouped by SeriesInstanceUID, descriptions of skipped files, and the
    truncated image files by SeriesInstanceUID ("" when even that is missing)."""
    groups: dict[str, list[tuple[str, Dataset]]] = {}
    skipped: list[str] = []
    broken: dict[str, list[str]] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not entry.is_file():
            continue
        candidate, preamble = _looks_like_dicom(entry.path)
        if not candidate:
            skipped.append(f"{entry.name} (not DICOM)")
            continue
        try:
            ds = _read_header(entry.path, force=not preamble)
        except DicomReadError as e:
            logger.warning(f"skipping {e}")
            skipped.append(f"{entry.name} (unreadable)")
            continue
        if _is_incomplete_image(ds):
            broken.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(entry.path)
            skipped.append(f"{entry.name} (truncated)")
            continue
        if not _is_image(ds) or "SeriesInstanceUID" not in ds:
            skipped.append(f"{entry.name} (DICOM {ds.get('Modality', 'without image')}, not an image)")
            continue
        groups.setdefault(str(ds.SeriesInstanceUID), []).append((entry.path, ds))
    if broken.get(""):
        logger.warning(f"{folder}: skipping truncated or corrupt DICOM file(s) of unknown series: {broken['']}")
    return groups, skipped, broken


def _describe(uid: str, members: list[tuple[str, Dataset]]) -> str:
    ds = members[0][1]
    frames = sum(_num_frames(d) for _, d in members)
    desc = str(ds.get("SeriesDescription", "")).strip()
    what = f"{ds.get('Modality', '?')}{', ' + repr(desc) if desc else ''}"
    return f"{uid} ({what}, {len(members)} file(s), {frames} frame(s))"


def read_dicom_series(
    path: PathLike, series_uid: str | None = None, spacing_rtol: float = 0.02, tilt_tolerance_deg: float = 0.1
) -> DicomSeries:
    """Read the headers of one DICOM series (a folder, or one file) and sort it into a volume.

    Args:
        path: a folder (its files are grouped by SeriesInstanceUID, non-DICOM files ignored) or one DICOM file.
        series_uid: the series to read from a folder; ``None`` picks the series with the most image frames.
        spacing_rtol: see :meth:`DicomSeries.from_datasets`.
        tilt_tolerance_deg: see :meth:`DicomSeries.from_datasets`.

    Example::

        series = read_dicom_series("/data/patient1/CT")
        volume, affine = series.pixel_array(), series.affine()  # (x, y, z) and its RAS affine
    """
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise DicomReadError(f"{p}: no such file or folder.")
    if p.is_file():
        if p.stat().st_size == 0:  # pydicom's force=True would make an empty dataset of it
            raise DicomReadError(f"{p}: empty file (0 bytes).")
        candidate, preamble = _looks_like_dicom(str(p))
        if not candidate and p.suffix.lower() not in DICOM_SUFFIXES:
            raise DicomReadError(f"{p}: not a DICOM file (no DICM preamble).")
        ds = _read_header(str(p), force=not preamble)
        if "SegmentSequence" in ds:
            raise DicomReadError(f"{p}: a DICOM-SEG object, not an image; read it with highdicom.seg.segread.")
        own = str(ds.get("SeriesInstanceUID", ""))
        if series_uid is not None and own != series_uid:
            held = _describe(own or "?", [(str(p), ds)])
            raise DicomReadError(f"{p}: no series {series_uid} (--series-uid); the file belongs to {held}.")
        return DicomSeries.from_datasets([ds], [str(p)], str(p), spacing_rtol, tilt_tolerance_deg)
    groups, skipped, broken = _scan_folder(p)
    if not groups:
        what = f"{len(skipped)} file(s), none a DICOM image: {', '.join(skipped[:5])}" if skipped else "it is empty"
        subfolders = sum(1 for e in os.scandir(p) if e.is_dir())
        if subfolders:  # DICOM exports often nest series in subfolders; we read one folder, not a tree
            what += f"; it has {subfolders} subfolder(s): pass the folder of one series"
        raise DicomReadError(f"{p}: no DICOM image series in the folder ({what}).")
    if series_uid is not None:
        if series_uid not in groups:
            held = "; ".join(_describe(u, m) for u, m in groups.items())
            raise DicomReadError(f"{p}: no series {series_uid} (--series-uid); the folder holds {held}.")
        chosen = series_uid
    else:
        # the largest series: the main acquisition rather than a localizer or a derived image
        chosen = max(groups, key=lambda u: (sum(_num_frames(d) for _, d in groups[u]), len(groups[u]), u))
    if broken.get(chosen):
        raise DicomReadError(
            f"{p}: file(s) of the chosen series are truncated or corrupt (the header ends before Rows/Columns): "
            f"{', '.join(broken[chosen])}."
        )
    others = [_describe(u, m) for u, m in groups.items() if u != chosen]
    logger.info(
        f"{p}: reading series {_describe(chosen, groups[chosen])}"
        + (f"; skipped series {'; '.join(others)}" if others else "")
        + (f"; skipped files {', '.join(skipped[:10])}{' ...' if len(skipped) > 10 else ''}" if skipped else "")
    )
    files, datasets = zip(*groups[chosen])
    series = DicomSeries.from_datasets(datasets, files, str(p), spacing_rtol, tilt_tolerance_deg)
    series.skipped_series, series.skipped_files = others, list(skipped)
    return series


def _check_nifti_affine(path: Path) -> None:
    """Refuse a NIfTI whose header affine is not finite: readers fall back to an identity grid without a word, and
    the label would be written on a grid that is not the scan's (header only; unreadable files are left to the
    reader, whose message names the problem)."""
    try:
        import nibabel as nib

        affine = np.asarray(nib.load(str(path)).affine, dtype=np.float64)
    except Exception:
        return
    if not np.isfinite(affine).all():
        raise DicomReadError(
            f"{path}: the NIfTI header's affine (sform/qform) holds NaN or infinite values, so the scan has no "
            "position in space; fix the header (e.g. nibabel's set_sform) before segmenting."
        )


def input_summary(path: PathLike, series_uid: str | None = None) -> str:
    """One line saying what will be read from ``path``: for a DICOM folder or file the series (UID, description,
    file count) and what was skipped (:meth:`DicomSeries.summary`, from the headers only), for other files their
    type. Raises :class:`DicomReadError` for a DICOM input that cannot be read, before any pixel is decoded.

    Args:
        path: an input of the segmentation CLI.
        series_uid: the series to pick from a folder.

    Example::

        input_summary("/data/patient1")  # "series 1.2.840... 'AX T1' (120 file(s)); skipped 1 file(s) (not DICOM)"
    """
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        if p.is_symlink():
            raise DicomReadError(f"{p}: a broken symlink or a symlink loop (its target does not resolve).")
        raise DicomReadError(f"{p}: no such file or folder.")
    if p.is_file() and not os.access(p, os.R_OK):
        raise DicomReadError(f"{p}: not readable (permission denied).")
    if p.is_file() and not _looks_like_dicom(str(p))[0] and p.suffix.lower() not in DICOM_SUFFIXES:
        name = p.name.lower()
        kind = next((k for k in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd") if name.endswith(k)), p.suffix)
        if kind in (".nii", ".nii.gz"):
            _check_nifti_affine(p)
        return f"{kind or 'image'} file ({p.stat().st_size} bytes)"
    return read_dicom_series(p, series_uid).summary()


def read_dicom_series_datasets(
    path: PathLike, series_uid: str | None = None, with_pixels: bool = False
) -> list[Dataset]:
    """The datasets of one DICOM series in slice order (along the normal; see :func:`read_dicom_series`).

    Args:
        path: folder or file.
        series_uid: series to pick from a folder; ``None`` for the largest.
        with_pixels: read the pixel data too (headers suffice for referencing the series, e.g. in DICOM-SEG).

    Example::

        datasets = read_dicom_series_datasets("/data/patient1/CT")
        uids = [ds.SOPInstanceUID for ds in datasets]  # slice 0 first
    """
    series = read_dicom_series(path, series_uid)
    if not with_pixels:
        return list(series.datasets)
    out = []
    for ds, f in zip(series.datasets, series.files):
        try:
            out.append(pydicom.dcmread(f))
        except Exception as e:
            raise DicomReadError(f"{f}: cannot read ({type(e).__name__}: {e}).") from None
    return out


@dataclass
class _DeferredError:
    """A :class:`DicomReadError` from ``read``, raised by ``get_data`` where ``LoadImage`` does not swallow it."""

    error: DicomReadError


class DicomSeriesReader(ImageReader):
    """MONAI ``ImageReader`` for DICOM series folders and single DICOM files (incl. enhanced multi-frame).

    The array is indexed (x, y, z) = (column, row, slice along the normal); the affine maps it to RAS world
    coordinates (``affine_lps_to_ras=True``, MONAI's convention) on the same grid SimpleITK's ``ImageSeriesReader``
    reads. Besides ``affine``, ``original_affine``, ``spatial_shape``, ``space``, ``spacing`` and
    ``original_channel_dim``, the meta dict holds ``dicom_series_uid``, ``dicom_study_uid``,
    ``dicom_frame_of_reference_uid``, ``dicom_modality``, ``dicom_sop_class_uid``, ``dicom_series_description``
    and ``dicom_files`` (the chosen files in slice order).

    Args:
        series_uid: SeriesInstanceUID to read from folders; ``None`` reads the largest image series.
        channel_dim: as in MONAI's readers; ``None`` marks the output as having no channel.
        affine_lps_to_ras: return the affine in RAS (``True``, like MONAI's other readers) or DICOM's LPS.
        rescale: apply RescaleSlope/RescaleIntercept (output float32 when they are not the identity).
        spacing_rtol: slice gaps further than this fraction from the median gap are logged as uneven.
        tilt_tolerance_deg: stacks tilted more than this keep a sheared affine (gantry tilt), logged.

    Example::

        from monai.transforms import Compose, EnsureChannelFirst, LoadImage, Orientation
        load = Compose([LoadImage(reader=DicomSeriesReader(), image_only=True), EnsureChannelFirst(),
                        Orientation("RAS")])
        image = load("/data/patient1/CT")  # MetaTensor (1, X, Y, Z)
        # in a bundle config: "LoadImaged", "reader": "DicomSeriesReader" (after "$import monai_resunet")
    """

    def __init__(
        self,
        series_uid: str | None = None,
        channel_dim: str | int | None = None,
        affine_lps_to_ras: bool = True,
        rescale: bool = True,
        spacing_rtol: float = 0.02,
        tilt_tolerance_deg: float = 0.1,
    ):
        super().__init__()
        self.series_uid = series_uid
        self.channel_dim = float("nan") if channel_dim == "no_channel" else channel_dim
        self.affine_lps_to_ras = affine_lps_to_ras
        self.rescale = rescale
        self.spacing_rtol = spacing_rtol
        self.tilt_tolerance_deg = tilt_tolerance_deg

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """True for folders, ``.dcm``/``.dicom``/``.ima`` files and files with the DICOM preamble.

        Args:
            filename: file or folder name, or a sequence of them (all must qualify).
        """
        for name in ensure_tuple(filename):
            p = Path(os.fspath(name))
            if p.is_dir() or p.suffix.lower() in DICOM_SUFFIXES:
                continue
            if not (p.is_file() and _looks_like_dicom(str(p))[1]):
                return False
        return True

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs) -> DicomSeries | list[DicomSeries]:
        """Read and sort the series headers of each folder or file (pixels are read by :meth:`get_data`).

        A path that is not a folder or DICOM file raises :class:`DicomReadError` here, so ``LoadImage`` can try
        its other readers. Problems of an actual DICOM input are raised by :meth:`get_data` instead: ``LoadImage``
        swallows exceptions from ``read`` and falls back to other readers (``PydicomReader`` would then stack the
        broken folder anyway, or bury the reason in a list of tracebacks).

        Args:
            data: a folder or file, or a sequence of them (stacked as channels by ``get_data``; they must share
                one grid).
            kwargs: ``series_uid`` overrides the constructor's.
        """
        series_uid = kwargs.get("series_uid", self.series_uid)
        names = ensure_tuple(data)
        out: list = []
        for name in names:
            if not Path(os.fspath(name)).expanduser().exists():
                raise DicomReadError(f"{name}: no such file or folder.")
            if not self.verify_suffix(name):
                raise DicomReadError(f"{name}: not a DICOM file or folder.")
            try:
                out.append(read_dicom_series(name, series_uid, self.spacing_rtol, self.tilt_tolerance_deg))
            except DicomReadError as e:
                out.append(_DeferredError(e))
        return out if len(names) > 1 else out[0]

    def get_data(self, img: DicomSeries | Sequence[DicomSeries]) -> tuple[np.ndarray, dict]:
        """The (x, y, z) array (stacked at a new first axis for several series) and its meta dict.

        Args:
            img: what :meth:`read` returned.
        """
        arrays: list[np.ndarray] = []
        compatible_meta: dict = {}
        for series in ensure_tuple(img):
            if isinstance(series, _DeferredError):
                raise series.error
            array = series.pixel_array(rescale=self.rescale)
            affine = series.affine(self.affine_lps_to_ras)
            meta: dict = series.identifiers()
            meta[MetaKeys.ORIGINAL_AFFINE] = affine
            meta[MetaKeys.AFFINE] = affine.copy()
            meta[MetaKeys.SPATIAL_SHAPE] = np.asarray(array.shape)
            meta[MetaKeys.SPACE] = SpaceKeys.RAS if self.affine_lps_to_ras else SpaceKeys.LPS
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = float("nan") if self.channel_dim is None else self.channel_dim
            meta["spacing"] = affine_to_spacing(affine, r=3)
            arrays.append(array)
            try:
                _copy_compatible_dict(meta, compatible_meta)
            except RuntimeError as e:
                raise DicomReadError(f"{series.path}: cannot stack with the other inputs as channels: {e}") from None
        return _stack_images(arrays, compatible_meta), compatible_meta


def register_dicom_series_reader(preferred: bool = False) -> None:
    """Make ``LoadImage(reader="DicomSeriesReader")`` find the reader by name (done on import).

    Args:
        preferred: also let ``LoadImage()`` without a ``reader`` pick it for folders and DICOM files (it is then
            tried before MONAI's readers). By default it is tried last, so MONAI's automatic choice is unchanged.

    Example::

        register_dicom_series_reader(preferred=True)
        image = LoadImage(image_only=True)("/data/patient1/CT")  # now read by DicomSeriesReader
    """
    from monai.transforms.io.array import SUPPORTED_READERS

    key = "dicomseriesreader"
    others = {k: v for k, v in SUPPORTED_READERS.items() if k != key}
    # LoadImage tries registered readers from last to first: first place = lowest priority
    ordered = {**others, key: DicomSeriesReader} if preferred else {key: DicomSeriesReader, **others}
    SUPPORTED_READERS.clear()  # in place: LoadImage holds a reference to this very dict
    SUPPORTED_READERS.update(ordered)


register_dicom_series_reader()
