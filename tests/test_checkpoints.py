"""Training state on disk: the best-model handler (atomic, resumable best score, properties beside the weights),
the last-state checkpoint's optional keys, the atomic writes' file modes, and command-line boolean flags."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from monai_resunet.atomic_files import atomic_write_bytes
from monai_resunet.config_flags import as_bool
from monai_resunet.engines import BestModelCheckpoint, ResumableCheckpoint
from monai_resunet.engines import checkpoint as checkpoint_module
from monai_resunet.model_properties import (
    WeightsMismatchError,
    file_sha256,
    read_model_properties,
    write_model_properties,
)
from monai_resunet.networks import configure_execution


def scripted_evaluator(scores: list[float]) -> Engine:
    """An engine that, like MONAI's ``Workflow``, updates ``best_metric``/``best_metric_epoch`` at the end of each
    epoch before the handlers attached later run; epoch ``k`` scores ``scores[k - 1]``."""
    engine = Engine(lambda e, batch: None)
    engine.state.best_metric, engine.state.best_metric_epoch = -1, -1
    engine.state.key_metric_name = "val_mean_dice"

    @engine.on(Events.EPOCH_COMPLETED)
    def _compare(e):
        score = scores[e.state.epoch - 1]
        if e.state.best_metric_epoch == -1 or score > e.state.best_metric:
            e.state.best_metric, e.state.best_metric_epoch = score, e.state.epoch

    return engine


def validate(engine: Engine, epoch: int) -> None:
    """One validation round as MONAI's ``Evaluator.run(global_epoch)`` does it: the trainer's epoch number."""
    engine.state.max_epochs, engine.state.epoch, engine.state.iteration = epoch, epoch - 1, 0
    engine.run([0])


def test_best_model_is_saved_with_its_properties_and_survives_a_resume(tmp_path):
    net = torch.nn.Linear(2, 1)
    evaluator = scripted_evaluator([0.5, 0.9, 0.7])
    best = BestModelCheckpoint(str(tmp_path), net, properties={"class_names": ["background", "a"]})
    best.attach(evaluator)
    saved_weights = {}

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _train_a_bit(e):  # attached after the saver: the weights change after each save
        saved_weights[e.state.epoch] = {k: v.clone() for k, v in net.state_dict().items()}
        with torch.no_grad():
            net.weight += 1.0

    for epoch in (1, 2, 3):
        validate(evaluator, epoch)
    weights = torch.load(tmp_path / "model.pt", weights_only=True)
    assert torch.equal(weights["weight"], saved_weights[2]["weight"])  # epoch 2 (0.9) is the best, not epoch 3
    props = json.loads((tmp_path / "model_properties.json").read_text())
    assert props == {"class_names": ["background", "a"], "weights_sha256": file_sha256(tmp_path / "model.pt")}
    assert best.state_dict() == {"best_metric": 0.9, "best_metric_epoch": 2}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left

    # a resumed run: fresh objects, the best score restored; a worse epoch keeps model.pt, a better one replaces it
    before = (tmp_path / "model.pt").read_bytes()
    resumed = scripted_evaluator([0.0, 0.0, 0.0, 0.8, 0.95])
    net2 = torch.nn.Linear(2, 1)
    best2 = BestModelCheckpoint(str(tmp_path), net2)
    best2.attach(resumed)
    best2.load_state_dict(best.state_dict())
    validate(resumed, 4)
    assert (tmp_path / "model.pt").read_bytes() == before  # 0.8 < 0.9
    validate(resumed, 5)
    assert torch.equal(torch.load(tmp_path / "model.pt", weights_only=True)["weight"], net2.weight)
    assert best2.state_dict() == {"best_metric": 0.95, "best_metric_epoch": 5}


def test_kill_between_the_two_renames_is_detected_and_repaired_on_resume(tmp_path, monkeypatch):
    models = tmp_path / "models"
    props = {"class_names": ["background", "liver"]}
    evaluator = scripted_evaluator([0.5, 0.9])
    best = BestModelCheckpoint(str(models), torch.nn.Linear(2, 1), properties=props)
    best.attach(evaluator)
    validate(evaluator, 1)
    assert read_model_properties(tmp_path, "class_names") == ["background", "liver"]  # a matching pair

    def killed(*args, **kwargs):  # the process dies after model.pt's rename, before the properties' rename
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(checkpoint_module, "write_model_properties", killed)
    with torch.no_grad():
        best.network.weight += 1.0
    with pytest.raises(KeyboardInterrupt):
        validate(evaluator, 2)
    monkeypatch.undo()
    with pytest.raises(WeightsMismatchError, match="model.pt is not the weights file .*model_properties.json"):
        read_model_properties(tmp_path)  # new weights beside old properties: refused, not paired

    resumed = scripted_evaluator([0.1])
    best2 = BestModelCheckpoint(str(models), torch.nn.Linear(2, 1), properties=props)
    best2.attach(resumed)
    best2.load_state_dict({"best_metric": 0.5, "best_metric_epoch": 1})  # what last_state.pt held
    assert read_model_properties(tmp_path)["weights_sha256"] == file_sha256(models / "model.pt")
    assert not best2.repair_pair()  # a matching pair is left alone


def test_segmenter_loads_only_the_model_its_properties_were_written_for(tmp_path, monkeypatch):
    """A model saved between the config's reading of the properties and the loading of model.pt (MONAI Label
    training on the bundle being inferred with): a new pair is built from again; model.pt alone is refused."""
    from conftest import tiny_bundle
    from monai_resunet.engines.checkpoint import atomic_torch_save
    from monai_resunet.inference import segmenter as segmenter_module
    from monai_resunet.inference.segmenter import Segmenter, load_checkpoint

    bundle = tiny_bundle(tmp_path)
    models = bundle / "models"
    props = json.loads((models / "model_properties.json").read_text())
    write_model_properties(models, **props, weights_sha256=file_sha256(models / "model.pt"))
    old = torch.load(models / "model.pt", weights_only=True)
    new = {k: v + 1 for k, v in old.items()}

    def saved_meanwhile(replace):  # load_checkpoint, with `replace()` run once just before the first load
        calls = []

        def load(*args, **kwargs):
            calls.append(args[1])
            if len(calls) == 1:
                replace()
            return load_checkpoint(*args, **kwargs)

        monkeypatch.setattr(segmenter_module, "load_checkpoint", load)
        return calls

    def new_pair():  # as BestModelCheckpoint saves: the weights, then the properties with their hash
        digest = atomic_torch_save(new, models / "model.pt")
        write_model_properties(models, **{**props, "modality": "CT"}, weights_sha256=digest)

    calls = saved_meanwhile(new_pair)
    seg = Segmenter.from_bundle(bundle, device="cpu")
    assert len(calls) == 2  # built again from the new properties
    assert seg.parser.get_parsed_content("modality") == "CT"
    assert all(torch.equal(v, new[k]) for k, v in seg.network.state_dict().items())

    saved_meanwhile(lambda: atomic_torch_save(old, models / "model.pt"))  # new weights, no new properties
    with pytest.raises(WeightsMismatchError, match="model.pt is not the weights file .*model_properties.json"):
        Segmenter.from_bundle(bundle, device="cpu")
    with pytest.raises(WeightsMismatchError, match="model.pt is not the weights file .*model_properties.json"):
        load_checkpoint(seg.network, models / "model.pt", weights_sha256="0" * 64)
    monkeypatch.undo()

    other = tmp_path / "other.pt"  # an explicit checkpoint is not model.pt: its hash is not model.pt's to match
    torch.save(new, other)
    atomic_torch_save(old, models / "model.pt")
    write_model_properties(models, **props, weights_sha256=file_sha256(models / "model.pt"))
    seg = Segmenter.from_bundle(bundle, device="cpu", checkpoint=other)
    assert all(torch.equal(v, new[k]) for k, v in seg.network.state_dict().items())


def test_resumed_from_is_logged_by_rank_0_only(tmp_path, caplog):
    net = torch.nn.Linear(2, 1)
    first = Engine(lambda e, batch: None)
    ResumableCheckpoint(str(tmp_path), {"network": net}).attach(first)
    first.run([0], max_epochs=1)
    lines = []
    for rank0 in (True, False):  # two DDP ranks: every rank loads, one logs
        engine = Engine(lambda e, batch: None)
        ResumableCheckpoint(str(tmp_path), {"network": net}, resume=True, is_rank0=rank0).attach(engine)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="monai_resunet"):
            engine.run([0], max_epochs=2)
        lines.append([r.getMessage() for r in caplog.records if "resumed from" in r.getMessage()])
        assert engine.state.epoch == 2
    assert len(lines[0]) == 1 and lines[1] == []


def test_best_model_rank_other_than_zero_writes_nothing(tmp_path):
    evaluator = scripted_evaluator([0.5])
    BestModelCheckpoint(str(tmp_path), torch.nn.Linear(2, 1), is_rank0=False).attach(evaluator)
    validate(evaluator, 1)
    assert not list(tmp_path.iterdir())
    with pytest.raises(RuntimeError, match="attach"):
        BestModelCheckpoint(str(tmp_path), torch.nn.Linear(2, 1)).state_dict()


def test_last_state_without_an_optional_key_still_resumes(tmp_path):
    net = torch.nn.Linear(2, 1)
    trainer = Engine(lambda e, batch: None)
    ResumableCheckpoint(str(tmp_path), {"network": net}).attach(trainer)
    trainer.run([0], max_epochs=2)  # an "older" checkpoint: no best_model entry

    evaluator = scripted_evaluator([0.5])
    best = BestModelCheckpoint(str(tmp_path), net)
    best.attach(evaluator)
    trainer2 = Engine(lambda e, batch: None)
    save_dict = {"network": torch.nn.Linear(2, 1), "best_model": best}
    ResumableCheckpoint(str(tmp_path), save_dict, resume=True, optional_keys=["best_model"]).attach(trainer2)
    trainer2.run([0], max_epochs=3)
    assert trainer2.state.epoch == 3 and torch.equal(save_dict["network"].weight, net.weight)
    assert best.state_dict() == {"best_metric": -1.0, "best_metric_epoch": -1}  # fresh
    assert "best_model" in torch.load(tmp_path / "last_state.pt", weights_only=True)

    strict = Engine(lambda e, batch: None)
    ResumableCheckpoint(str(tmp_path / "x"), {"network": net}).attach(strict)
    strict.run([0], max_epochs=1)
    other = Engine(lambda e, batch: None)
    ResumableCheckpoint(str(tmp_path / "x"), {"network": net, "optimizer": best}, resume=True).attach(other)
    with pytest.raises(RuntimeError, match="lacks"):
        other.run([0], max_epochs=2)


def test_atomic_writes_follow_the_umask_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "props.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by a server running under another account


@pytest.mark.parametrize(
    "value,expected", [("true", True), ("False", False), (" 0 ", False), ("yes", True), (True, True), (0, False)]
)
def test_command_line_booleans(value, expected):
    assert as_bool(value) is expected


def test_execution_flags_from_the_command_line_are_not_truthy_strings():
    net = configure_execution(torch.nn.Linear(2, 1), "cpu", channels_last="false", cpu_bf16="false", compile="false")
    assert not hasattr(net, "_resunet_bf16_hooks")
    assert hasattr(configure_execution(torch.nn.Linear(2, 1), "cpu", cpu_bf16="true"), "_resunet_bf16_hooks")
    with pytest.raises(ValueError, match="boolean"):
        configure_execution(torch.nn.Linear(2, 1), "cpu", cpu_bf16="flase")


def test_history_of_an_epoch_is_written_before_the_checkpoint_that_counts_it(tmp_path):
    """Both bundles attach ``TrainingCurves`` before ``ResumableCheckpoint``: a kill between the two writes at the end
    of an epoch leaves that epoch in ``history.json`` (the resumed run keeps the epochs its checkpoint counts)."""
    from monai_resunet.engines import TrainingCurves

    for bundle in ("resunet3d_segmentation", "resunet2d_segmentation"):
        config = json.loads((Path(__file__).parents[1] / "bundles" / bundle / "configs" / "train.json").read_text())
        names = [h["_target_"].rsplit(".", 1)[-1] for h in config["train"]["handlers"]]
        assert names.index("TrainingCurves") < names.index("ResumableCheckpoint"), bundle

    def run(epochs: int, restored_epoch: int = 0) -> list[int]:
        engine = Engine(lambda e, b: {"loss": torch.tensor(float(e.state.epoch))})
        TrainingCurves(str(tmp_path)).attach(engine)
        if restored_epoch:  # what ResumableCheckpoint does on STARTED, attached after TrainingCurves
            engine.add_event_handler(Events.STARTED, lambda e: setattr(e.state, "epoch", restored_epoch))
        engine.run([0, 1], max_epochs=epochs)
        return [h["epoch"] for h in json.loads((tmp_path / "history.json").read_text())]

    assert run(2) == [1, 2]
    history = json.loads((tmp_path / "history.json").read_text())
    (tmp_path / "history.json").write_text(json.dumps(history + [{"epoch": 3, "loss": 9.0}]))  # killed after it
    assert run(4, restored_epoch=2) == [1, 2, 3, 4]  # epoch 3 redone: one entry each, epochs 1-2 kept
    assert json.loads((tmp_path / "history.json").read_text())[2]["loss"] != 9.0
