"""``python -m pipelines.benchmarks.bundle_2d_vs_3d``: both bundles' real inference paths on one small synthetic
volume, each in its own process, and a report with a row per bundle (random weights, so no Dice)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # the benchmarks run from the repository root: python -m pipelines.benchmarks.NAME
    sys.path.insert(0, str(REPO))

from pipelines.benchmarks import bundle_2d_vs_3d as module  # noqa: E402


def test_both_bundles_run_and_report(tmp_path):
    rows = module.main(["--shape", "40", "36", "24", "--classes", "3", "--threads", "1", "--out", str(tmp_path)])
    assert set(rows) == {"3D sliding window", "2D slice-wise"}
    for name, row in rows.items():
        assert not row.get("error"), (name, row)
        assert row["total_s"] >= row["network_s"] > 0 and row["network_calls"] > 0
        assert row["peak_rss_mib"] > 0 and "dice" not in row  # random weights: no Dice
    assert rows["2D slice-wise"]["inferer"] == "SliceInferer"
    assert rows["3D sliding window"]["inferer"] == "SlabArgmaxInferer"
    report = (tmp_path / "bundle_2d_vs_3d.md").read_text()
    assert "| 3D sliding window |" in report and "| 2D slice-wise |" in report and "random initialisation" in report
    assert json.loads((tmp_path / "bundle_2d_vs_3d.json").read_text())["rows"].keys() == rows.keys()
