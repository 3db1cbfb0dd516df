"""MONAI Label's DICOMweb datastore (a PACS such as Orthanc) with what the ResUNet app adds on top.

- **Series listed by modality**: MONAI Label 0.8.5 lists only the series matching its search filter (default
  ``{"Modality": "CT"}``); this one lists the series of each modality in ``modalities`` (the app's ``--conf
  modalities``, default ``CT,MR``), so MR series appear and SEG/SR objects never count as images.
- **Clear errors for unreadable series**: an unknown SeriesInstanceUID answers HTTP 404 and a series that is not a
  readable volume (no pixel data, slices of different sizes, a single 2D image, a conversion failure) answers HTTP
  422, each naming the series and the reason (MONAI Label answers a bare 500 otherwise); the failed download is
  removed from the cache so a corrected series is fetched again.
- **DICOM-SEG with class names and codes**: a saved final label (``PUT /datastore/label``) is stored in the PACS as
  a DICOM-SEG whose segments carry the model's class names and codes (``seg_codes``: the codes the CLI's DICOM-SEG
  writer gives), not MONAI Label's "unknown" placeholders. OHIF's raw ``label.bin`` is put on the image's grid first.
- **SEG back to label values by class name**: dcmqi numbers segments 1, 2, ... in the order written and MONAI Label
  reads segment numbers back as label values, so a SEG holding only class 2 would train as class 1; labels read
  from the PACS for training are mapped back through the segments' names to the model's class values.

Imports ``monailabel``: only for the MONAI Label environment (``pipelines/deploy/label_env.sh``).
"""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import SimpleITK as sitk
from cachetools import TTLCache, cached
from fastapi import HTTPException
from monailabel.config import settings
from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.datastore.local import LocalDatastore
from monailabel.datastore.utils.convert import binary_to_image
from monailabel.interfaces.datastore import DefaultLabelTag
from pydicom.dataset import Dataset

from monai_resunet.data.dicom_series import NON_IMAGE_MODALITIES  # never listed as images to segment
from monai_resunet.label.seg_codes import segment_attributes

__all__ = [
    "ResUNetDICOMWebDatastore",
    "check_series_files",
    "drop_command_group",
    "seg_to_class_values",
    "NON_IMAGE_MODALITIES",
]

logger = logging.getLogger(__name__)


def check_series_files(series_dir: str | os.PathLike) -> None:
    """Raise ``ValueError`` with the reason when the DICOM files in ``series_dir`` do not make one volume: none,
    objects without pixel data, slices of different sizes, or a single 2D image."""
    files = sorted(p for p in pathlib.Path(series_dir).iterdir() if p.is_file())
    if not files:
        raise ValueError("no instances in the series")
    sizes, frames = set(), 0
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as e:
            raise ValueError(f"instance {path.name} is not readable DICOM ({e})") from e
        if "Rows" not in ds or "Columns" not in ds:
            raise ValueError(
                f"instance {ds.get('SOPInstanceUID', path.name)} has no image (SOP class {ds.get('SOPClassUID', '?')})"
            )
        sizes.add((int(ds.Rows), int(ds.Columns)))
        frames += int(ds.get("NumberOfFrames", 1) or 1)
    if len(sizes) > 1:
        raise ValueError(f"slices of different sizes {sorted(sizes)} (rows, columns): not one volume")
    if frames < 2:
        raise ValueError("a single 2D image: the models segment volumes (2 slices or more)")


def drop_command_group(path: str | os.PathLike) -> bool:
    """Remove command-group elements (0000,xxxx) from a stored DICOM file (they belong to network messages, and
    DCMTK, hence dcmqi, refuses the file: the slice would be missing from the SEG). Returns whether it changed."""
    ds = pydicom.dcmread(path)
    tags = [tag for tag in ds.keys() if tag.group == 0]
    if not tags:
        return False
    for tag in tags:
        del ds[tag]
    tmp = f"{path}.tmp"
    ds.save_as(tmp)
    os.replace(tmp, path)
    return True


