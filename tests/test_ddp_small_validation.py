"""DDP with a validation set smaller than the number of ranks (issue 20, item 2): the sampler gives the extra
ranks a stand-in case whose label is blanked so the metric is that of the real cases; a training set smaller
than the ranks is a clear error; a resumed DDP run logs "resumed from" once (item 8)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from monai.metrics import DiceMetric

from conftest import FAST_3D, REPO, copy_bundle
from monai_resunet.data import make_demo_dataset
from monai_resunet.engines import DistributedSampler
from monai_resunet.engines.distributed import _blank_labels


@pytest.mark.parametrize("size,ranks", [(1, 2), (3, 4), (5, 2)])
def test_validation_sampler_covers_every_case_once_and_marks_stand_ins(size, ranks):
    samplers = [DistributedSampler(list(range(size)), False, ranks, r, shuffle=False) for r in range(ranks)]
    real = [i for s in samplers if not s.stand_in for i in s]
    assert sorted(real) == list(range(size))  # every case once, on the ranks with cases of their own
    assert all(len(s) >= 1 for s in samplers)  # every rank runs its evaluator (and joins the all-gather)
    assert sum(s.stand_in for s in samplers) == max(ranks - size, 0)


def test_training_set_smaller_than_the_ranks_is_a_clear_error():
    with pytest.raises(ValueError, match="training set has 1 case.*fewer than the 2 ranks"):
        DistributedSampler([0], True, 2, 0, name="training set")
    with pytest.raises(ValueError, match="validation set is empty"):
        DistributedSampler([], False, 2, 0, name="validation set")


def test_blanked_stand_in_leaves_the_mean_dice_of_the_real_cases():
    torch.manual_seed(0)
    pred = torch.nn.functional.one_hot(torch.randint(0, 3, (8, 8, 8)), 3).permute(3, 0, 1, 2).float()
    label = torch.nn.functional.one_hot(torch.randint(0, 3, (8, 8, 8)), 3).permute(3, 0, 1, 2).float()
    reference = DiceMetric(include_background=False)
    reference([pred], [label])
    engine = type("E", (), {})()
    engine.state = type("S", (), {})()
    engine.state.output = [{"pred": torch.roll(pred, 1, 0), "label": label.clone()}]  # another prediction
    _blank_labels(engine)
    metric = DiceMetric(include_background=False)
    metric([pred], [label])
    metric([engine.state.output[0]["pred"]], [engine.state.output[0]["label"]])
    assert torch.isclose(metric.aggregate(), reference.aggregate()).all()


def _torchrun(bundle, overrides: dict, port: int) -> subprocess.CompletedProcess:
    configs = str([str(bundle / "configs" / "train.json"), str(bundle / "configs" / "multi_gpu_train.json")])
    args = []
    for key, value in overrides.items():
        args += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           "-m", "monai.bundle", "run", "training", "--config_file", configs, *args]  # fmt: skip
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=REPO, env=env)


@pytest.mark.slow  # two torchrun launches of 2 processes: about 2.5 min on 2 shared CPU cores
def test_ddp_training_with_one_validation_case_on_two_ranks_then_resume(tmp_path):
    data = make_demo_dataset(tmp_path / "data", num_train=5, num_test=0, size=(32, 32, 32), seed=3)
    bundle = copy_bundle("resunet3d_segmentation", tmp_path)
    overrides = {**FAST_3D, "dataset_dir": str(data), "epochs": 1, "val_fraction": 0.2}  # 4 train, 1 validation
    first = _torchrun(bundle, overrides, 29531)
    log = first.stdout + first.stderr
    assert first.returncode == 0, log[-4000:]
    assert log.count("Key metric: val_mean_dice best value") == 1  # validated, logged by rank 0 only
    best = torch.load(bundle / "models" / "last_state.pt", weights_only=True)["best_model"]
    assert best["best_metric_epoch"] == 1 and best["best_metric"] == best["best_metric"]  # not NaN

    resumed = _torchrun(bundle, {**overrides, "epochs": 2, "resume": "true"}, 29532)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-4000:]
    assert log.count("resumed from") == 1  # both ranks load, rank 0 logs
