"""Fault injection: crashing clients, stragglers past the round timeout, lost replies."""

import json
from collections import Counter

import numpy as np
import pytest

from fedsim.app import fault_of
from fedsim.app.server_app import LossyGrid
from fedsim.config import ConfigError, load_config
from fedsim.runner import load, run


def _cfg(**faults):
    return load_config(None, [f"faults.{k}={v}" for k, v in faults.items()])


def test_fault_rates_are_the_configured_frequencies_and_exclusive():
    cfg = _cfg(crash_rate=0.3, straggler_rate=0.1, drop_rate=0.2)
    draws = Counter(fault_of(cfg, r, p) for r in range(1, 201) for p in range(50))
    n = sum(draws.values())
    # 10,000 draws: a binomial share is within ±0.015 of its rate with > 99.8 % probability
    assert abs(draws["crash"] / n - 0.3) < 0.015
    assert abs(draws["straggle"] / n - 0.1) < 0.015
    assert abs(draws["drop"] / n - 0.2) < 0.015
    assert abs(draws[None] / n - 0.4) < 0.015


def test_faults_repeat_with_the_seed_and_change_with_it():
    a, b = _cfg(crash_rate=0.5), load_config(None, ["faults.crash_rate=0.5", "seed=1"])
    pattern = [fault_of(a, r, p) for r in range(1, 11) for p in range(10)]
    assert pattern == [fault_of(a, r, p) for r in range(1, 11) for p in range(10)]
    assert pattern != [fault_of(b, r, p) for r in range(1, 11) for p in range(10)]


def test_no_faults_by_default():
    cfg = load_config(None, [])
    assert {fault_of(cfg, r, p) for r in range(1, 30) for p in range(30)} == {None}


@pytest.mark.parametrize("bad, field", [
    ({"crash_rate": 1.5}, "crash_rate"), ({"drop_rate": -0.1}, "drop_rate"),
    ({"round_timeout_s": 0}, "round_timeout_s"),
    ({"crash_rate": 0.6, "drop_rate": 0.6}, "at most 1"),
])
def test_bad_fault_settings_are_config_errors(bad, field):
    with pytest.raises(ConfigError, match=field):
        _cfg(**bad)


def test_the_lossy_grid_loses_exactly_the_replies_fault_of_drops(flower_task):
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict

    from tests.conftest import make_reply

    cfg = _cfg(drop_rate=0.5)
    server_round = 3

    class Inner:
        def send_and_receive(self, messages, timeout=None):
            return [make_reply({"w": np.zeros(2, np.float32)},
                               {"partition-id": m.metadata.dst_node_id - 100, "num-examples": 1},
                               m.metadata.dst_node_id) for m in messages]

    sent = [Message(RecordDict({"config": ConfigRecord({"server-round": server_round})}),
                    dst_node_id=100 + p, message_type=MessageType.TRAIN) for p in range(20)]
    got = LossyGrid(Inner(), cfg).send_and_receive(sent, timeout=1)
    kept = sorted(r.content.metric_records["metrics"]["partition-id"] for r in got)
    assert kept == [p for p in range(20) if fault_of(cfg, server_round, p) != "drop"]
    assert 0 < len(kept) < 20


@pytest.mark.slow
def test_a_run_with_30_percent_crashing_clients_completes_and_records_each_failure(tmp_path):
    cfg = load(None, [
        "name=faults", "rounds=3", "data.train_size=300", "data.test_size=100", "model.init='scratch'",
        "clients.num=6", "clients.per_round=6", "attack.malicious=[0]", "resources.total_cpus=2",
        "faults.crash_rate=0.3", "faults.drop_rate=0.15",
    ])
    summary = run(cfg, tmp_path / "run", log=lambda m: None)
    assert summary["status"] == "completed" and summary["rounds"] == 3
    rounds = [json.loads(line) for line in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    failures = 0
    for r in rounds:
        expected = {p: fault_of(cfg, r["round"], p) for p in range(6)}
        crashed = {int(p) for p, why in r["rejected"].items() if "injected crash" in why}
        lost = {int(p) for p, why in r["rejected"].items() if why == "no reply"}
        assert crashed == {p for p, f in expected.items() if f == "crash"}, r
        assert lost == {p for p, f in expected.items() if f == "drop"}, r
        assert r["replies"] == sum(f is None for f in expected.values())
        failures += len(crashed) + len(lost)
        if r["replies"]:
            assert not r.get("skipped")
    assert failures > 0  # the seed makes some clients fail
    assert summary["rejected_replies"] == failures
