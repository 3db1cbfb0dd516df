"""Synthetic DICOM for the I/O tests: small series and enhanced multi-frame files with known geometry, by pydicom.

Every slice holds a distinct pattern (value = f(slice, row, column)), so a test can check that voxel (x, y, z) of
a reader's output came from row y, column x of the z-th slice along the normal.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"

# an oblique orientation: rows rotated 20 degrees about z, columns tilted 15 degrees out of the axial plane
_a, _b = np.radians(20.0), np.radians(15.0)
OBLIQUE_ROW = np.array([np.cos(_a), np.sin(_a), 0.0])
OBLIQUE_COL = np.cross(np.array([0.0, 0.0, 1.0]), OBLIQUE_ROW) * np.cos(_b) + np.array([0.0, 0.0, -np.sin(_b)])
OBLIQUE_COL /= np.linalg.norm(OBLIQUE_COL)
OBLIQUE = tuple(OBLIQUE_ROW.tolist() + OBLIQUE_COL.tolist())
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def pattern(n_slices: int, rows: int, cols: int, offset: int = 0) -> np.ndarray:
    """(slice, row, column) uint16 values that differ between every slice, row and column."""
    k, r, c = np.meshgrid(np.arange(n_slices), np.arange(rows), np.arange(cols), indexing="ij")
    return (offset + 1000 * k + 37 * r + c).astype(np.uint16)


def _ds(v) -> str:
    return f"{float(v):.10g}"  # DS values: at most 16 characters


@dataclass
class SynthSeries:
    folder: Path
    files: list[Path]  # in slice order (along the normal)
    sop_uids: list[str]  # in slice order
    series_uid: str
    study_uid: str
    for_uid: str
    stored: np.ndarray  # (slice, row, column) stored values, slice order
    positions: np.ndarray  # (slices, 3) LPS, slice order
    orientation: tuple
    pixel_spacing: tuple  # (row spacing, column spacing)
    rescale: tuple  # (slope, intercept)


def base_dataset(sop_class: str, sop_uid: str, study_uid: str, series_uid: str, for_uid: str,
                 modality: str = "MR", series_number: int = 1, transfer_syntax: str = ExplicitVRLittleEndian,
                 ) -> FileDataset:  # fmt: skip
    """Patient, study, series and SOP modules highdicom expects of a source image."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Synth^Patient", "SYNTH001", "19700101", "O"
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime, ds.StudyID = study_uid, "20240101", "120000", "1"
    ds.ReferringPhysicianName, ds.AccessionNumber = "", ""
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.Modality = series_uid, series_number, modality
    ds.SeriesDescription = f"synthetic series {series_number}"
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = for_uid, ""
    ds.Manufacturer = "synth"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    return ds


