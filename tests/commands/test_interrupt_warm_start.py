"""Ctrl-C during the warm start (``model.init = "warm"`` with an empty cache: fedsim.pretrain
trains the checkpoint before the federated rounds) ends the run at once, as during the rounds:
exit 130, one line, summary.json saying "interrupted", nothing left behind. It used to run in the
ServerApp's thread, where the first Ctrl-C only set a flag nothing looked at before round 1."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from fedsim.cli import main

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "configs" / "quickstart.toml")
INTERRUPTED = "fedsim: interrupted; finished rounds are in the run directory\n"
# Tiny rounds; the warm start is what runs when the Ctrl-C comes.
SMALL_WARM = ["data.train_size=200", "data.test_size=100", "clients.num=2", "clients.per_round=2",
              "attack.malicious=[0]", "resources.total_cpus=2", "model.init='warm'"]


def _argv(out: Path, overrides: list[str]) -> list[str]:
    argv = ["run", QUICKSTART, "--out", str(out)]
    for item in overrides:
        argv += ["--set", item]
    return argv


def test_ctrl_c_in_the_warm_start_is_exit_130_before_ray_starts(tmp_path, monkeypatch, capsys):
    """The warm start runs in the main thread (where SIGINT raises KeyboardInterrupt) before the
    simulation starts Ray: a Ctrl-C in it ends the run with nothing started."""
    import flwr.simulation

    import fedsim.pretrain

    cache, ray_root, out = tmp_path / "cache", tmp_path / "ray", tmp_path / "run"
    ray_root.mkdir()
    monkeypatch.setenv("FEDSIM_CACHE", str(cache))
    monkeypatch.setenv("RAY_TMPDIR", str(ray_root))
    in_main_thread = []

    def pretrain(cfg, *, log=print):
        in_main_thread.append(threading.current_thread() is threading.main_thread())
        raise KeyboardInterrupt  # the Ctrl-C, while it trains

    monkeypatch.setattr(fedsim.pretrain, "pretrain", pretrain)
    monkeypatch.setattr(flwr.simulation, "run_simulation",
                        lambda **kwargs: pytest.fail("the simulation (Ray) started before the warm start ended"))
    assert main(_argv(out, SMALL_WARM)) == 130
    assert capsys.readouterr().err == INTERRUPTED
    assert in_main_thread == [True]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["status"], summary["error"], summary["rounds"]) == ("interrupted", "stopped by the user", 0)
    assert (out / "config.toml").is_file() and not (out / "ray-session.txt").exists()
    assert list(ray_root.iterdir()) == []
    assert not cache.exists() or list(cache.iterdir()) == []


def _session(sid: int) -> list[str]:
    """Command lines of the live processes in session ``sid`` (a run and what it started)."""
    ps = subprocess.run(["ps", "-ww", "-e", "-o", "sid=,stat=,args="], capture_output=True, text=True).stdout
    rows = [line.split(None, 2) for line in ps.splitlines()]
    return [r[2] for r in rows if len(r) == 3 and r[0] == str(sid) and not r[1].startswith("Z")]


@pytest.mark.slow
def test_ctrl_c_during_the_warm_start_ends_the_run_at_once_and_leaves_nothing(tmp_path):
    """SIGINT to the process group (as a terminal sends it) once the warm start has begun. Its
    training would take a minute (2000 samples × 4 epochs); the run must end within seconds,
    without having written the checkpoint to the cache."""
    out, cache = tmp_path / "run", tmp_path / "cache"
    ray_root = Path(tempfile.mkdtemp(prefix="fsr-", dir="/tmp"))  # short: Ray's socket paths
    argv = [sys.executable, "-m", "fedsim.cli", *_argv(out, [
        *SMALL_WARM, "rounds=50", "model.pretrain_size=2000", "model.pretrain_epochs=4"])]
    env = {**os.environ, "FEDSIM_CACHE": str(cache), "RAY_TMPDIR": str(ray_root)}
    with (tmp_path / "stderr").open("w") as err:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
                                start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any("building the warm-start checkpoint" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        time.sleep(2.0)  # well into it
        assert proc.poll() is None, "".join(lines)
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
        took = time.monotonic() - sent
        reader.join(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        leftover_ray = list(ray_root.iterdir())
        subprocess.run(["rm", "-rf", str(ray_root)])
    stdout, stderr = "".join(lines), (tmp_path / "stderr").read_text()
    assert proc.returncode == 130, stdout + stderr
    assert stderr == INTERRUPTED, stderr
    assert "Traceback" not in stdout + stderr
    assert took < 30, f"{took:.0f} s from the Ctrl-C to the end"
    assert [p.name for p in cache.rglob("*") if p.suffix in (".pt", ".tmp")] == []
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["rounds"] == 0
    assert leftover_ray == []
    deadline = time.monotonic() + 30
    while _session(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _session(proc.pid) == []
