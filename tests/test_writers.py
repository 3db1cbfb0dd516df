"""Label-map writers: NIfTI/NRRD/MHA round trips (shape, affine, dtype, values), atomic writes, input checks, and
DICOM-SEG content and references (segments, series, frame of reference, per-frame source images, pixels)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from dicom_synth import write_enhanced, write_series
from monai.data import MetaTensor
from monai.transforms import EnsureChannelFirst, LoadImage, Orientation, SaveImaged

from monai_resunet.data import DicomSeriesReader
from monai_resunet.inference import LabelMapWriter, LabelWriteError, write_dicom_seg, write_label_map

hd = pytest.importorskip("highdicom")

# an oblique RAS affine with anisotropic voxels (no shear)
_rot = np.array([[0.8, -0.6, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]]) @ np.array(
    [[1.0, 0.0, 0.0], [0.0, np.cos(0.3), -np.sin(0.3)], [0.0, np.sin(0.3), np.cos(0.3)]]
)
AFFINE = np.eye(4)
AFFINE[:3, :3] = _rot @ np.diag([0.7, 0.9, 2.5])
AFFINE[:3, 3] = (-12.0, 30.5, 7.25)


def make_label(shape=(7, 6, 5), top: int = 3, seed: int = 0) -> MetaTensor:
    rng = np.random.default_rng(seed)
    return MetaTensor(torch.as_tensor(rng.integers(0, top + 1, (1, *shape)), dtype=torch.int64), affine=AFFINE)


def sitk_affine_ras(image: sitk.Image) -> np.ndarray:
    """SimpleITK's LPS geometry as MONAI's RAS affine of (x, y, z) indices."""
    a = np.eye(4)
    a[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    a[:3, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ a


@pytest.mark.parametrize("name,isal", [("seg.nii.gz", True), ("seg.nii.gz", False), ("seg.nii", True)])
def test_nifti_round_trip(tmp_path, monkeypatch, name, isal):
    import monai_resunet.inference.writers as writers

    if isal and not writers.has_isal:
        pytest.skip("isal is not installed")
    monkeypatch.setattr(writers, "has_isal", isal)  # ISA-L's gzip, or nibabel's own
    label = make_label()
    out = write_label_map(label, tmp_path / "sub" / name)
    img = nib.load(out)
    assert img.shape == (7, 6, 5) and img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.affine, AFFINE, atol=1e-5)
    np.testing.assert_allclose(img.get_qform(), AFFINE, atol=1e-5)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), label[0].numpy())
    assert img.header.get_intent()[0] == "label"
    back = LoadImage(image_only=True, dtype=None)(str(out))  # MONAI's own reader agrees
    np.testing.assert_allclose(back.affine.numpy(), AFFINE, atol=1e-5)
    assert [p.name for p in out.parent.iterdir()] == [name]  # no temporary left behind


@pytest.mark.parametrize("name", ["seg.nrrd", "seg.mha"])
def test_sitk_formats_round_trip(tmp_path, name):
    label = make_label()
    out = write_label_map(label[0].numpy(), tmp_path / name, affine=AFFINE)  # array + affine, no channel
    img = sitk.ReadImage(str(out))
    assert img.GetSize() == (7, 6, 5) and img.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_allclose(sitk_affine_ras(img), AFFINE, atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img).transpose(2, 1, 0), label[0].numpy())


def test_uint16_for_many_labels_and_one_slice_volume_keeps_its_shape(tmp_path):
    label = np.zeros((4, 3, 1), np.int32)
    label[1, 2, 0] = 300
    out = write_label_map(label, tmp_path / "big.nii.gz", affine=AFFINE)
    img = nib.load(out)
    assert img.shape == (4, 3, 1) and img.get_data_dtype() == np.uint16
    assert np.asanyarray(img.dataobj)[1, 2, 0] == 300


def test_2d_metatensor_is_written_as_a_2d_image(tmp_path):
    """MONAI keeps a 4×4 affine for 2D images; the spatial shape says it is (1, X, Y), not an X=1 volume."""
    affine = torch.tensor([[0.5, 0, 0, 10.0], [0, 0.8, 0, -4.0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float64)
    label = MetaTensor(torch.randint(0, 3, (1, 12, 9)), affine=affine, meta={"spatial_shape": (12, 9)})
    img = nib.load(write_label_map(label, tmp_path / "slice.nii.gz"))
    assert img.shape == (12, 9)
    np.testing.assert_allclose(img.header.get_zooms(), (0.5, 0.8))
    np.testing.assert_array_equal(np.asarray(img.dataobj), label[0].numpy())


def test_sheared_affine_goes_to_the_sform(tmp_path):
    sheared = AFFINE.copy()
    sheared[:3, 2] += (0.0, 0.6, 0.0)  # gantry tilt
    out = write_label_map(make_label(), tmp_path / "tilt.nii.gz", affine=sheared)
    img = nib.load(out)
    assert int(img.header["qform_code"]) == 0 and int(img.header["sform_code"]) == 1
    np.testing.assert_allclose(img.affine, sheared, atol=1e-5)
    mha = sitk.ReadImage(str(write_label_map(make_label(), tmp_path / "tilt.mha", affine=sheared)))
    np.testing.assert_allclose(sitk_affine_ras(mha), sheared, atol=1e-5)


@pytest.mark.parametrize(
    "label,kwargs,name,match",
    [
        (np.zeros((2, 4, 4, 4)), {"affine": AFFINE}, "a.nii.gz", "2 channels"),
        (np.full((4, 4, 4), 0.5), {"affine": AFFINE}, "a.nii.gz", "not integers"),
        (np.zeros((4, 4, 4), np.uint8), {}, "a.nii.gz", "no affine"),
        (np.zeros((4, 4, 4), np.uint8), {"affine": AFFINE}, "a.png", "unsupported"),
        (-np.ones((4, 4, 4)), {"affine": AFFINE}, "a.nrrd", "negative"),
    ],
)
def test_label_map_input_errors_name_the_path(tmp_path, label, kwargs, name, match):
    with pytest.raises(ValueError, match=match) as info:
        write_label_map(label, tmp_path / name, **kwargs)
    assert str(tmp_path / name) in str(info.value)
    assert not list(tmp_path.iterdir())


# where both NIfTI paths (nibabel's own save and the ISA-L stream) hand the image to nibabel
NIFTI_BACKEND = "nibabel.nifti1.Nifti1Image.to_file_map"


def half_write(img, filename=None, *args, **kwargs):
    """A backend that got half way, then died."""
    if not isinstance(filename, str):  # nibabel's to_file_map: both its own save and the ISA-L path end here
        holder = (filename or img.file_map)["image"]
        fp = holder.fileobj if holder.fileobj is not None else open(holder.filename, "wb")  # noqa: SIM115
        fp.write(b"partial")
        if holder.fileobj is None:
            fp.close()
    else:
        with open(filename, "wb") as fp:
            fp.write(b"partial")  # the backend got half way, then died
    raise OSError("disk full")


@pytest.mark.parametrize(
    "name,target",
    [("seg.nii.gz", NIFTI_BACKEND), ("seg.nii", NIFTI_BACKEND), ("seg.mha", "SimpleITK.WriteImage")],
)  # fmt: skip
def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch, name, target):

    monkeypatch.setattr(target, half_write)
    with pytest.raises(LabelWriteError, match="disk full") as info:
        write_label_map(make_label(), tmp_path / name)
    assert str(tmp_path / name) in str(info.value)
    assert not list(tmp_path.iterdir())  # no target, no temporary file
    # an existing output survives a failed overwrite untouched
    monkeypatch.undo()
    write_label_map(make_label(seed=1), tmp_path / name)
    before = (tmp_path / name).read_bytes()
    monkeypatch.setattr(target, half_write)
    with pytest.raises(LabelWriteError):
        write_label_map(make_label(seed=2), tmp_path / name)
    assert (tmp_path / name).read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_save_imaged_with_label_map_writer(tmp_path, monkeypatch):
    """``SaveImaged(writer=LabelMapWriter)`` as the bundles' inference.json runs it: MONAI's file name, the same
    voxels and geometry as MONAI's own NibabelWriter, uint8 even with SaveImage's float32 default, atomic."""
    label = make_label((40, 30, 20))
    label.meta["filename_or_obj"] = str(tmp_path / "case_001.nii.gz")
    options = dict(output_postfix="seg", resample=False, separate_folder=False)
    SaveImaged("pred", output_dir=str(tmp_path / "ours"), writer=LabelMapWriter, **options)({"pred": label})
    SaveImaged("pred", output_dir=str(tmp_path / "monai"), output_dtype=np.uint8, **options)({"pred": label})
    ours, monai = (nib.load(tmp_path / folder / "case_001_seg.nii.gz") for folder in ("ours", "monai"))
    assert ours.get_data_dtype() == np.uint8 and ours.shape == monai.shape == (40, 30, 20)
    np.testing.assert_array_equal(np.asanyarray(ours.dataobj), np.asanyarray(monai.dataobj))
    np.testing.assert_allclose(ours.affine, monai.affine, atol=1e-6)

    monkeypatch.setattr(NIFTI_BACKEND, half_write)
    with pytest.raises(RuntimeError, match="disk full"):
        SaveImaged("pred", output_dir=str(tmp_path / "failed"), writer=LabelMapWriter, **options)({"pred": label})
    assert not list((tmp_path / "failed").iterdir())  # no partial output under the final name or a temporary one
    monkeypatch.undo()
    label.meta["original_affine"] = torch.eye(4)  # labels not on the input's grid: resampling was asked for
    with pytest.raises(RuntimeError, match="does not resample"):
        SaveImaged("pred", output_dir=str(tmp_path / "r"), writer=LabelMapWriter, resample=True)({"pred": label})


def test_fortran_order_write_is_the_same_file_content(tmp_path):
    label = make_label((33, 17, 9), top=200)
    write_label_map(label, tmp_path / "a.nii")
    reference = nib.Nifti1Image(label.numpy()[0].astype(np.uint8), AFFINE)
    assert np.array_equal(np.asanyarray(nib.load(tmp_path / "a.nii").dataobj), reference.get_fdata().astype(np.uint8))
    flipped = MetaTensor(torch.as_tensor(label.numpy()[:, ::-1].copy()), affine=AFFINE)  # other strides, same path
    write_label_map(flipped, tmp_path / "b.nii.gz")
    assert np.array_equal(np.asanyarray(nib.load(tmp_path / "b.nii.gz").dataobj), label.numpy()[0, ::-1])


@pytest.mark.parametrize("name", ["seg.nii.gz", "seg.nrrd"])
def test_label_of_a_dicom_series_lands_on_its_simpleitk_grid(tmp_path, name):
    s = write_series(tmp_path / "src")
    image = EnsureChannelFirst()(LoadImage(reader=DicomSeriesReader(), image_only=True)(str(tmp_path / "src")))
    label = MetaTensor(torch.zeros(image.shape, dtype=torch.uint8), meta=dict(image.meta))
    label[0, 3, 5, 2] = 1  # column 3, row 5 of the third slice along the normal
    written = sitk.ReadImage(str(write_label_map(label, tmp_path / name)))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "src")))
    dicom = reader.Execute()
    assert written.GetSize() == dicom.GetSize()
    np.testing.assert_allclose(written.GetOrigin(), dicom.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(written.GetSpacing(), dicom.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(written.GetDirection(), dicom.GetDirection(), atol=1e-5)
    assert written[3, 5, 2] == 1 and dicom[3, 5, 2] == s.stored[2, 5, 3]  # same voxel, same anatomy


# ---------------------------------------------------------------- DICOM-SEG


@pytest.fixture
def source(tmp_path):
    """Source folder: the oblique 6-slice series, a second smaller series and a README."""
    folder = tmp_path / "src"
    main = write_series(folder, prefix="IM")
    write_series(folder, n_slices=3, series_number=2, prefix="ZZ", study_uid=main.study_uid, for_uid=main.for_uid)
    (folder / "README").write_text("junk")
    return folder, main


def frame_refs(seg: pydicom.Dataset) -> list[tuple[str, int]]:
    """(referenced source SOPInstanceUID, segment number) of each SEG frame."""
    return [
        (
            f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID,
            int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber),
        )
        for f in seg.PerFrameFunctionalGroupsSequence
    ]


def test_dicom_seg_references_and_pixels(source, tmp_path):
    folder, main = source
    image = EnsureChannelFirst()(LoadImage(reader=DicomSeriesReader(), image_only=True)(str(folder)))
    label = np.zeros(image.shape, np.uint8)
    # (x, y, z) = (column, row, slice along the normal) in the reader's layout
    marks = {(3, 5, 2): 1, (7, 1, 4): 2, (0, 11, 4): 1}
    for (x, y, z), v in marks.items():
        label[0, x, y, z] = v
    pred = Orientation(axcodes="RAS")(MetaTensor(torch.as_tensor(label), meta=dict(image.meta)))
    assert not np.allclose(pred.affine.numpy(), image.affine.numpy())  # the writer has to undo the reorientation
    out = write_dicom_seg(pred, folder, tmp_path / "out" / "seg.dcm", ["background", "liver", "tumour"])

    ds = pydicom.dcmread(out)
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["liver", "tumour"]
    assert [int(s.SegmentNumber) for s in ds.SegmentSequence] == [1, 2]
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == main.series_uid
    assert ds.FrameOfReferenceUID == main.for_uid and ds.StudyInstanceUID == main.study_uid
    refs = frame_refs(ds)
    assert sorted(refs) == sorted({(main.sop_uids[z], v) for (_, _, z), v in marks.items()})
    pixels = ds.pixel_array.reshape(len(refs), ds.Rows, ds.Columns)
    for (x, y, z), v in marks.items():
        frame = refs.index((main.sop_uids[z], v))
        assert pixels[frame, y, x] == 1  # row y, column x of the frame on source slice z
    assert int(pixels.sum()) == len(marks)

    seg = hd.seg.segread(out)  # highdicom's own decoding agrees, per source image
    for (x, y, z), v in marks.items():
        per_source = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[main.sop_uids[z]], segment_numbers=[1, 2], combine_segments=True
        )
        assert per_source[0, y, x] == v


def test_dicom_seg_from_enhanced_multiframe_source(tmp_path):
    e = write_enhanced(tmp_path / "mf.dcm")
    label = np.zeros((9, 8, 5), np.uint8)  # (columns, rows, slices in position order)
    label[2, 6, 0] = label[4, 1, 3] = 1
    out = write_dicom_seg(label, tmp_path / "mf.dcm", tmp_path / "seg.dcm", {1: "sphere"})
    ds = pydicom.dcmread(out)
    positions = [
        np.asarray(f.PlanePositionSequence[0].ImagePositionPatient, float) for f in ds.PerFrameFunctionalGroupsSequence
    ]
    pixels = ds.pixel_array.reshape(len(positions), ds.Rows, ds.Columns)
    for x, y, z in [(2, 6, 0), (4, 1, 3)]:
        frame = int(np.argmin([np.linalg.norm(p - e.positions[z]) for p in positions]))
        np.testing.assert_allclose(positions[frame], e.positions[z], atol=1e-4)
        assert pixels[frame, y, x] == 1


def test_dicom_seg_errors_and_atomicity(source, tmp_path, monkeypatch):
    folder, _ = source
    target = tmp_path / "seg.dcm"
    shape = (10, 12, 6)
    with pytest.raises(ValueError, match=r"label value\(s\) \[3\]") as info:
        write_dicom_seg(np.full(shape, 3, np.uint8), folder, target, ["background", "a", "b"])
    assert str(target) in str(info.value)
    with pytest.raises(ValueError, match="differs from the source"):
        write_dicom_seg(np.zeros((10, 12, 5), np.uint8), folder, target, ["background", "a"])
    cropped = MetaTensor(torch.zeros(1, 10, 12, 5, dtype=torch.uint8),
                         affine=LoadImage(reader=DicomSeriesReader(), image_only=True)(str(folder)).affine)  # fmt: skip
    with pytest.raises(ValueError, match="Invertd"):
        write_dicom_seg(cropped, folder, target, ["background", "a"])

    def broken_save(self, *args, **kwargs):
        with open(args[0], "wb") as fp:
            fp.write(b"DICM partial")
        raise OSError("device lost")

    monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", broken_save)
    label = np.zeros(shape, np.uint8)
    label[1, 1, 1] = 1
    with pytest.raises(LabelWriteError, match="device lost"):
        write_dicom_seg(label, folder, target, ["background", "a"])
    assert not [p for p in tmp_path.iterdir() if p.is_file()]


def test_segment_codes_from_class_names_explicit_codes_and_fallback():
    from monai_resunet.inference.writers import PRIVATE_SCHEME, segment_codes

    names = ["background", "Liver", "caudate_nucleus", "left hippocampus", "tumour", "blob 7", "custom"]
    codes = segment_codes(names, {"custom": {"type": ["52988006", "SCT", "Lesion"]}})
    category, liver = codes[1]
    assert (liver.value, liver.scheme_designator, liver.meaning) == ("10200004", "SCT", "Liver")
    assert (category.value, category.meaning) == ("91723000", "Anatomical Structure")
    assert codes[2][1].value == "11000004" and codes[3][1].value == "5366008"  # caudate nucleus, hippocampus
    assert codes[4][0].meaning == "Morphologically Abnormal Structure" and codes[4][1].value == "108369006"
    # unknown name: a private code meaning the class name, never a generic "Tissue"
    assert codes[5][0].meaning == "Physical object"
    assert (codes[5][1].value, codes[5][1].scheme_designator, codes[5][1].meaning) == ("5", PRIVATE_SCHEME, "blob 7")
    assert codes[6][1].value == "52988006" and codes[6][0].meaning == "Morphologically Abnormal Structure"
    with pytest.raises(ValueError, match="custom"):
        segment_codes(["background", "custom"], {"custom": ["only-a-value"]})


def test_dicom_seg_segments_are_coded_per_class(source, tmp_path):
    folder, _ = source
    label = np.zeros((10, 12, 6), np.uint8)
    label[1, 1, 1], label[2, 2, 2] = 1, 2
    out = write_dicom_seg(label, folder, tmp_path / "seg.dcm", ["background", "liver", "blob"])
    segments = pydicom.dcmread(out).SegmentSequence
    liver, blob = segments[0], segments[1]
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    assert liver.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning == "Anatomical Structure"
    blob_type = blob.SegmentedPropertyTypeCodeSequence[0]
    assert (blob_type.CodeValue, blob_type.CodingSchemeDesignator, blob_type.CodeMeaning) == ("2", "99RESUNET", "blob")


def test_segment_codes_survive_ambiguous_pydicom_keywords(monkeypatch):
    """pydicom 2 (MONAI Label's environment) raises RuntimeError for a keyword naming several codes: that class gets
    the private code and the category lookup, which walks every keyword of a CID, still works."""
    from pydicom.sr.codedict import codes

    from monai_resunet.inference.writers import PRIVATE_SCHEME, segment_codes

    collection = type(codes.SCT)
    real = collection.__getattr__

    def ambiguous(self, name):
        if name == "DescendingAorta":
            raise RuntimeError("Multiple code values for 'DescendingAorta' found: 281130003, 32672002")
        return real(self, name)

    monkeypatch.setattr(collection, "__getattr__", ambiguous)
    out = segment_codes(["background", "descending aorta", "liver"])
    assert (out[1][1].scheme_designator, out[1][1].meaning) == (PRIVATE_SCHEME, "descending aorta")
    assert out[2][1].value == "10200004" and out[2][0].meaning == "Anatomical Structure"


def test_dicom_seg_source_is_checked_before_inference(source, tmp_path):
    from monai_resunet.inference.writers import check_dicom_seg_source

    folder, main = source
    assert check_dicom_seg_source(folder).first.SeriesInstanceUID == main.series_uid
    nrrd = tmp_path / "scan.nrrd"
    write_label_map(np.zeros((4, 4, 4), np.uint8), nrrd, affine=np.eye(4))
    with pytest.raises(ValueError, match=f"{nrrd}: --format dicom-seg needs a DICOM source"):
        check_dicom_seg_source(nrrd)
    s = write_series(tmp_path / "nofor", n_slices=2)
    for f in s.files:
        ds = pydicom.dcmread(f)
        del ds.FrameOfReferenceUID
        ds.save_as(f)
    with pytest.raises(ValueError, match="nofor: --format dicom-seg needs .* frame of reference.*FrameOfReferenceUID"):
        check_dicom_seg_source(tmp_path / "nofor")


def test_partial_files_of_a_killed_run_are_removed(tmp_path):
    from monai_resunet.inference.writers import remove_partial_files

    (tmp_path / ".a_seg.nii.gz.0123456789ab.partial.nii.gz").write_bytes(b"half")
    (tmp_path / "a_seg.nii.gz").write_bytes(b"done")
    (tmp_path / ".other.partial.txt").write_bytes(b"not ours")
    removed = remove_partial_files(tmp_path, ["a_seg.nii.gz", "b_seg.nii.gz"])
    assert [p.name for p in removed] == [".a_seg.nii.gz.0123456789ab.partial.nii.gz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.partial.txt", "a_seg.nii.gz"]
