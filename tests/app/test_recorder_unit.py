"""``fedsim.app.recorder`` in small pieces: the global RNG states a checkpoint carries, the
scalars the recorder hands Flower, the lifespan of rounds without an ASR or of a run without
attackers, and what ``finish`` records of how a run ended."""

import json
import random

import numpy as np
import pytest
import torch

from fedsim.app.recorder import Recorder, finish, lifespan, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from fedsim.config import load_config
from fedsim.report import RunDirectory

ARRAYS = object()


def _draws():
    return (torch.rand(3).tolist(), np.random.standard_normal(3).tolist(), np.random.randint(0, 1000, 3).tolist(),
            [random.gauss(0, 1) for _ in range(3)], random.random())


# --------------------------------------------------------------------------- RNG states
def test_the_global_rng_states_survive_a_checkpoint_cached_gaussians_included(tmp_path):
    torch.manual_seed(3)
    np.random.seed(4)
    random.seed(5)
    # one draw each leaves numpy's and random's second Gaussian of a pair cached
    np.random.standard_normal()
    random.gauss(0, 1)
    save_checkpoint(tmp_path / "c.pt", {"rng": rng_state()})
    expected = _draws()
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert _draws() == expected


def test_the_numpy_state_is_kept_as_tensors_and_plain_values():
    np.random.seed(7)
    np.random.standard_normal()
    state = rng_state()
    kind, keys, pos, has_gauss, cached = state["numpy"]
    assert kind == "MT19937" and keys.dtype == torch.int64 and keys.shape == (624,)
    assert (pos, has_gauss) == (np.random.get_state()[2], 1)
    assert cached == np.random.get_state()[4]
    assert keys.min() >= 0 and keys.max() > 2**31  # uint32 values, none wrapped to negative
    version, internal, gauss = state["random"]
    assert (version, tuple(internal), gauss) == random.getstate()
    assert torch.equal(state["torch"], torch.get_rng_state())


# --------------------------------------------------------------------------- Flower's metrics
def test_flower_gets_the_float_metrics_only(tmp_path):
    metrics = {"clean_accuracy": 0.5, "attack_success_rate": 0.25, "count": 3, "retrieval": {"i2t_r1": 0.1},
               "text_attack_success_rate": 0.75}
    rec = Recorder(RunDirectory(tmp_path), lambda a: dict(metrics), dict, log=lambda m: None)
    expected = {"clean_accuracy": 0.5, "attack_success_rate": 0.25, "text_attack_success_rate": 0.75}
    assert dict(rec(0, ARRAYS)) == expected and rec.initial == expected
    assert dict(rec(1, ARRAYS)) == expected
    # the round record keeps everything
    assert RunDirectory(tmp_path).read_rounds()[0]["count"] == 3


def test_a_resumed_recorder_without_listeners_answers_round_0_and_records_later_rounds(tmp_path):
    initial = {"clean_accuracy": 0.125, "attack_success_rate": 0.5}
    rec = Recorder(RunDirectory(tmp_path), lambda a: {"clean_accuracy": 0.75, "attack_success_rate": 0.0}, dict,
                   log=lambda m: None, rounds_done=2, initial=initial)
    assert dict(rec(0, ARRAYS)) == initial
    assert dict(rec(1, ARRAYS)) == {"clean_accuracy": 0.75, "attack_success_rate": 0.0}
    assert [r["round"] for r in RunDirectory(tmp_path).read_rounds()] == [3]


def test_a_fresh_recorder_logs_and_records_only_the_rounds_after_0(tmp_path):
    logged = []
    rec = Recorder(RunDirectory(tmp_path), lambda a: {"clean_accuracy": 0.5, "attack_success_rate": 0.0}, dict,
                   log=logged.append)
    rec(0, ARRAYS)
    assert RunDirectory(tmp_path).read_rounds() == [] and len(logged) == 1


# --------------------------------------------------------------------------- lifespan
def _window(*sets):
    return load_config(None, ["rounds=6", "attack.schedule.kind='window'", "attack.schedule.stop=2", *sets])