def write_series(
    folder: Path,
    n_slices: int = 6,
    rows: int = 12,
    cols: int = 10,
    pixel_spacing: tuple = (0.8, 0.7),
    gaps: list[float] | float = 2.5,
    orientation: tuple = OBLIQUE,
    origin: tuple = (-30.0, 12.5, 40.0),
    shift_per_slice: tuple = (0.0, 0.0, 0.0),
    rescale: tuple = (1.0, 0.0),
    series_number: int = 1,
    study_uid: str | None = None,
    for_uid: str | None = None,
    prefix: str = "IM",
    shuffle: bool = True,
    reverse_instance_numbers: bool = True,
    value_offset: int = 0,
    seed: int = 0,
) -> SynthSeries:
    """Write a single-frame series into ``folder``; positions go along the normal by ``gaps`` (+ a tilt shift).

    File names are shuffled against the slice order and InstanceNumber runs opposite to the positions, so only a
    reader that sorts by position along the normal gets the order right. SpacingBetweenSlices and SliceThickness
    are written with wrong values on purpose (as real scanners do).
    """
    folder.mkdir(parents=True, exist_ok=True)
    study_uid, for_uid, series_uid = study_uid or generate_uid(), for_uid or generate_uid(), generate_uid()
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    normal = np.cross(row, col)
    steps = [gaps] * (n_slices - 1) if np.isscalar(gaps) else list(gaps)
    along = np.concatenate([[0.0], np.cumsum(steps)])
    positions = (
        np.asarray(origin) + along[:, None] * normal + np.arange(n_slices)[:, None] * np.asarray(shift_per_slice)
    )
    stored = pattern(n_slices, rows, cols, value_offset)
    order = list(range(n_slices))
    rng = random.Random(seed)
    names = [f"{prefix}{i:04d}.dcm" for i in range(n_slices)]
    if shuffle:
        rng.shuffle(names)
    files, sop_uids = [], []
    for k in order:
        sop_uid = generate_uid()
        ds = base_dataset(MR_IMAGE_STORAGE, sop_uid, study_uid, series_uid, for_uid, series_number=series_number)
        ds.InstanceNumber = n_slices - k if reverse_instance_numbers else k + 1
        ds.ImagePositionPatient = [_ds(v) for v in positions[k]]
        ds.ImageOrientationPatient = [_ds(v) for v in orientation]
        ds.PixelSpacing = [_ds(v) for v in pixel_spacing]
        ds.SliceThickness, ds.SpacingBetweenSlices = "1.0", "1.0"  # lies: the positions say otherwise
        ds.Rows, ds.Columns = rows, cols
        if rescale != (1.0, 0.0):
            ds.RescaleSlope, ds.RescaleIntercept = _ds(rescale[0]), _ds(rescale[1])
        ds.PixelData = stored[k].tobytes()
        path = folder / names[k]
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
        sop_uids.append(sop_uid)
    return SynthSeries(folder, files, sop_uids, series_uid, study_uid, for_uid, stored, positions,
                       tuple(orientation), tuple(pixel_spacing), tuple(rescale))  # fmt: skip


def write_enhanced(
    path: Path,
    n_frames: int = 5,
    rows: int = 8,
    cols: int = 9,
    pixel_spacing: tuple = (0.9, 0.6),
    gap: float = 3.0,
    orientation: tuple = OBLIQUE,
    origin: tuple = (10.0, -20.0, 5.0),
    rescale: tuple = (2.0, -100.0),
    seed: int = 1,
) -> SynthSeries:
    """Write an enhanced MR multi-frame file whose frames are stored in shuffled order (functional groups)."""
    study_uid, for_uid, series_uid, sop_uid = generate_uid(), generate_uid(), generate_uid(), generate_uid()
    ds = base_dataset(ENHANCED_MR_IMAGE_STORAGE, sop_uid, study_uid, series_uid, for_uid)
    normal = np.cross(np.asarray(orientation[:3]), np.asarray(orientation[3:]))
    positions = np.asarray(origin) + (np.arange(n_frames) * gap)[:, None] * normal
    stored = pattern(n_frames, rows, cols)
    frame_order = list(range(n_frames))
    random.Random(seed).shuffle(frame_order)  # frame i of the file holds slice frame_order[i]
    ds.NumberOfFrames, ds.Rows, ds.Columns, ds.InstanceNumber = n_frames, rows, cols, 1
    shared = Dataset()
    ori, meas, pvt = Dataset(), Dataset(), Dataset()
    ori.ImageOrientationPatient = [_ds(v) for v in orientation]
    meas.PixelSpacing, meas.SliceThickness = [_ds(v) for v in pixel_spacing], "1.0"
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = _ds(rescale[0]), _ds(rescale[1]), "US"
    shared.PlaneOrientationSequence = DicomSequence([ori])
    shared.PixelMeasuresSequence = DicomSequence([meas])
    shared.PixelValueTransformationSequence = DicomSequence([pvt])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    for k in frame_order:
        item, pos, content = Dataset(), Dataset(), Dataset()
        pos.ImagePositionPatient = [_ds(v) for v in positions[k]]
        content.InStackPositionNumber = k + 1
        item.PlanePositionSequence = DicomSequence([pos])
        item.FrameContentSequence = DicomSequence([content])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    ds.PixelData = stored[frame_order].tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return SynthSeries(path.parent, [path], [sop_uid], series_uid, study_uid, for_uid, stored, positions,
                       tuple(orientation), tuple(pixel_spacing), tuple(rescale))  # fmt: skip
