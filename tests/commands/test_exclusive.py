"""One fedsim process per run or sweep folder: a second ``run``/``resume``/``sweep`` on a folder
in use is refused before it touches anything — in particular it must not take the live run's
Ray session for a killed run's leftover and end it — and the folder is free again the moment
the holder dies, even by ``kill -9``."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fedsim.config import ConfigError
from fedsim.report import LOCK_FILE, RunDirectoryError, exclusive
from fedsim.ray_session import RAY_PREFIX, RAY_SESSION
from fedsim.runner import CHECKPOINT, resume

ROOT = Path(__file__).resolve().parents[2]
HOLD = "import sys, time; from fedsim.report import exclusive\nwith exclusive(sys.argv[1]):\n    print('held', flush=True); time.sleep(120)"


@pytest.fixture
def held(tmp_path):
    """A run folder another process works in (it holds the folder until killed)."""
    folder = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield folder, proc
    proc.kill()
    proc.wait()


def test_a_folder_in_use_is_refused_naming_its_holder_and_free_once_the_holder_is_killed(held):
    folder, proc = held
    with pytest.raises(RunDirectoryError, match=rf"in use by another fedsim process \(pid {proc.pid}\)"):
        with exclusive(folder):
            pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with exclusive(folder):  # the kernel dropped the lock with the process: nothing stale
        assert (folder / LOCK_FILE).read_text().strip() == f"pid {os.getpid()}"
        with exclusive(folder):  # re-entrant in the process that holds it
            pass


def test_resume_of_a_live_run_is_refused_and_leaves_its_ray_session_alone(held, tmp_path):
    folder, proc = held
    (folder / "config.toml").write_text((ROOT / "configs" / "quickstart.toml").read_text())
    torch.save({"round": 1, "global": {}, "strategy": {}, "rng": {}, "initial": {}, "wall_s": 1.0}, folder / CHECKPOINT)
    session = Path(tmp_path / f"{RAY_PREFIX}live")
    session.mkdir()
    (folder / RAY_SESSION).write_text(str(session))
    with pytest.raises(ConfigError, match="in use by another fedsim process"):
        resume(folder)
    assert session.is_dir() and (folder / RAY_SESSION).is_file()
    assert proc.poll() is None


def test_a_sweep_into_a_folder_in_use_exits_2_and_writes_nothing(held):
    folder, _ = held
    cli = subprocess.run([sys.executable, "-m", "fedsim.cli", "sweep", "configs/quickstart.toml", "--out", str(folder),
                          "--grid", 'strategy.name=["fedavg", "median"]'], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2, cli.stderr
    assert "in use by another fedsim process" in cli.stderr
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_FILE]
