"""The in-process engine (fedsim.app.local_grid): a Flower Grid that runs the ClientApp in the
run's own process. Unit tests of what it owes a ClientApp (its own copy of each message, a
Context per node, error replies, threads and random states left as they were), then real runs:
the same numbers as Flower's simulation on Ray, round by round, and a Ctrl-C that leaves
nothing behind."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedsim.app.local_grid import InProcessGrid
from fedsim.app.server_app import RunStopped
from fedsim.config import ConfigError, load_config
from fedsim.runner import load, run

ROOT = Path(__file__).resolve().parents[2]


def _echo_app(seen: list):
    """A ClientApp that records (partition, state counter) and trains "in place": it adds 1 to
    the arrays it received, then replies with them."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context):
        arrays = msg.content.array_records["arrays"].to_torch_state_dict()
        for v in arrays.values():
            v.add_(1.0)  # in place, on what the message holds
        count = int(context.state.metric_records["m"]["count"]) + 1 if "m" in context.state.metric_records else 1
        context.state.metric_records["m"] = MetricRecord({"count": count})
        seen.append((context.node_config["partition-id"], count, torch.get_num_threads()))
        torch.rand(3)  # uses the global RNG
        np.random.rand(3)
        random.random()
        if context.node_config["partition-id"] == 2:
            raise ValueError("partition 2 always fails")
        return Message(RecordDict({"arrays": ArrayRecord(arrays)}), reply_to=msg)

    return app


def _train_messages(grid, arrays):
    return [Message(RecordDict({"arrays": arrays}), dst_node_id=n, message_type="train")
            for n in sorted(grid.get_node_ids())]


def test_each_node_holds_its_partition_and_keeps_its_context_between_rounds():
    seen = []
    grid = InProcessGrid(_echo_app(seen), 3, client_threads=1)
    nodes = sorted(grid.get_node_ids())
    assert len(nodes) == 3 and len(set(nodes)) == 3
    arrays = ArrayRecord({"w": torch.zeros(4)})
    for _ in range(2):
        grid.send_and_receive(_train_messages(grid, arrays))
    assert [(p, c) for p, c, _ in seen] == [(0, 1), (1, 1), (2, 1), (0, 2), (1, 2), (2, 2)]


def test_a_client_never_shares_a_tensor_with_the_server_or_another_client():
    seen = []
    grid = InProcessGrid(_echo_app(seen), 3, client_threads=1)
    arrays = ArrayRecord({"w": torch.zeros(4)})
    replies = grid.send_and_receive(_train_messages(grid, arrays))
    # every client added 1 in place to what it received: the server's arrays are untouched and
    # each reply holds 0 + 1 (not 1, 2, 3 as with one shared tensor)
    assert torch.equal(arrays.to_torch_state_dict()["w"], torch.zeros(4))
    ok = [r for r in replies if r.has_content()]
    assert len(ok) == 2
    for r in ok:
        assert torch.equal(r.content.array_records["arrays"].to_torch_state_dict()["w"], torch.ones(4))


def test_a_client_exception_is_an_error_reply_to_its_message_as_in_flowers_simulation():
    grid = InProcessGrid(_echo_app([]), 3, client_threads=1)
    messages = _train_messages(grid, ArrayRecord({"w": torch.zeros(2)}))
    replies = grid.send_and_receive(messages)
    assert len(replies) == 3
    failed = [r for r in replies if r.has_error()]
    assert len(failed) == 1
    assert failed[0].metadata.reply_to_message_id == messages[2].metadata.message_id
    assert failed[0].metadata.src_node_id == messages[2].metadata.dst_node_id
    assert failed[0].error.code == 2  # ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert "partition 2 always fails" in failed[0].error.reason
    assert all(r.metadata.message_id for r in replies)  # replies carry ids, as the SuperLink's do


def test_clients_run_with_their_thread_count_and_leave_the_servers_threads_and_rngs_alone():
    seen = []
    grid = InProcessGrid(_echo_app(seen), 2, client_threads=1)
    before_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(5)
        np.random.seed(5)
        random.seed(5)
        expected = (torch.rand(2), np.random.rand(2), random.random())
        torch.manual_seed(5)
        np.random.seed(5)
        random.seed(5)
        grid.send_and_receive(_train_messages(grid, ArrayRecord({"w": torch.zeros(2)})))
        got = (torch.rand(2), np.random.rand(2), random.random())
        assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]
        assert {t for _, _, t in seen} == {1} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before_threads)


def test_a_set_stop_event_stops_the_run_before_the_next_client():
    import threading

    stop = threading.Event()
    seen = []
    app = _echo_app(seen)
    grid = InProcessGrid(app, 3, client_threads=1, stop=stop)
    stop.set()
    with pytest.raises(RunStopped):
        grid.send_and_receive(_train_messages(grid, ArrayRecord({"w": torch.zeros(2)})))
    assert seen == []


