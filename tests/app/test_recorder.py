"""What the recorder leaves a user (``fedsim.app.recorder``): checkpoints that load on any
machine and never run a payload, the resumed and fresh round-0 answers, the rounds.jsonl record
and progress line of each round, the backdoor lifespan, and the summary ``finish`` writes when
a file of the run directory cannot be written."""

import json
import pickle
from types import SimpleNamespace

import pytest
import torch
import torch.serialization

from fedsim.app import recorder as recorder_module
from fedsim.app.recorder import Recorder, finish, lifespan, load_checkpoint, save_checkpoint
from fedsim.config import load_config
from fedsim.report import RunDirectory

ARRAYS = object()  # what Flower hands the evaluate_fn; the fakes here never look inside


def _quiet(msg):
    pass


# --------------------------------------------------------------------------- checkpoints
def test_a_checkpoint_saved_on_a_gpu_loads_onto_the_cpu(tmp_path, monkeypatch):
    """A checkpoint records each tensor's device; one written by a GPU run must resume on a
    machine without one (and on one with one, into CPU memory, where the server keeps it)."""
    path = tmp_path / "checkpoint.pt"
    with monkeypatch.context() as m:  # the tags torch writes for tensors on cuda:0
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        save_checkpoint(path, {"w": torch.tensor([1.5, -2.0, 0.25]), "round": 3})
    state = load_checkpoint(path)
    assert state["round"] == 3 and state["w"].device.type == "cpu"
    assert state["w"].tolist() == [1.5, -2.0, 0.25]


class _Payload:
    """A pickle that, loaded by a full unpickler, runs ``os.system`` (a ``__reduce__`` payload)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_payload_never_runs_even_where_torch_is_told_to_trust_files(tmp_path, monkeypatch):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD turns torch.load's default into a full unpickler;
    a checkpoint a user brings stays untrusted whatever the environment says."""
    marker, path = tmp_path / "ran", tmp_path / "checkpoint.pt"
    torch.save({"w": torch.zeros(1), "evil": _Payload(marker)}, path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path)
    assert not marker.exists()


# --------------------------------------------------------------------------- round 0
def test_a_resumed_recorder_says_so_and_hands_on_the_first_sessions_initial_numbers(tmp_path):
    logged, handed = [], []
    initial = {"clean_accuracy": 0.375, "attack_success_rate": 0.0625}
    rec = Recorder(RunDirectory(tmp_path), lambda a: pytest.fail("round 0 re-evaluated"), dict,
                   log=logged.append, rounds_done=4, initial=initial, on_initial=handed.append)
    assert dict(rec(0, ARRAYS)) == initial
    assert logged == ["resuming after round 4"]
    assert handed == [initial] and handed[0] is not initial  # a copy: the callee may keep it


def test_a_fresh_recorder_evaluates_the_arrays_it_is_given_and_logs_the_initial_model(tmp_path):
    logged, handed, evaluated = [], [], []

    def evaluate(arrays):
        evaluated.append(arrays)
        return {"clean_accuracy": 0.4375, "attack_success_rate": 0.8125, "retrieval": {"i2t_r1": 0.5}}

    rec = Recorder(RunDirectory(tmp_path), evaluate, dict, log=logged.append, on_initial=handed.append)
    assert dict(rec(0, ARRAYS)) == {"clean_accuracy": 0.4375, "attack_success_rate": 0.8125}
    assert evaluated == [ARRAYS]
    assert handed == [{"clean_accuracy": 0.4375, "attack_success_rate": 0.8125}]
    assert logged == ["round  0  CA 0.438  ASR 0.812  (initial model)"]


# --------------------------------------------------------------------------- each round
@pytest.fixture
def clock(monkeypatch):
    """The recorder's clock stopped at 100.123456 s."""
    monkeypatch.setattr(recorder_module, "time", SimpleNamespace(perf_counter=lambda: 100.123456))


def _record_one(tmp_path, stats, metrics, server_round=2, rounds_done=0):
    logged = []
    rec = Recorder(RunDirectory(tmp_path), lambda a: dict(metrics), lambda: dict(stats), log=logged.append,
                   rounds_done=rounds_done)
    rec(server_round, ARRAYS)
    (record,) = RunDirectory(tmp_path).read_rounds()
    return record, logged