def test_the_lifespan_skips_rounds_without_an_asr():
    rounds = [{"round": 1, "attack_success_rate": 0.9}, {"round": 2, "attack_success_rate": 0.9},
              {"round": 3, "attack_success_rate": None}, {"round": 4, "clean_accuracy": 0.5},
              {"round": 5, "attack_success_rate": 0.75}, {"round": 6, "attack_success_rate": 0.25}]
    # round 6 is the first below 0.5: 6 − 2 − 1 = 3 rounds after the attack
    assert lifespan(_window(), rounds) == {"last_attack_round": 2, "backdoor_lifespan": 3, "backdoor_survived": False}
    # survived: the lifespan is the number of rounds with an ASR after the attack (3 and 4 have none)
    survived = rounds[:5]
    assert lifespan(_window(), survived) == {"last_attack_round": 2, "backdoor_lifespan": 1, "backdoor_survived": True}


def test_the_threshold_is_the_configured_one():
    rounds = [{"round": r, "attack_success_rate": 0.6} for r in range(1, 7)]
    assert lifespan(_window("attack.lifespan_threshold=0.7"), rounds)["backdoor_lifespan"] == 0
    assert lifespan(_window("attack.lifespan_threshold=0.6"), rounds)["backdoor_lifespan"] == 4


def test_no_lifespan_without_attackers_or_without_a_last_attack_round():
    rounds = [{"round": r, "attack_success_rate": 0.0} for r in range(1, 7)]
    assert lifespan(_window("attack.enabled=false"), rounds) == {}
    assert lifespan(load_config(None, ["rounds=6"]), rounds) == {}  # "from": attacks to the end
    assert lifespan(_window("attack.schedule.stop=5"), rounds)["backdoor_lifespan"] == 0


# --------------------------------------------------------------------------- finish
def _rounds(run_dir, *skipped):
    for r, reason in enumerate(skipped, start=1):
        run_dir.append_round({"round": r, "clean_accuracy": 0.5, "attack_success_rate": 0.25,
                              **({"skipped": reason} if reason else {})})


def test_finish_records_the_engine_and_threads_of_the_run(tmp_path):
    d = RunDirectory(tmp_path)
    _rounds(d, None)
    summary = finish(d, load_config(None, ["rounds=1", "resources.client_threads=3"]), initial=None, wall_s=1.0,
                     engine="ray")
    assert (summary["provenance"]["engine"], summary["provenance"]["client_threads"]) == ("ray", 3)
    assert json.loads((tmp_path / "summary.json").read_text())["provenance"]["engine"] == "ray"
    assert finish(d, load_config(None, ["rounds=1"]), initial=None, wall_s=1.0)["provenance"]["engine"] == "inprocess"


def test_a_run_that_aggregated_once_completed_and_one_that_ended_otherwise_keeps_its_status(tmp_path):
    d = RunDirectory(tmp_path / "a")
    _rounds(d, "quorum", None, "quorum")
    assert finish(d, load_config(None, ["rounds=3"]), initial=None, wall_s=1.0)["status"] == "completed"
    d = RunDirectory(tmp_path / "b")
    _rounds(d, "quorum")
    summary = finish(d, load_config(None, ["rounds=3"]), initial=None, wall_s=1.0, status="interrupted")
    assert summary["status"] == "interrupted" and "error" not in summary


def test_a_summary_md_that_cannot_be_written_fails_the_run_and_says_why(tmp_path, monkeypatch):
    d = RunDirectory(tmp_path)
    _rounds(d, None)

    def full(summary):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(d, "write_summary_md", full)
    summary = finish(d, load_config(None, ["rounds=1"]), initial=None, wall_s=1.0)
    assert (summary["status"], summary["error"]) == ("failed", "OSError: [Errno 28] No space left on device")
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"


def test_a_plot_error_other_than_oserror_is_not_swallowed(tmp_path, monkeypatch):
    d = RunDirectory(tmp_path)
    _rounds(d, None)
    monkeypatch.setattr(d, "plot", lambda **kw: (_ for _ in ()).throw(ValueError("bad")))
    with pytest.raises(ValueError, match="bad"):
        finish(d, load_config(None, ["rounds=1"]), initial=None, wall_s=1.0)
    assert not (tmp_path / "summary.json").exists()

