"""Smoke test of ``python -m pipelines.benchmarks.speed --quick``: every section runs on tiny inputs and the report
has its tables, with no failed configuration."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # the benchmarks run from the repository root: python -m pipelines.benchmarks.speed
    sys.path.insert(0, str(REPO))

from pipelines.benchmarks import speed as bench  # noqa: E402
from pipelines.benchmarks.common import OPTIONAL_HEAVY_PACKAGES  # noqa: E402


def test_quick_run_writes_report(tmp_path):
    report = bench.main(["--quick", "--out", str(tmp_path)])

    inference = report["inference"]
    assert set(inference) == {"bundle", "scores", "labels + Invertd"}
    for name, result in inference.items():
        assert not result.get("error"), (name, result.get("error"))
        stages = [s["stage"] for s in result["stages"]]
        assert stages[0] == "load" and "network" in stages and "stitching" in stages and stages[-1] == "write (NIfTI)"
        assert result["windows"] > 0 and result["network_gflops_per_s"] > 0 and result["conv_gflops_per_s"] > 0
    assert len({result["windows"] for result in inference.values()}) == 1  # no window runs twice
    # the report names the optional packages that `import monai` loaded because they are installed (its RSS floor):
    # every one of them that this environment has, which is what makes the floor depend on the environment
    installed = [name for name in OPTIONAL_HEAVY_PACKAGES if importlib.util.find_spec(name) is not None]
    assert inference["bundle"]["baseline_packages"] == installed
    assert "softmax" in [s["stage"] for s in inference["scores"]["stages"]]  # the class-score path it replaced
    assert "inversion (InvertLabelMapd)" in [s["stage"] for s in inference["bundle"]["stages"]]
    assert all(not r.get("error") for r in report["memory"].values())
    assert all(not r.get("error") for r in report["inferers"] + report["knobs"] + report["training"])
    assert all(not r.get("error") for r in report["preprocessing"].values())
    assert all(r["it_per_s"] > 0 and r["compute_s"] > 0 for r in report["training"])
    rows = report["agreement"]["rows"]
    assert rows and all(r["model_grid_equal_dim-1"] == r["model_grid_equal_dim0"] == 1.0 for r in rows)

    markdown = (tmp_path / "speed_benchmark_quick.md").read_text()
    for heading in (
        "## Inference, stage by stage",
        "## Stitching options",
        "## Network knobs",
        "## Pre-processing variants",
        "## Training throughput",
        "## Agreement of the bundle's label path with the class-score path",
        "## Memory on a huge scan",
    ):
        assert heading in markdown, heading
    assert "`SlabArgmaxInferer` vs the `SlidingWindowInferer` arg-max (random weights): 100.0000% equal" in markdown
    assert "`InvertLabelMapd` vs `Invertd(nearest_interp=True)` on the same labels" in markdown
    if installed:
        assert f"MiB (includes {', '.join(installed)}: not monai_resunet's dependencies" in markdown
    assert "| **total** |" in markdown and "peak / float32 input" in markdown and "GFLOP/s" in markdown
