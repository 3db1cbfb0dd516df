"""Inference: label-map writers (NIfTI/NRRD/MHA, DICOM-SEG), ``Segmenter`` (bundle → callable), CLI glue."""
