"""Smoke tests of ``python -m pipelines.benchmarks.networks``: a --quick run writes a well-formed table, and a case that
fails is recorded as that row's error instead of ending the run."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # the benchmarks run from the repository root: python -m pipelines.benchmarks.networks
    sys.path.insert(0, str(REPO))

from pipelines.benchmarks import networks as bench  # noqa: E402


def read_outputs(bench, out: Path) -> tuple[dict[str, dict], str]:
    with (out / "network_benchmark_quick.csv").open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == bench.CSV_COLUMNS
        rows = {r["model"]: r for r in reader}
    markdown = (out / "network_benchmark_quick.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| network"))
    assert [c.strip() for c in header.strip("|").split("|")] == bench.MD_COLUMNS
    assert "torch.set_num_threads" in markdown and "MONAI" in markdown
    return rows, markdown


def assert_measured(row: dict, phases: tuple[str, ...] = ("fwd", "train")) -> None:
    assert int(row["params"]) > 0
    for phase in phases:
        for column in ("gflop", "s_median", "gflops_per_s", "peak_mib", "repeats", "cpu_share"):
            assert float(row[f"{phase}_{column}"]) > 0, (phase, column, row)


def test_quick_run_writes_table_and_records_failures(tmp_path):
    # In this process (no interpreter start-up) on 1 thread (on a busy machine 2 OpenMP threads stall each other
    # at every tiny convolution), so it stays fast; 2D at 32²: the default ResUNet trains there, FlexibleUNet/
    # resnet34 down-samples 32× to 1×1, where batch norm cannot train with batch 1 - its forward row is kept
    # and its fwd+bwd becomes the row's error.
    argv = ["--quick", "--in-process", "--threads", "1", "--dims", "2", "--size-2d", "32",
            "--models", "resunet", "flexible*", "--out", str(tmp_path), "--no-progress"]  # fmt: skip
    rows = bench.main(argv)
    assert [(r["model"], r["spatial_dims"]) for r in rows] == [("resunet", 2), ("flexibleunet-resnet34", 2)]

    table, markdown = read_outputs(bench, tmp_path)
    resunet = table["resunet"]
    assert resunet["error"] == "" and resunet["patch"] == "32×32"
    assert_measured(resunet)
    # forward + backward does about twice the forward's convolution work on top of the forward
    assert 2 < float(resunet["train_gflop"]) / float(resunet["fwd_gflop"]) < 3.5
    assert "| resunet | 2 | 32×32 |" in markdown

    flexible = table["flexibleunet-resnet34"]
    assert "Expected more than 1 value per channel" in flexible["error"]
    assert_measured(flexible, phases=("fwd",))
    assert flexible["train_s_median"] == ""
    assert "Failed cases: `flexibleunet-resnet34` 2D" in markdown


@pytest.mark.slow
def test_quick_run_in_fresh_processes(tmp_path):
    # the real path: one fresh interpreter per case (~5 s of imports each on an idle machine)
    rows = bench.main(["--quick", "--threads", "1", "--dims", "2", "--size-2d", "32", "--models", "resunet",
                       "--out", str(tmp_path), "--no-progress"])  # fmt: skip
    assert len(rows) == 1
    table, _ = read_outputs(bench, tmp_path)
    assert table["resunet"]["error"] == ""
    assert_measured(table["resunet"])
    assert table["resunet"]["memory_method"] == "VmHWM reset per phase"