def test_a_round_record_holds_its_wall_time_in_ms_the_strategys_stats_and_every_metric(tmp_path, clock):
    # t0 = 90 s on the stopped clock: the round took 10.123456 s, kept to the millisecond
    stats = {"t0": 90.0, "round": 99, "accepted": [0, 2], "bytes_up": 4096}
    metrics = {"clean_accuracy": 0.625, "attack_success_rate": 0.125, "retrieval": {"i2t_r1": 0.25},
               "text_asr": 0.5}
    record, logged = _record_one(tmp_path, stats, metrics, server_round=2, rounds_done=5)
    assert record == {"round": 7, "clean_accuracy": 0.625, "attack_success_rate": 0.125, "wall_s": 10.123,
                      "accepted": [0, 2], "bytes_up": 4096, "retrieval": {"i2t_r1": 0.25}, "text_asr": 0.5}
    assert logged == ["round  7  CA 0.625  ASR 0.125  10.1 s"]


def test_a_round_without_a_start_time_is_timed_from_now(tmp_path, clock):
    record, _ = _record_one(tmp_path, {}, {"clean_accuracy": 0.5, "attack_success_rate": 0.0})
    assert record["wall_s"] == 0.0 and "t0" not in record


def test_the_progress_line_shows_detection_rates_once_the_rule_flags_someone(tmp_path, clock):
    metrics = {"clean_accuracy": 0.75, "attack_success_rate": 0.0625}
    stats = {"t0": 97.5, "tpr": 2 / 3, "fpr": 0.125, "flagged": [3, 5, 6]}
    _, logged = _record_one(tmp_path / "a", stats, metrics, server_round=12)
    assert logged == ["round 12  CA 0.750  ASR 0.062  2.6 s  TPR 0.67 FPR 0.12"]
    # rates measured while nobody was flagged, or no rates at all: nothing to show
    for i, quiet in enumerate([{"tpr": 0.0, "fpr": 0.0, "flagged": []}, {"tpr": None, "flagged": [3]}]):
        _, logged = _record_one(tmp_path / f"q{i}", {"t0": 97.5, **quiet}, metrics, server_round=12)
        assert logged == ["round 12  CA 0.750  ASR 0.062  2.6 s"]


def test_the_progress_line_names_why_a_round_was_skipped(tmp_path, clock):
    stats = {"t0": 99.0, "skipped": "precondition: n > 2f + 2", "tpr": 0.5, "fpr": 0.25, "flagged": [1]}
    record, logged = _record_one(tmp_path, stats, {"clean_accuracy": 0.25, "attack_success_rate": 1.0},
                                 server_round=3)
    assert record["skipped"] == "precondition: n > 2f + 2"
    assert logged == ["round  3  CA 0.250  ASR 1.000  1.1 s  TPR 0.50 FPR 0.25  [precondition: n > 2f + 2]"]


# --------------------------------------------------------------------------- lifespan
def _window(stop: int, rounds: int = 6, threshold: float = 0.5):
    return load_config(None, [f"rounds={rounds}", "attack.schedule.kind='window'", f"attack.schedule.stop={stop}",
                              f"attack.lifespan_threshold={threshold}"])


def test_an_attack_that_lasts_to_the_last_round_has_no_lifespan_to_measure():
    rounds = [{"round": r, "attack_success_rate": 0.9} for r in range(1, 7)]
    assert lifespan(_window(stop=6), rounds) == {}
    assert lifespan(_window(stop=5), rounds) == {"last_attack_round": 5, "backdoor_lifespan": 1,
                                                  "backdoor_survived": True}


def test_an_asr_exactly_at_the_threshold_still_counts_as_alive():
    asr = [0.9, 0.9, 0.5, 0.5, 0.375, 0.5]  # rounds 3, 4 at the threshold 0.5; round 5 below
    rounds = [{"round": r, "attack_success_rate": a} for r, a in enumerate(asr, start=1)]
    assert lifespan(_window(stop=2), rounds) == {"last_attack_round": 2, "backdoor_lifespan": 2,
                                                  "backdoor_survived": False}


# --------------------------------------------------------------------------- finish
def _two_rounds(run_dir: RunDirectory) -> None:
    run_dir.append_round({"round": 1, "clean_accuracy": 0.5, "attack_success_rate": 0.25})
    run_dir.append_round({"round": 2, "clean_accuracy": 0.625, "attack_success_rate": 0.125})


