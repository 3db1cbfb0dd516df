"""Data preparation scripts and the benchmarks; a package so that ``python -m pipelines.benchmarks.NAME`` runs from
the repository root (not shipped in the wheel)."""
