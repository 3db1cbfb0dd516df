"""Data: MSD ``dataset.json`` datalists and splits, the DICOM series reader, demo data."""
