"""Nothing of a run outlives it: once ``fedsim run`` has returned, however the run ended, no
process of its Ray session is alive and Ray's session folder is gone."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ["rounds=1", "data.train_size=40", "data.test_size=20", "model.init='scratch'",
        "clients.num=2", "clients.per_round=2", "attack.malicious=[0]"]


def processes_mentioning(path: Path) -> list[str]:
    """Command lines (from /proc) of the live processes that name ``path``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:  # not a process, or it ended meanwhile
            continue
        if proc.name.isdigit() and str(path).encode() in cmdline:
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace")[:200])
    return found


def wait_for(condition, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.5)
    return True


@pytest.fixture
def ray_root():
    # Short: Ray's Unix socket paths under it must stay below 108 characters, which pytest's
    # tmp_path would exceed.
    root = Path(tempfile.mkdtemp(prefix="fsr-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("end, code", [("completed", 0), ("interrupted", 130)])
def test_a_run_leaves_no_ray_process_or_folder(tmp_path, ray_root, end, code):
    argv = [sys.executable, "-m", "fedsim.cli", "run", str(ROOT / "configs" / "quickstart.toml"),
            "--out", str(tmp_path / "run")]
    for item in [*TINY, "resources.engine='ray'"]:
        argv += ["--set", item]
    env = {**os.environ, "RAY_TMPDIR": str(ray_root)}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("round  0"):
                break
        # Ray runs inside the per-run folder (otherwise the checks below would prove nothing).
        assert wait_for(lambda: processes_mentioning(ray_root), 120), "".join(lines)
        if end == "interrupted":
            proc.send_signal(signal.SIGINT)
        output = "".join(lines) + proc.communicate(timeout=600)[0]
    finally:
        proc.kill()
    assert proc.returncode == code, output
    assert processes_mentioning(ray_root) == [], output
    assert list(ray_root.iterdir()) == [], output


def test_another_ctrl_c_during_the_cleanup_does_not_cut_it_short(tmp_path, monkeypatch, capsys):
    """A Ctrl-C that ends the rounds, then one more while the run ends Ray's session: the session
    is still ended, its folder removed, and summary.json written (a KeyboardInterrupt in the
    cleanup used to skip all of that). Flower's runtime is replaced by the Ctrl-C it raises."""
    import flwr.simulation

    from fedsim import ray_session
    from fedsim.cli import main

    ray_root = tmp_path / "ray"
    ray_root.mkdir()
    monkeypatch.setenv("RAY_TMPDIR", str(ray_root))

    def run_simulation(**kwargs):
        raise KeyboardInterrupt

    ended = []
    real_end_ray = ray_session.end_ray

    def end_ray(ray_dir, grace_s=5.0):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # time for the handler to run, were there one
        real_end_ray(ray_dir, grace_s)
        ended.append(ray_dir)

    monkeypatch.setattr(flwr.simulation, "run_simulation", run_simulation)
    monkeypatch.setattr(ray_session, "end_ray", end_ray)
    argv = ["run", str(ROOT / "configs" / "quickstart.toml"), "--out", str(tmp_path / "run")]
    for item in [*TINY, "resources.engine='ray'"]:  # the faked runtime is Ray's
        argv += ["--set", item]
    assert main(argv) == 130
    assert capsys.readouterr().err == "fedsim: interrupted; finished rounds are in the run directory\n"
    assert len(ended) == 1 and list(ray_root.iterdir()) == []
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert not (tmp_path / "run" / "ray-session.txt").exists()
