"""``fedsim deploy``: a SuperLink and 3 SuperNodes on 127.0.0.1 run 2 tiny rounds of the same
ServerApp/ClientApp into a run directory like ``fedsim run``'s, and nothing it started
outlives it — after a normal end and after a Ctrl-C."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from fedsim.cli import main
from fedsim.deploy import MARKER_FILE, deployment_processes
from fedsim.report import DEPLOY_DIR, RunDirectoryError, new_run_directory

# The end-to-end tests take minutes: every message starts a ClientApp process (torch, open_clip).

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--set", "name='deployed'", "--set", "rounds=2", "--set", "data.train_size=150",
        "--set", "data.test_size=60", "--set", "model.init='scratch'", "--set", "clients.num=3",
        "--set", "clients.per_round=3", "--set", "attack.malicious=[0]"]


def test_the_serverapp_opens_a_run_directory_holding_only_the_deploy_folder(tmp_path):
    (tmp_path / "a" / DEPLOY_DIR).mkdir(parents=True)
    assert new_run_directory(tmp_path / "a", allow=(DEPLOY_DIR,)).path == tmp_path / "a"
    (tmp_path / "a" / "rounds.jsonl").write_text("{}\n")
    with pytest.raises(RunDirectoryError, match="not empty"):
        new_run_directory(tmp_path / "a", allow=(DEPLOY_DIR,))
    (tmp_path / "b" / DEPLOY_DIR).mkdir(parents=True)
    with pytest.raises(RunDirectoryError, match="not empty"):  # fedsim run's --out: no exception
        new_run_directory(tmp_path / "b")


def test_an_invalid_config_starts_nothing(tmp_path, capsys):
    assert main(["deploy", "configs/quickstart.toml", "--out", str(tmp_path / "run"), "--set", "rounds=0"]) == 2
    assert "rounds" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def _deploy(out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-m", "fedsim.cli", "deploy", "configs/quickstart.toml",
                             "--out", str(out), *TINY],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _left_over(out: Path) -> list:
    return deployment_processes((out / "deploy" / MARKER_FILE).read_text().strip())


def _a_clientapp_runs(out: Path) -> bool:
    for p in _left_over(out):
        with contextlib.suppress(psutil.Error):
            if "flwr-clientapp" in " ".join(p.cmdline()):
                return True
    return False


@pytest.mark.slow
def test_two_rounds_on_three_local_supernodes_and_nothing_left_running(tmp_path):
    out = tmp_path / "run"
    proc = _deploy(out)
    try:
        output, _ = proc.communicate(timeout=1500)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        assert 0.0 <= r["clean_accuracy"] <= 1.0 and 0.0 <= r["attack_success_rate"] <= 1.0
        assert r["replies"] == 3 and r["participants"] == [0, 1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"] == 2
    assert {"config.toml", "summary.md", "metrics.png"} <= {p.name for p in out.iterdir()}
    assert not (out / "checkpoint.pt").exists()
    logs = {p.name for p in (out / "deploy").iterdir()}
    assert {"superlink.log", "supernode-0.log", "supernode-2.log", "flwr-run.log"} <= logs
    # each of Flower's log lines once (a root-logger handler in the ServerApp's process printed
    # every one a second time as "INFO:flwr:...")
    streamed = (out / "deploy" / "flwr-run.log").read_text(errors="replace")
    assert streamed.count("Starting RobustStrategy strategy") == 1 and "INFO:flwr:" not in streamed
    assert _left_over(out) == []


@pytest.mark.slow
def test_ctrl_c_ends_every_process_and_records_the_interruption(tmp_path):
    out = tmp_path / "run"
    proc = _deploy(out)
    try:
        # Interrupt while a ClientApp runs: Flower starts the ServerApp and ClientApps in
        # sessions of their own, which a kill of fedsim's process group would miss.
        deadline = time.monotonic() + 900
        while not (proc.poll() is None and (out / "deploy" / MARKER_FILE).is_file()
                   and _a_clientapp_runs(out)):
            assert proc.poll() is None and time.monotonic() < deadline, "no ClientApp ever started"
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    assert _left_over(out) == []


def _processes_naming(text: str) -> list:
    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if text in " ".join(p.cmdline()):
                found.append(p)
    return found


@pytest.mark.slow
def test_flwr_run_on_the_simulation_runtime_prints_each_line_once(tmp_path):
    """``flwr run . local`` as a Flower user types it (Flower's simulation runtime: a local
    SuperLink, flwr-simulation, Ray actors): the run directory as ``fedsim run``'s, and none of
    Flower's lines twice — the ServerApp's (root handler: "INFO:flwr:...") nor the Ray actors'
    ("WARNING:flwr:Manually terminating ClientAppActor"; Ray forwards an actor's last lines while
    the runtime stops, so that one reaches the stream in some runs only), and no Ray notice about
    ``num_gpus=0``."""
    home = tmp_path / "flwr-home"
    config = tmp_path / "tiny.toml"
    config.write_text(f'extends = "{ROOT / "configs" / "quickstart.toml"}"\nname = "flwr-run"\nrounds = 2\n'
                      "[data]\ntrain_size = 150\ntest_size = 60\n[model]\ninit = \"scratch\"\n"
                      "[clients]\nnum = 3\nper_round = 3\n[attack]\nmalicious = [0]\n")
    out = tmp_path / "run"
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    try:
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "flwr"), "run", ".", "local", "--stream",
             "--federation-config", "num-supernodes=3",
             "--run-config", f"config='{config}' out='{out}'"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    finally:
        # Flower leaves its local SuperLink (and its SuperExec) running after the run, by design
        for p in _processes_naming(str(home)):
            with contextlib.suppress(psutil.Error):
                for child in p.children(recursive=True):
                    child.kill()
                p.kill()
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert [json.loads(line)["round"] for line in (out / "rounds.jsonl").read_text().splitlines()] == [1, 2]
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
    assert not (out / "checkpoint.pt").exists()
    assert output.count("Starting RobustStrategy strategy") == 1
    assert "INFO:flwr:" not in output and "WARNING:flwr:" not in output, output
    assert "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO" not in output, output
