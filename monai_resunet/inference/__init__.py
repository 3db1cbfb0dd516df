"""Inference: label-map writers (NIfTI/NRRD/MHA, DICOM-SEG), ``Segmenter`` (bundle → callable), CLI glue."""

from monai_resunet.inference.inferers import SlabArgmaxInferer
from monai_resunet.inference.mirroring import MirrorInferer, mirrored_prediction
from monai_resunet.inference.segmenter import CheckpointError, InputImageError, Segmenter, load_checkpoint
from monai_resunet.inference.writers import (
    LABEL_MAP_SUFFIXES,
    LabelMapWriter,
    LabelWriteError,
    write_dicom_seg,
    write_label_map,
)
