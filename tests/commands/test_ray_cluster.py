"""Simulation on a running Ray cluster (``resources.ray_address``): a one-node cluster started
by the test (``ray start --head``), a tiny run on it, the cluster left running by the run and
stopped by the test."""

import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from fedsim.ray_session import end_ray, session_processes
from fedsim.runner import backend_config, load

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_backend_config_connects_to_the_address_and_asks_nothing_of_this_machine():
    cfg = load(None, ["resources.ray_address='127.0.0.1:6380'", "resources.client_cpus=4"])
    init = backend_config(cfg, None)["init_args"]
    assert init["address"] == "127.0.0.1:6380"
    assert not {"num_cpus", "num_gpus", "_temp_dir"} & set(init)


def test_a_run_on_a_one_node_cluster_completes_and_leaves_the_cluster_running(tmp_path):
    head = Path(tempfile.mkdtemp(prefix="fedsim-ray-"))  # short: Ray's sockets live in it
    port = _free_port()
    ray = str(Path(sys.executable).with_name("ray"))
    try:
        subprocess.run([ray, "start", "--head", f"--port={port}", f"--temp-dir={head}", "--num-cpus=2",
                        "--include-dashboard=false", "--disable-usage-stats"],
                       check=True, capture_output=True, text=True, timeout=300)
        cluster = {p.pid for p in session_processes(head)}
        assert cluster, "ray start --head left no process behind"
        cfg = load(None, [
            "name=cluster", "rounds=2", "data.train_size=200", "data.test_size=100", "model.init='scratch'",
            "clients.num=2", "clients.per_round=2", "attack.malicious=[0]",
            f"resources.ray_address='127.0.0.1:{port}'",
        ])
        from fedsim.runner import run

        summary = run(cfg, tmp_path / "run", log=lambda m: None)
        assert summary["status"] == "completed" and summary["rounds"] == 2
        rounds = [json.loads(line) for line in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
        assert all(r["replies"] == 2 for r in rounds)
        assert not (tmp_path / "run" / "ray-session.txt").exists()
        # the run connected and left: the cluster's own processes are all still there
        assert cluster <= {p.pid for p in session_processes(head)}
    finally:
        end_ray(head)
    assert session_processes(head) == [] and not head.exists()
