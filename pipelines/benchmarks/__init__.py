"""The project's benchmarks, run from the repository root as ``python -m pipelines.benchmarks.NAME`` (see README.md
here): ``colin27`` (real-data training for a CPU time budget), ``colin27_seeds`` (pools its runs), ``networks``,
``speed`` and ``bundle_2d_vs_3d``; shared helpers in :mod:`pipelines.benchmarks.common`."""
