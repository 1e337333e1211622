"""End to end through Flower's simulation engine (Ray): a tiny run writes the run directory,
learns, and is reproducible."""

import json

import pytest

from fedsim.runner import load, run

pytestmark = pytest.mark.slow

# A short warm start leaves the model on the steep part of its learning curve (CA ≈ 0.18), so
# two federated rounds must visibly raise it; from scratch, two rounds barely move (measured).
TINY = [
    "name=tiny", "rounds=2", "data.train_size=1500", "data.test_size=500", "data.root_size=20",
    "model.init='warm'", "model.pretrain_size=2000", "model.pretrain_epochs=3",
    "clients.num=3", "clients.per_round=3", "clients.local_epochs=3", "clients.lr=5e-4",
    "attack.malicious=[0]", "resources.total_cpus=2",
]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    cfg = load(None, TINY)
    base = tmp_path_factory.mktemp("e2e")
    return [run(cfg, base / f"run{i}", log=lambda m: None) for i in range(2)], base


def test_run_directory_contract(tiny_runs):
    (summary, _), base = tiny_runs
    d = base / "run0"
    for name in ("config.toml", "rounds.jsonl", "summary.json", "summary.md", "metrics.png"):
        assert (d / name).is_file(), name
    rounds = [json.loads(line) for line in (d / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        for key in ("clean_accuracy", "attack_success_rate", "wall_s", "tpr", "fpr", "bytes_up",
                    "bytes_down", "participants", "accepted", "retrieval"):
            assert key in r, key
        assert r["participants"] == [0, 1, 2] and r["rejected"] == {}
        assert r["tpr"] == 0.0 and r["fpr"] == 0.0  # FedAvg flags nobody
    on_disk = json.loads((d / "summary.json").read_text())
    assert on_disk["rounds"] == 2 and on_disk["status"] == "completed"
    assert on_disk["clean_accuracy"] == rounds[-1]["clean_accuracy"]


def test_clean_accuracy_rises_above_the_initial_model(tiny_runs):
    (summary, _), _ = tiny_runs
    assert summary["clean_accuracy"] > summary["initial_clean_accuracy"] + 0.02


def test_same_config_and_seed_give_identical_numbers(tiny_runs):
    (a, b), _ = tiny_runs
    keys = ("clean_accuracy", "attack_success_rate", "initial_clean_accuracy", "retrieval", "bytes_up")
    assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