def test_the_engine_choice_and_what_the_in_process_engine_refuses():
    cfg = load_config(None)
    assert cfg.resources.engine == "auto"
    # the defaults (10 rounds × 10 clients × 400 samples): 40,000 sample-epochs, Ray's parallel
    # clients win; a small run (2 × 2 × 100 × 1) has no start-up to pay in process
    two_cpus = ["resources.total_cpus=2"]
    assert load_config(None, two_cpus).engine() == "ray"
    small = [*two_cpus, "rounds=2", "clients.num=2", "clients.per_round=2", "data.train_size=200"]
    assert load_config(None, small).engine() == "inprocess"
    assert load_config(None, [*two_cpus, "resources.client_cpus=2"]).engine() == "inprocess"  # 1 at a time
    assert load_config(None, [*two_cpus, "resources.engine='inprocess'"]).engine() == "inprocess"
    assert load_config(None, small).engine("127.0.0.1:6379") == "ray"
    assert cfg.resources.engine_for(0.0) == "inprocess"
    assert cfg.resources.engine_for(0.1) == "ray"  # a straggler needs a server that stops waiting
    assert cfg.resources.engine_for(0.0, "127.0.0.1:6379") == "ray"  # a sweep's cluster
    assert load_config(None, ["resources.engine='ray'"]).resources.engine_for(0.0) == "ray"
    with pytest.raises(ConfigError, match=r"resources.engine='inprocess' cannot simulate stragglers"):
        load_config(None, ["resources.engine='inprocess'", "faults.straggler_rate=0.1"])
    with pytest.raises(ConfigError, match=r"resources.engine='inprocess'.*ray_address='127.0.0.1:1'"):
        load_config(None, ["resources.engine='inprocess'", "resources.ray_address='127.0.0.1:1'"])
    with pytest.raises(ConfigError, match=r"resources.engine='threads'"):
        load_config(None, ["resources.engine='threads'"])


# --------------------------------------------------------------------------- real runs
# An attack and a filtering rule, 6 clients with 5 a round (sampling varies by round), a crash
# and a lost reply: everything a round depends on goes through the engine.
SAME = ["rounds=2", "data.train_size=300", "data.test_size=100", "model.init='scratch'",
        "clients.num=6", "clients.per_round=5", "attack.malicious=[0]",
        "strategy.name='multi_krum'", "strategy.params={f=1, m=2}", "faults.crash_rate=0.2", "faults.drop_rate=0.1",
        "resources.total_cpus=2"]


@pytest.mark.slow
def test_the_in_process_engine_and_flowers_ray_simulation_give_identical_rounds(tmp_path):
    runs = {}
    for engine in ("inprocess", "ray"):
        summary = run(load(None, [*SAME, f"resources.engine='{engine}'"]), tmp_path / engine, log=lambda m: None)
        assert summary["status"] == "completed", summary
        runs[engine] = [json.loads(line) for line in (tmp_path / engine / "rounds.jsonl").read_text().splitlines()]
    assert not list(tmp_path.glob("inprocess/ray-session.txt"))
    a, b = runs["inprocess"], runs["ray"]
    assert len(a) == len(b) == 2
    assert any(r["rejected"] for r in a)  # the faults took part
    for x, y in zip(a, b):
        x.pop("wall_s"), y.pop("wall_s")
        # the same clients rejected for the same reason; Ray wraps a client's exception in its own
        # (RayTaskError(ClientAppException) with the actor's traceback), this engine does not
        rx, ry = x.pop("rejected"), y.pop("rejected")
        assert rx.keys() == ry.keys()
        for p in rx:
            assert ("injected crash" in rx[p]) == ("injected crash" in ry[p]), (p, rx[p], ry[p])
            assert rx[p] == ry[p] or "injected crash" in rx[p]
        assert x == y


@pytest.mark.slow
def test_an_in_process_run_imports_neither_flowers_simulation_nor_ray(tmp_path):
    # flwr.simulation costs about a second to import: a cell of a sweep or a `fedsim run` on
    # this engine has no use for it
    sets = [*SAME, "rounds=1", "resources.engine='inprocess'"]
    code = ("import sys; from fedsim.runner import load, run; "
            f"s = run(load(None, {sets!r}), {str(tmp_path / 'run')!r}, log=lambda m: None); "
            "print(s['status'], [m for m in ('flwr.simulation', 'ray') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == "completed []"


@pytest.mark.slow
def test_ctrl_c_in_the_in_process_engine_ends_with_exit_130_and_no_process_left(tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "fedsim.cli", "run", "configs/quickstart.toml", "--out", str(out),
            "--set", "rounds=50"]
    for item in ["data.train_size=200", "data.test_size=100", "model.init='scratch'", "clients.num=2",
                 "clients.per_round=2", "attack.malicious=[0]", "resources.total_cpus=2"]:
        argv += ["--set", item]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not ((out / "rounds.jsonl").is_file() and (out / "rounds.jsonl").read_text().count("\n") >= 1):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    assert stderr == "fedsim: interrupted; finished rounds are in the run directory\n", stderr
    assert "ray-session.txt" not in {p.name for p in out.iterdir()}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["rounds"] >= 1
    ps = subprocess.run(["ps", "-e", "-o", "sid="], capture_output=True, text=True).stdout.split()
    assert str(proc.pid) not in ps  # no process of the run's session is left