def seg_to_class_values(
    seg_file: str | os.PathLike, label_file: str | os.PathLike, class_names: Sequence[str], targets: Sequence[str]
) -> dict[int, int | None]:
    """Write ``label_file`` (a SEG read back as segment numbers, as MONAI Label does) to each of ``targets`` with
    the class values that the segments' labels name in ``class_names``; segments naming no class keep their number.
    Returns ``{segment number: class value or None}``.

    Example::

        seg_to_class_values("seg.dcm", "seg.nrrd", ["background", "brain", "lesion"], ["label.nrrd"])
    """
    seg = pydicom.dcmread(seg_file, stop_before_pixels=True)
    index = {str(n).lower(): i for i, n in enumerate(class_names)}
    mapping = {int(x.SegmentNumber): index.get(str(x.SegmentLabel).lower()) for x in seg.get("SegmentSequence", [])}
    unknown = sorted(k for k, v in mapping.items() if v is None)
    if unknown:
        logger.warning(f"{seg_file}: segments {unknown} name no class of the model; kept as they are")
    image = sitk.ReadImage(str(label_file))
    arr = sitk.GetArrayFromImage(image)
    out = arr.copy()
    for number, value in mapping.items():
        if value is not None and value != number:
            out[arr == number] = value
    remapped = sitk.GetImageFromArray(out)
    remapped.CopyInformation(image)
    for target in targets:
        sitk.WriteImage(remapped, str(target), True)
    return mapping


