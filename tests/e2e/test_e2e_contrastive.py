"""End to end through Flower's simulation engine: the contrastive defenses wired into a tiny
run — CleanCLIP's server step with RoCLIP clients, EmInspector with adversarially training
clients."""

import json

import pytest

from fedsim.runner import load, run

pytestmark = pytest.mark.slow

# From scratch, small data, 3 clients (one malicious): wiring, not learning.
SMALL = [
    "rounds=2", "data.train_size=200", "data.test_size=100", "data.root_size=8", "model.init='scratch'",
    "clients.num=3", "clients.per_round=3", "clients.batch_size=16", "attack.malicious=[0]",
    "resources.total_cpus=2",
]


def _rounds(d):
    return [json.loads(line) for line in (d / "rounds.jsonl").read_text().splitlines()]


def test_cleanclip_after_the_last_round_with_roclip_clients(tmp_path):
    cfg = load(None, [*SMALL, "name=cleanclip", "defense.cleanclip.enabled=true", "defense.cleanclip.epochs=1",
                      "defense.cleanclip.min_pairs=8",
                      "defense.cleanclip.batch_size=8", "clients.training='roclip'", "clients.roclip_every=1",
                      "clients.roclip_pool=16"])
    summary = run(cfg, tmp_path / "run", log=lambda m: None)
    assert summary["status"] == "completed"
    first, last = _rounds(tmp_path / "run")
    before = {"clean_accuracy_before_cleanclip", "attack_success_rate_before_cleanclip", "cleanclip_loss"}
    assert not before & set(first)  # at_end only: the step runs after round 2
    assert before <= set(last) and {"clean_accuracy", "attack_success_rate"} <= set(last)


def test_eminspector_filters_with_adversarially_training_clients(tmp_path):
    cfg = load(None, [*SMALL, "name=eminspector", "strategy.name='eminspector'",
                      "clients.training='adversarial'", "clients.adversarial_steps=1"])
    summary = run(cfg, tmp_path / "run", log=lambda m: None)
    assert summary["status"] == "completed"
    for r in _rounds(tmp_path / "run"):
        assert len(r["rule_info"]["malicious_score"]) == 3
        assert sorted(r["accepted"] + r["flagged"]) == r["participants"] == [0, 1, 2]
        assert "tpr" in r and "fpr" in r


def test_simclr_mode_with_an_ssl_backdoor_records_knn_and_probe_numbers(tmp_path):
    cfg = load(None, [*SMALL, "name=simclr", "objective='simclr'", "simclr.projection_dim=16",
                      "attack.data.trigger.name='ctrl'"])
    summary = run(cfg, tmp_path / "run", log=lambda m: None)
    assert summary["status"] == "completed"
    rounds = _rounds(tmp_path / "run")
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        assert r["clean_accuracy"] == r["knn_accuracy"]
        for key in ("attack_success_rate", "knn_accuracy", "probe_accuracy", "probe_attack_success_rate"):
            assert 0.0 <= r[key] <= 1.0
        assert "retrieval" not in r and "wall_s" in r and "tpr" in r and "fpr" in r
    assert summary["clean_accuracy"] == rounds[-1]["knn_accuracy"]
    assert summary["probe_accuracy"] == rounds[-1]["probe_accuracy"]
