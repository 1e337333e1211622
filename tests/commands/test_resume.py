"""Resume after a kill: the checkpoint, the strategy's state, the rounds file, ``fedsim resume``.

The end-to-end test kills a real run with SIGKILL after round 2 and resumes it; its final
numbers must equal an uninterrupted run's. The unit tests check each piece against a run
that was never interrupted."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fedsim.app.recorder import CHECKPOINT, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from fedsim.config import ConfigError
from fedsim.report import RunDirectory
from fedsim.ray_session import RAY_SESSION, end_leftover_session
from fedsim.runner import resumable, resume
from strategies import centered_clipping, foolsgold
from strategies.robust_strategy import NODE_MEMORY, RobustStrategy
from tests.conftest import make_reply
from tests.strategies.test_strategy import FakeGrid

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- rounds.jsonl
def test_keep_rounds_drops_later_rounds_and_a_line_cut_short(tmp_path):
    d = RunDirectory(tmp_path)
    for r in (1, 2, 3):
        d.append_round({"round": r, "clean_accuracy": r / 10})
    with d.rounds_file.open("a") as f:
        f.write('{"round": 4, "clean_acc')  # the kill came mid-write
    d.keep_rounds(2)
    assert [r["round"] for r in d.read_rounds()] == [1, 2]
    assert not d.rounds_file.with_name("rounds.jsonl.tmp").exists()


# --------------------------------------------------------------------------- the checkpoint file
def test_checkpoint_round_trip_and_atomic_replace(tmp_path):
    path = tmp_path / CHECKPOINT
    save_checkpoint(path, {"round": 1, "global": {"w": torch.arange(3.0)}})
    save_checkpoint(path, {"round": 2, "global": {"w": torch.arange(3.0) + 1}})
    back = load_checkpoint(path)
    assert back["round"] == 2 and torch.equal(back["global"]["w"], torch.tensor([1.0, 2.0, 3.0]))
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_checkpoint_holding_a_pickled_object_is_refused(tmp_path):
    path = tmp_path / CHECKPOINT
    torch.save({"round": 1, "payload": _Evil()}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        load_checkpoint(path)


def test_rng_state_round_trip():
    import random

    state = rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(5), random.random()
    set_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


# --------------------------------------------------------------------------- the strategy's state
def _round(strategy, server_round, arrays, grid, rng):
    """One round: every sent client answers global + noise (client 0 larger, as an attacker)."""
    from flwr.app import ConfigRecord

    msgs = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
    replies = []
    for m in msgs:
        pid = m.metadata.dst_node_id - 100
        w = arrays["w"].numpy() + rng.normal(size=4).astype(np.float32) * (5.0 if pid == 0 else 1.0)
        replies.append(make_reply({"w": w}, {"partition-id": pid, "num-examples": 10}, m.metadata.dst_node_id))
    new, _ = strategy.aggregate_train(server_round, replies)
    return (new if new is not None else arrays), msgs


@pytest.mark.parametrize("rule, params", [(foolsgold, {}), (centered_clipping, {"tau": 1.0})])
def test_a_strategy_resumed_from_its_state_dict_aggregates_as_an_uninterrupted_one(rule, params, flower_task, tmp_path):
    """FoolsGold carries every client's update history, centered clipping the previous
    aggregate: a fresh strategy loaded with the state after round 2 must give round 3 and 4
    exactly as the strategy that never stopped."""
    from flwr.app import Array, ArrayRecord

    grid = FakeGrid(5)
    start = ArrayRecord({"w": Array(np.zeros(4, np.float32))})

    def make():
        return RobustStrategy(rule, params, num_partitions=5, per_round=4, seed=3, malicious=[0])

    full = make()
    arrays = start
    draws = [np.random.default_rng(r) for r in range(1, 5)]
    for r in range(1, 5):
        arrays, _ = _round(full, r, arrays, grid, draws[r - 1])
        assert "skipped" not in full.last_round, full.last_round["skipped"]
    expected = arrays["w"].numpy()
    assert np.abs(expected).sum() > 0

    first = make()
    arrays = start
    draws = [np.random.default_rng(r) for r in range(1, 5)]
    for r in range(1, 3):
        arrays, _ = _round(first, r, arrays, grid, draws[r - 1])
    state = first.state_dict()
    assert state["rounds_done"] == 2
    save_checkpoint(tmp_path / CHECKPOINT, {"strategy": state})
    state = load_checkpoint(tmp_path / CHECKPOINT)["strategy"]

    resumed = make()
    resumed.load_state_dict(state)
    for flower_round in (1, 2):  # Flower counts from 1 again
        arrays, msgs = _round(resumed, flower_round, arrays, grid, draws[flower_round + 1])
        assert "skipped" not in resumed.last_round
        assert {int(m.content.config_records["config"]["server-round"]) for m in msgs} == {flower_round + 2}
    np.testing.assert_array_equal(arrays["w"].numpy(), expected)
    assert resumed.last_round["participants"] == full.last_round["participants"]


def test_a_remembered_node_gets_its_last_global_back_once_after_a_resume(flower_task):
    """Neurotoxin's attacker node keeps the global models it received; after a resume its
    memory is gone, so the strategy sends the last one it sent that node, once."""
    from flwr.app import Array, ArrayRecord, ConfigRecord

    grid = FakeGrid(3)
    s = RobustStrategy(centered_clipping, num_partitions=3, per_round=3, seed=0, remember=[0])
    a1 = ArrayRecord({"w": Array(np.full(4, 1.0, np.float32))})
    msgs = list(s.configure_train(1, a1, ConfigRecord(), grid))
    assert all(NODE_MEMORY not in m.content.array_records for m in msgs)
    s.last_round["round"] = 1
    state = s.state_dict()
    assert set(state["last_sent"]) == {"0"}

    resumed = RobustStrategy(centered_clipping, num_partitions=3, per_round=3, seed=0, remember=[0])
    resumed.load_state_dict(state)
    a2 = ArrayRecord({"w": Array(np.full(4, 2.0, np.float32))})
    msgs = {m.metadata.dst_node_id - 100: m for m in resumed.configure_train(1, a2, ConfigRecord(), grid)}
    assert NODE_MEMORY in msgs[0].content.array_records
    np.testing.assert_array_equal(msgs[0].content.array_records[NODE_MEMORY]["w"].numpy(), np.full(4, 1.0))
    assert all(NODE_MEMORY not in msgs[p].content.array_records for p in (1, 2))
    msgs = list(resumed.configure_train(2, a2, ConfigRecord(), grid))
    assert all(NODE_MEMORY not in m.content.array_records for m in msgs)


# --------------------------------------------------------------------------- fedsim resume refuses
def test_resume_refuses_what_it_cannot_continue(tmp_path):
    with pytest.raises(ConfigError, match="not a run directory"):
        resume(tmp_path)
    (tmp_path / "config.toml").write_text('name = "x"\nrounds = 3\n')
    with pytest.raises(ConfigError, match="no checkpoint.pt"):
        resume(tmp_path)
    assert not resumable(tmp_path)
    torch.save({"round": 1, "payload": _Evil()}, tmp_path / CHECKPOINT)
    assert resumable(tmp_path)
    with pytest.raises(ConfigError, match="not a fedsim checkpoint"):
        resume(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"status": "completed"}))
    with pytest.raises(ConfigError, match="completed run"):
        resume(tmp_path)
    assert not resumable(tmp_path)


def test_cli_resume_exit_2_on_a_directory_that_is_no_run(tmp_path, capsys):
    from fedsim.cli import main

    assert main(["resume", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_a_leftover_session_note_outside_fedsims_folders_touches_nothing(tmp_path):
    victim = tmp_path / "precious"
    victim.mkdir()
    (tmp_path / RAY_SESSION).write_text(str(victim))
    end_leftover_session(tmp_path)
    assert victim.is_dir() and not (tmp_path / RAY_SESSION).exists()


# --------------------------------------------------------------------------- kill -9, then resume
# Small enough for seconds per round; FoolsGold carries history between rounds, Neurotoxin's
# attacker its node memory, 2 of 3 clients per round makes the sampling round-dependent.
KILLABLE = ["--set", "rounds=4", "--set", "data.train_size=300", "--set", "data.test_size=100",
            "--set", "model.init='scratch'", "--set", "clients.num=3", "--set", "clients.per_round=2",
            "--set", "attack.malicious=[0]", "--set", "attack.update.name='neurotoxin'", "--set", "attack.update.params={k_percent=5.0}",
            "--set", "strategy.name='foolsgold'", "--set", "resources.total_cpus=2",
            "--set", "resources.engine='ray'"]  # Ray's: its orphaned agents after the kill -9
COMPARED = ("rounds", "clean_accuracy", "attack_success_rate", "max_attack_success_rate",
            "initial_clean_accuracy", "retrieval", "bytes_up", "bytes_down", "mean_tpr", "mean_fpr",
            "aggregated_rounds", "status")


def _fedsim(*args, **kw):
    return subprocess.run([sys.executable, "-m", "fedsim.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, **kw)


def _alive(sid: int) -> list[str]:
    ps = subprocess.run(["ps", "-ww", "-e", "-o", "sid=,stat=,args="], capture_output=True, text=True).stdout
    rows = [line.split(None, 2) for line in ps.splitlines()]
    return [r[2] for r in rows if len(r) == 3 and r[0] == str(sid) and not r[1].startswith("Z")]


@pytest.mark.slow
def test_kill_9_after_round_2_then_resume_gives_the_uninterrupted_numbers(tmp_path):
    whole = tmp_path / "whole"
    done = _fedsim("run", "configs/quickstart.toml", "--out", str(whole), *KILLABLE)
    assert done.returncode == 0, done.stderr
    expected = json.loads((whole / "summary.json").read_text())
    assert not (whole / CHECKPOINT).exists()  # a completed run keeps no checkpoint

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedsim.cli", "run", "configs/quickstart.toml", "--out", str(out), *KILLABLE],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 400
        while not ((out / CHECKPOINT).is_file() and load_checkpoint(out / CHECKPOINT)["round"] >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before round 2"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (out / "summary.json").exists()
    assert (out / RAY_SESSION).is_file()  # what the killed run left running is on record

    resumed = _fedsim("resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after round" in resumed.stdout
    got = json.loads((out / "summary.json").read_text())
    assert {k: got[k] for k in COMPARED} == {k: expected[k] for k in COMPARED}
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    whole_rounds = [json.loads(line) for line in (whole / "rounds.jsonl").read_text().splitlines()]
    for a, b in zip(rounds, whole_rounds):
        for key in ("clean_accuracy", "attack_success_rate", "participants", "accepted", "update_norms"):
            assert a[key] == b[key], (a["round"], key)
    # nothing of the killed run's Ray session is left, and no folder of it
    deadline = time.monotonic() + 30
    while _alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _alive(proc.pid) == []
    assert not (out / RAY_SESSION).exists() and not (out / CHECKPOINT).exists()
    assert _fedsim("resume", str(out)).returncode == 2  # completed: nothing to resume


def test_end_ray_ends_renamed_orphans_and_the_descendants_of_the_session(tmp_path):
    """After a kill -9, Ray's agents live on as orphans whose command line (``ray::DashboardAgent``)
    no longer names the session folder; they hold their logs in it open. A worker spawned by the
    raylet names nothing of the folder at all. end_ray must find both."""
    from fedsim.ray_session import end_ray, session_processes

    ray_dir = tmp_path / "fedsim-ray-x"
    (ray_dir / "logs").mkdir(parents=True)
    log = ray_dir / "logs" / "agent.log"
    agent = subprocess.Popen([sys.executable, "-c", "import sys,time; f=open(sys.argv[1],'w'); time.sleep(600)", str(log)])
    # a "raylet" naming the folder, with a child that names nothing of it and opens nothing in it
    raylet = subprocess.Popen([sys.executable, "-c", "import subprocess,sys,time; subprocess.Popen(['sleep','600']); time.sleep(600)",
                               f"--session-dir={ray_dir}"])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (log.exists() and len(_children(raylet.pid)) == 1):
            time.sleep(0.1)
        worker = _children(raylet.pid)
        assert len(worker) == 1
        found = {p.pid for p in session_processes(ray_dir)}
        assert found == {agent.pid, raylet.pid, worker[0]}
        end_ray(ray_dir, grace_s=1.0)
        assert agent.wait(timeout=10) is not None and raylet.wait(timeout=10) is not None
        assert not _running(worker[0]) and not ray_dir.exists()
    finally:
        for p in (agent, raylet):
            if p.poll() is None:
                p.kill()


def _children(pid: int) -> list[int]:
    import psutil

    return [c.pid for c in psutil.Process(pid).children()]


def _running(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
