"""Data: MSD ``dataset.json`` datalists and splits, image readers (DICOM series, fast NIfTI, SimpleITK for
NRRD/MHA), demo data."""

from monai_resunet.data.datalist import (
    list_images,
    msd_class_names,
    msd_datalist,
    msd_modality,
    msd_num_classes,
    read_dataset_json,
)
from monai_resunet.data.demo import DEMO_CLASS_NAMES, make_demo_dataset
from monai_resunet.data.dicom_series import (
    DicomReadError,
    DicomSeries,
    DicomSeriesReader,
    read_dicom_series,
    read_dicom_series_datasets,
    register_dicom_series_reader,
)
from monai_resunet.data.nifti_reader import FastNibabelReader
from monai_resunet.data.sitk_reader import SimpleITKReader
