"""What a run directory records: a resumed run continues the round count after its
checkpoint's round and redoes the rounds recorded after it (``fedsim.app.recorder.Recorder``,
``fedsim.app.server_app.run_server``, ``fedsim.runner.resume``), and the summary's mean
detection rates average the rounds that have one (``fedsim.report.summarize``)."""

import importlib
from types import SimpleNamespace

import pytest
import torch

from fedsim import runner
from fedsim.app.recorder import CHECKPOINT, Recorder, load_checkpoint, rng_state, save_checkpoint
from fedsim.config import load_config
from fedsim.report import RunDirectory, summarize

# fedsim.app's name ``server_app`` is the ServerApp object; its module is reached by import
server_app = importlib.import_module("fedsim.app.server_app")

ARRAYS = object()  # what Flower hands the evaluate_fn; the fakes here never look inside


def _metrics(arrays):
    return {"clean_accuracy": 0.5, "attack_success_rate": 0.25, "retrieval": {"i2t_r1": 0.1}}


# --------------------------------------------------------------------------- round numbers
def test_a_resumed_recorder_numbers_rounds_after_the_checkpoint_and_reuses_the_initial_metrics(tmp_path):
    run_dir, evaluated, checkpoints = RunDirectory(tmp_path), [], []
    initial = {"clean_accuracy": 0.1, "attack_success_rate": 0.05}
    recorder = Recorder(run_dir, lambda a: evaluated.append(a) or _metrics(a), lambda: {"accepted": [1, 2]},
                        log=lambda msg: None, checkpoint=lambda r, a, i: checkpoints.append((r, dict(i))),
                        rounds_done=3, initial=initial)
    # Flower counts from 0 again: round 0 is answered with the first session's initial metrics
    assert dict(recorder(0, ARRAYS)) == initial and evaluated == []
    recorder(1, ARRAYS)
    recorder(2, ARRAYS)
    assert [r["round"] for r in run_dir.read_rounds()] == [4, 5]
    assert checkpoints == [(4, initial), (5, initial)]
    assert len(evaluated) == 2


def test_a_fresh_recorder_evaluates_round_0_and_numbers_rounds_from_1(tmp_path):
    run_dir, checkpoints = RunDirectory(tmp_path), []
    recorder = Recorder(run_dir, _metrics, dict, log=lambda msg: None,
                        checkpoint=lambda r, a, i: checkpoints.append((r, dict(i))))
    assert dict(recorder(0, ARRAYS)) == {"clean_accuracy": 0.5, "attack_success_rate": 0.25}
    recorder(1, ARRAYS)
    assert [r["round"] for r in run_dir.read_rounds()] == [1]
    assert checkpoints == [(1, {"clean_accuracy": 0.5, "attack_success_rate": 0.25})]


class _FlowerLoop:
    """A strategy as ``run_server`` drives it: its state carries the rounds done, and ``start``
    runs Flower's loop (evaluate_fn on round 0, then on each of ``num_rounds`` rounds)."""

    def __init__(self):
        self.rounds_done, self.last_round, self.num_rounds = 0, {}, None

    def load_state_dict(self, state):
        self.rounds_done = state["rounds_done"]

    def state_dict(self):
        return {"rounds_done": self.rounds_done}

    def start(self, *, grid, initial_arrays, num_rounds, timeout, train_config, evaluate_fn):
        self.num_rounds = num_rounds
        first = evaluate_fn(0, initial_arrays)
        for r in range(1, num_rounds + 1):
            evaluate_fn(r, initial_arrays)
        return SimpleNamespace(evaluate_metrics_serverapp={0: first})


def test_run_server_resumed_after_round_2_of_5_runs_and_records_rounds_3_to_5(tmp_path, monkeypatch):
    cfg = load_config(None, ["rounds=5", "model.init='scratch'"])
    strategy, evaluated = _FlowerLoop(), []
    server = SimpleNamespace(cfg=cfg, initial={"w": torch.zeros(2)}, strategy=strategy,
                             evaluate=lambda a: evaluated.append(a) or _metrics(a))
    monkeypatch.setattr(server_app, "build_server", lambda cfg, **kw: server)
    initial = {"clean_accuracy": 0.1, "attack_success_rate": 0.05}
    checkpoint = {"round": 2, "global": {"w": torch.ones(2)}, "strategy": {"rounds_done": 2},
                  "rng": rng_state(), "initial": initial, "wall_s": 1.5}
    run_dir = RunDirectory(tmp_path)
    first = server_app.run_server(grid=None, cfg=cfg, run_dir=run_dir, log=lambda msg: None, resume=checkpoint)
    assert first == initial
    assert strategy.num_rounds == 3 and len(evaluated) == 3
    assert [r["round"] for r in run_dir.read_rounds()] == [3, 4, 5]
    assert load_checkpoint(tmp_path / CHECKPOINT)["round"] == 5


def test_resume_drops_the_rounds_recorded_after_the_checkpoint_before_continuing(tmp_path, monkeypatch):
    cfg = load_config(None, ["rounds=6", "model.init='scratch'"])
    run_dir = RunDirectory(tmp_path)
    run_dir.write_config(cfg.to_toml())
    for r in (1, 2, 3, 4):  # the run was killed after recording round 4, checkpointed at round 3
        run_dir.append_round({"round": r, "clean_accuracy": r / 10, "attack_success_rate": 0.0})
    save_checkpoint(tmp_path / CHECKPOINT, {"round": 3, "global": {"w": torch.zeros(2)},
                                            "strategy": {"rounds_done": 3}, "rng": rng_state(),
                                            "initial": {}, "wall_s": 2.0})
    seen = {}

    def fake_run(cfg, out, **kw):
        seen.update(rounds=[r["round"] for r in out.read_rounds()], resume=kw["resume"]["round"])
        return {"status": "completed"}

    monkeypatch.setattr(runner, "run", fake_run)
    assert runner.resume(tmp_path) == {"status": "completed"}
    assert seen == {"rounds": [1, 2, 3], "resume": 3}


# --------------------------------------------------------------------------- summaries
def test_mean_detection_rates_average_only_the_rounds_that_have_one():
    rounds = [
        {"round": 1, "tpr": 1.0, "fpr": None, "precision": 0.5},
        {"round": 2, "tpr": None, "fpr": 0.2, "skipped": "every reply rejected"},
        {"round": 3, "tpr": 0.5, "precision": 1.0, "recall": 0.5},   # fpr absent
        {"round": 4, "fpr": 0.6, "precision": None, "recall": 0.25},  # tpr absent
        {"round": 5, "tpr": 0.0, "fpr": 0.1},
    ]
    s = summarize(rounds, initial=None, wall_s=1.0, extra={})
    assert s["mean_tpr"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)  # rounds 1, 3, 5; a real 0 counts
    assert s["mean_fpr"] == pytest.approx((0.2 + 0.6 + 0.1) / 3)  # rounds 2, 4, 5
    assert s["mean_precision"] == pytest.approx(0.75)
    assert s["mean_recall"] == pytest.approx(0.375)
    assert summarize([{"round": 1, "tpr": None}], initial=None, wall_s=1.0, extra={})["mean_tpr"] is None