class ResUNetDICOMWebDatastore(DICOMWebDatastore):
    """``DICOMWebDatastore`` with series listed by modality, clear errors and coded DICOM-SEG (see the module).

    The app turns MONAI Label's datastore into this one (``__class__`` swap, same state) and calls
    :meth:`configure`.
    """

    modalities: Sequence[str] = ("CT", "MR")
    classes_of: Callable[[str | None], tuple[str, list[str], dict | None]] | None = None

    def configure(
        self, modalities: Sequence[str], classes_of: Callable[[str | None], tuple[str, list[str], dict | None]]
    ) -> None:
        """``modalities`` to list; ``classes_of(model or None)`` gives ``(model name, class names, class codes)``."""
        self.modalities = tuple(m.strip().upper() for m in modalities if m.strip())
        self.classes_of = classes_of

    # listing ----------------------------------------------------------------------------------------------------

    @cached(cache=TTLCache(maxsize=16, ttl=settings.MONAI_LABEL_DICOMWEB_CACHE_EXPIRY))
    def list_images(self) -> list[str]:
        base = {k: v for k, v in (self._search_filter or {}).items() if k != "Modality"}
        series: list[str] = []
        for modality in self.modalities:
            for ds in self._client.search_for_series(search_filters={**base, "Modality": modality}):
                uid = str(Dataset.from_json(ds)["SeriesInstanceUID"].value)
                if uid not in series:
                    series.append(uid)
        logger.debug(f"Series ({','.join(self.modalities)}): {len(series)}")
        return series

    # reading ----------------------------------------------------------------------------------------------------

    def _series_modality(self, series_uid: str) -> str | None:
        """The series' modality, or ``None`` when the PACS does not know the series."""
        for ds in self._client.search_for_series(search_filters={"SeriesInstanceUID": series_uid}):
            meta = Dataset.from_json(ds)
            if str(meta["SeriesInstanceUID"].value) == series_uid:
                return str(meta.get("Modality", ""))
        return None

    def get_image_uri(self, image_id: str) -> str:
        cached_nii = os.path.join(self._datastore.image_path(), f"{image_id}.nii.gz")
        if os.path.exists(cached_nii):
            return super().get_image_uri(image_id)
        modality = self._series_modality(image_id)
        if modality is None:
            raise HTTPException(status_code=404, detail=f"series {image_id}: not found in the PACS ({self.name()})")
        if modality.upper() in NON_IMAGE_MODALITIES:
            raise HTTPException(status_code=422, detail=f"series {image_id}: a {modality} object, not an image")
        image_dir = os.path.join(self._datastore.image_path(), image_id)
        try:
            if not os.path.isdir(image_dir) or not os.listdir(image_dir):
                self._download(image_id, image_dir)
            check_series_files(image_dir)
            uri = super().get_image_uri(image_id)
            if nib.load(uri).ndim != 3:
                raise ValueError(f"converted to a {nib.load(uri).ndim}D image, not a 3D volume")
            return uri
        except HTTPException:
            raise
        except Exception as e:
            shutil.rmtree(image_dir, ignore_errors=True)
            for stale in (cached_nii,):
                if os.path.exists(stale):
                    os.unlink(stale)
            reason = " ".join(str(e).split()) or type(e).__name__
            logger.error(f"series {image_id}: cannot be read: {reason}")
            raise HTTPException(status_code=422, detail=f"series {image_id}: cannot be read: {reason[-400:]}") from e

    def _download(self, image_id: str, image_dir: str) -> None:
        from monailabel.datastore.utils.dicom import dicom_web_download_series

        try:
            dicom_web_download_series(None, image_id, image_dir, self._client, self._fetch_by_frame)
        except Exception as e:
            raise ValueError(f"download from the PACS failed ({type(e).__name__}: {e})") from e
        for name in os.listdir(image_dir):
            drop_command_group(os.path.join(image_dir, name))

    def get_label_uri(self, label_id: str, label_tag: str, image_id: str = "") -> str:
        uri = super().get_label_uri(label_id, label_tag, image_id)
        if label_tag != DefaultLabelTag.FINAL or not image_id or not uri or self.classes_of is None:
            return uri
        stored = LocalDatastore.get_label_uri(self, image_id, label_tag)
        if stored and os.path.exists(uri) and os.path.realpath(stored) != os.path.realpath(uri):
            # a fresh conversion (uri) was copied to the datastore (stored): map both from the fresh one
            self._values_by_class_name(label_id, uri, [stored, uri])
        return uri

    def _values_by_class_name(self, seg_series_uid: str, label_file: str, targets: list[str]) -> None:
        seg_dir = os.path.join(self._datastore.label_path(DefaultLabelTag.FINAL), seg_series_uid)
        files = sorted(os.listdir(seg_dir)) if os.path.isdir(seg_dir) else []
        if files:
            seg_file = os.path.join(seg_dir, files[0])
            model = str(pydicom.dcmread(seg_file, stop_before_pixels=True).get("SeriesDescription", "")) or None
            mapping = seg_to_class_values(seg_file, label_file, self.classes_of(model)[1], targets)
            logger.info(f"SEG {seg_series_uid}: segment numbers -> class values {mapping}")

    # saving -----------------------------------------------------------------------------------------------------

    def save_label(
        self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any], label_id: str = ""
    ) -> str:
        converted = ""
        if label_tag == DefaultLabelTag.FINAL and self.classes_of is not None:
            if "".join(pathlib.Path(label_filename).suffixes) == ".bin":  # OHIF's raw label: put it on the grid
                converted = label_filename = self._binary_to_image(image_id, label_filename)
            label_info = dict(label_info or {})
            label_info["label_info"] = self._segment_info(label_filename, label_info)
        try:
            return super().save_label(image_id, label_filename, label_tag, label_info, label_id)
        finally:
            if converted and os.path.exists(converted):
                os.unlink(converted)

    def _binary_to_image(self, image_id: str, label_filename: str) -> str:
        """OHIF's ``label.bin`` (one uint8 per voxel of the image MONAI Label converted, x fastest) as a NIfTI on the
        image's grid; a file of another size answers HTTP 422 with both sizes (MONAI Label answers a bare 500)."""
        image_uri = self.get_image_uri(image_id)
        shape = tuple(int(n) for n in nib.load(image_uri).shape[:3])
        size = os.path.getsize(label_filename)
        if size != int(np.prod(shape)):
            raise HTTPException(
                status_code=422,
                detail=f"series {image_id}: the raw label holds {size} bytes; the image has {shape} = "
                f"{int(np.prod(shape))} voxels (one uint8 per voxel, x fastest)",
            )
        return binary_to_image(image_uri, label_filename)

    def _segment_info(self, label_filename: str, params: dict[str, Any]) -> list[dict]:
        """``label_info`` for MONAI Label's SEG writer: one entry per label value present (its reading order),
        named and coded from the model's classes; entries the client gave with a ``segmentAttribute`` are kept."""
        given = params.get("label_info") or []
        model = params.get("model") or next((i.get("model_name") for i in given if isinstance(i, dict)), None)
        model_name, class_names, class_codes = self.classes_of(model)
        # a copy, not GetArrayViewFromImage: a view of the temporary image reads freed memory once it is collected
        values = [int(v) for v in np.unique(sitk.GetArrayFromImage(sitk.ReadImage(label_filename))) if v != 0]
        info = segment_attributes(class_names, values, model_name, class_codes)
        by_id = {
            int(i["segmentAttribute"]["labelID"]): i
            for i in given
            if isinstance(i, dict)
            and isinstance(i.get("segmentAttribute"), dict)
            and "labelID" in i["segmentAttribute"]
        }
        return [by_id.get(v, entry) for v, entry in zip(values, info)]
