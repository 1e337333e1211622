"""Experiment tracking (issue #24): ``[logging] tensorboard = true`` writes every round's numeric
metrics as TensorBoard scalars, read back here with TensorBoard's own reader."""

import pytest

from fedsim.app.recorder import Recorder, scalars_of, tensorboard_tracker
from fedsim.config import ConfigError, load_config
from fedsim.report import new_run_directory


def test_scalars_are_the_numeric_entries_with_nested_records_joined_by_a_slash():
    record = {"round": 3, "clean_accuracy": 0.5, "attack_success_rate": 0.25, "tp": 2, "skipped": None,
              "flagged": [1, 2], "retrieval": {"i2t_r1": 0.1, "t2i_r5": 0.9}, "ok": True, "name": "x"}
    assert scalars_of(record) == {"clean_accuracy": 0.5, "attack_success_rate": 0.25, "tp": 2.0,
                                  "retrieval/i2t_r1": 0.1, "retrieval/t2i_r5": 0.9}


def _read(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_the_tracker_writes_each_round_as_a_step_that_tensorboard_reads(tmp_path):
    track = tensorboard_tracker(tmp_path / "tb")
    track(0, {"clean_accuracy": 0.5, "attack_success_rate": 0.1})
    track(1, {"round": 1, "clean_accuracy": 0.6, "attack_success_rate": 0.3, "retrieval": {"i2t_r1": 0.2}})
    track(2, {"round": 2, "clean_accuracy": 0.7, "attack_success_rate": 0.6, "retrieval": {"i2t_r1": 0.4}})
    scalars = _read(tmp_path / "tb")
    assert scalars["clean_accuracy"] == [(0, 0.5), (1, pytest.approx(0.6)), (2, pytest.approx(0.7))]
    assert [s for s, _ in scalars["retrieval/i2t_r1"]] == [1, 2]


def test_the_recorder_tracks_the_initial_model_and_every_round_it_records(tmp_path):
    run_dir = new_run_directory(tmp_path / "run")
    seen = []
    metrics = iter([{"clean_accuracy": 0.5, "attack_success_rate": 0.1},
                    {"clean_accuracy": 0.6, "attack_success_rate": 0.2}])
    rec = Recorder(run_dir, lambda arrays: next(metrics), lambda: {"round": 1, "tpr": None},
                   log=lambda m: None, track=lambda r, record: seen.append((r, record["clean_accuracy"])))
    rec(0, None)
    rec(1, None)
    assert seen == [(0, 0.5), (1, 0.6)]


def test_tensorboard_logging_is_a_config_switch():
    assert load_config(None, ["logging.tensorboard=true"]).logging.tensorboard
    assert not load_config(None).logging.tensorboard
    with pytest.raises(ConfigError, match="logging.tensorboard"):
        load_config(None, ["logging.tensorboard='yes'"])