def test_finish_writes_the_plot_beside_the_summaries(tmp_path):
    d = RunDirectory(tmp_path)
    _two_rounds(d)
    summary = finish(d, load_config(None, ["rounds=2"]), initial={"clean_accuracy": 0.125}, wall_s=3.0)
    assert summary["status"] == "completed" and "error" not in summary
    assert (tmp_path / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"


def test_a_plot_that_cannot_be_written_fails_a_completed_run_naming_the_error_and_file(tmp_path):
    d = RunDirectory(tmp_path)
    _two_rounds(d)
    (tmp_path / "metrics.png").mkdir()  # a folder where the plot goes: the replace fails
    summary = finish(d, load_config(None, ["rounds=2"]), initial=None, wall_s=3.0)
    assert summary["status"] == "failed"
    assert summary["error"].startswith("IsADirectoryError: [Errno 21] ")
    assert str(tmp_path / "metrics.png") in summary["error"]
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert (on_disk["status"], on_disk["error"]) == ("failed", summary["error"])
    assert on_disk["clean_accuracy"] == 0.625  # the rounds' numbers are still there


def test_a_plot_that_cannot_be_written_keeps_the_error_a_failed_run_already_has(tmp_path):
    d = RunDirectory(tmp_path)
    _two_rounds(d)
    (tmp_path / "metrics.png").mkdir()
    summary = finish(d, load_config(None, ["rounds=2"]), initial=None, wall_s=3.0, status="failed",
                     error="RuntimeError: client 3 crashed")
    assert (summary["status"], summary["error"]) == ("failed", "RuntimeError: client 3 crashed")


def test_finish_summarises_the_run_with_its_identity_initial_numbers_and_lifespan(tmp_path):
    cfg = load_config(None, ["rounds=4", "seed=11", "attack.schedule.kind='window'", "attack.schedule.stop=2",
                             "attack.lifespan_threshold=0.5"])
    d = RunDirectory(tmp_path)
    for r, asr in enumerate([0.75, 0.875, 0.625, 0.25], start=1):
        d.append_round({"round": r, "clean_accuracy": 0.5 + r / 16, "attack_success_rate": asr})
    plotted = []
    d.plot = lambda **kw: plotted.append(kw)  # the plot's inputs: the round-0 point and the chance line
    initial = {"clean_accuracy": 0.1875, "attack_success_rate": 0.0625}
    summary = finish(d, cfg, initial=initial, wall_s=12.345)
    assert {k: summary[k] for k in ("name", "seed", "strategy", "malicious", "status")} == {
        "name": cfg.name, "seed": 11, "strategy": cfg.strategy.name, "malicious": cfg.malicious,
        "status": "completed"}
    assert (summary["last_attack_round"], summary["backdoor_lifespan"], summary["backdoor_survived"]) == (2, 1, False)
    assert (summary["initial_clean_accuracy"], summary["initial_attack_success_rate"]) == (0.1875, 0.0625)
    assert (summary["rounds"], summary["clean_accuracy"], summary["wall_s"]) == (4, 0.75, 12.35)
    assert plotted == [{"initial": initial, "chance": 0.1}]  # 10 classes in the default evaluation
    assert "error" not in summary
    assert (tmp_path / "summary.md").read_text().startswith(f"# {cfg.name}\n\n| metric | value |\n|---|---|\n| rounds | 4 |")
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


@pytest.mark.parametrize("reasons, error", [
    (["quorum", "no valid replies", "quorum"], "no round aggregated (every round skipped: no valid replies; quorum)"),
    ([], "no round aggregated"),  # no round at all
])
def test_a_run_in_which_no_round_aggregated_failed_and_says_why(tmp_path, reasons, error):
    d = RunDirectory(tmp_path)
    for r, reason in enumerate(reasons, start=1):
        d.append_round({"round": r, "clean_accuracy": 0.1, "attack_success_rate": 0.0, "skipped": reason})
    summary = finish(d, load_config(None, ["rounds=3"]), initial=None, wall_s=1.0)
    assert (summary["status"], summary["error"]) == ("failed", error)
    assert json.loads((tmp_path / "summary.json").read_text())["error"] == error
