"""End to end through Flower's simulation engine (Ray): a tiny run writes the run directory,
learns, and is reproducible."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedsim.runner import load, run

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

# From scratch, so that the effect of training is large and the same on any CPU: the untrained
# model's retrieval is at chance (Recall@5 ≈ 0.05 over 80 distinct captions), and two rounds
# lift it tenfold (colour is learnt first). The earlier version started from a short warm start
# and asked clean accuracy to rise by 0.02 in two rounds: it rose 0.172 → 0.186 on an Intel
# Xeon (0.02 was about the whole effect, and summation order moves it by as much).
TINY = [
    "name=tiny", "rounds=2", "data.train_size=1500", "data.test_size=500", "data.root_size=20",
    "model.init='scratch'",
    "clients.num=3", "clients.per_round=3", "clients.local_epochs=3", "clients.lr=5e-4",
    "attack.malicious=[0]", "resources.total_cpus=2",
]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    # run0 on the default in-process engine, run1 on Flower's simulation on Ray: the same numbers
    cfgs = [load(None, TINY), load(None, [*TINY, "resources.engine='ray'"])]
    base = tmp_path_factory.mktemp("e2e")
    return [run(cfg, base / f"run{i}", log=lambda m: None) for i, cfg in enumerate(cfgs)], base


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


def test_two_rounds_lift_retrieval_far_above_the_untrained_model(tiny_runs):
    """Trained vs untrained on the same machine: the initial model's retrieval is measured here
    by the run's own evaluator (the ServerApp's round 0 keeps only its scalars). Measured on an
    Intel Xeon (2026-12-06): Recall@5 0.052 → 0.522 image→text, 0.038 → 0.400 text→image; the
    threshold, +0.15, is a third of the smaller effect."""
    from fedsim.app.build import build_server
    from fedsim.records import to_array_record

    (summary, _), _ = tiny_runs
    server = build_server(load(None, TINY), log=lambda m: None)
    initial = server.evaluate(to_array_record(server.initial))
    assert initial["clean_accuracy"] == pytest.approx(summary["initial_clean_accuracy"], abs=1e-6)
    for k in ("i2t_r5", "t2i_r5"):
        assert initial["retrieval"][k] < 0.15, (k, initial["retrieval"])  # chance: 5 of 80 captions
        assert summary["retrieval"][k] > initial["retrieval"][k] + 0.15, (k, initial, summary["retrieval"])


def test_same_config_and_seed_give_identical_numbers_on_either_engine(tiny_runs):
    (a, b), _ = tiny_runs
    keys = ("clean_accuracy", "attack_success_rate", "initial_clean_accuracy", "retrieval", "bytes_up")
    assert {k: a[k] for k in keys} == {k: b[k] for k in keys}


# A run small enough to start Ray and finish a round in seconds (from scratch: no warm start).
SMALL = ["--set", "data.train_size=200", "--set", "data.test_size=100", "--set", "model.init='scratch'",
         "--set", "clients.num=2", "--set", "clients.per_round=2", "--set", "attack.malicious=[0]",
         "--set", "resources.total_cpus=2", "--set", "resources.engine='ray'"]


def _session(sid: int) -> list[str]:
    """Command lines of the live processes in session ``sid`` (a run and the Ray it started)."""
    ps = subprocess.run(["ps", "-ww", "-e", "-o", "sid=,stat=,args="], capture_output=True, text=True).stdout
    rows = [line.split(None, 2) for line in ps.splitlines()]
    return [r[2] for r in rows if len(r) == 3 and r[0] == str(sid) and not r[1].startswith("Z")]


def test_ctrl_c_ends_with_one_line_exit_130_and_nothing_left(tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) during round 2."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedsim.cli", "run", "configs/quickstart.toml", "--out", str(out),
         "--set", "rounds=50", *SMALL],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 400
        while not ((out / "rounds.jsonl").is_file() and (out / "rounds.jsonl").read_text().count("\n") >= 1):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        # Seen once in CI: a single ps snapshot right after round 1 listed no raylet (cause not
        # found); look again for a few seconds before concluding Ray is not this run's.
        seen = time.monotonic() + 15
        while not any("raylet" in cmd for cmd in _session(proc.pid)) and time.monotonic() < seen:
            time.sleep(0.5)
        assert any("raylet" in cmd for cmd in _session(proc.pid))
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    assert stderr == "fedsim: interrupted; finished rounds are in the run directory\n", stderr
    assert "Traceback" not in stdout + stderr and "Segmentation" not in stdout + stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["rounds"] >= 1
    for name in ("config.toml", "rounds.jsonl", "summary.md", "metrics.png"):
        assert (out / name).is_file(), name
    deadline = time.monotonic() + 30
    while _session(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _session(proc.pid) == []


def test_a_failed_simulation_exits_promptly_and_stops_ray(tmp_path):
    """Flower's runtime fails at start (no client fits the CPUs; ``fedsim run`` refuses this
    config, ``run`` does not check): the ServerApp thread must not keep the process alive."""
    script = (
        "import sys\n"
        "from fedsim.config import load_config\n"
        "from fedsim.runner import run\n"
        "cfg = load_config(None, ['rounds=1', 'data.train_size=200', 'data.test_size=100', "
        "\"model.init='scratch'\", 'clients.num=2', 'clients.per_round=2', "
        "'resources.client_cpus=4', 'resources.total_cpus=2', \"resources.engine='ray'\"])\n"
        "try:\n"
        "    run(cfg, sys.argv[1], log=lambda m: None)\n"
        "except RuntimeError:\n"
        "    sys.exit(1)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "run")], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "ActorPool is empty" in summary["error"]
    assert _session(proc.pid) == []
