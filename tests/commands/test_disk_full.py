"""A full disk never costs what a run already wrote: checkpoint, rounds and summaries are
replaced whole or not at all, no temporary file is left, the error names the file and says "No
space left on device", and summary.json (small, written last) still records the initial model's
numbers and the error."""

import errno
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from flwr.app import Array, ArrayRecord

from fedsim.app import CHECKPOINT, Recorder, finish, load_checkpoint
from fedsim.app.recorder import save_checkpoint
from fedsim.cli import main
from fedsim.config import load_config
from fedsim.report import RunDirectory

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "configs" / "quickstart.toml")


class SmallDisk:
    """The files under ``root`` as if on a filesystem with ``free_bytes`` free now: a write that
    does not fit writes what fits, then fails as write(2) does on a full disk (ENOSPC, naming no
    file). Removing a file frees its space."""

    def __init__(self, root: Path, free_bytes: int):
        self.root = root
        self.capacity = self.used() + free_bytes

    def used(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    def free(self) -> int:
        return max(0, self.capacity - self.used())


class _SmallDiskFile(io.RawIOBase):
    def __init__(self, path: Path, mode: str, disk: SmallDisk):
        self._f, self._disk = io.FileIO(path, mode.replace("b", "").replace("t", "")), disk

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        if data and not self._disk.free():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._f.write(data[:self._disk.free()])

    def fileno(self) -> int:
        return self._f.fileno()

    def seek(self, *args) -> int:
        return self._f.seek(*args)

    def tell(self) -> int:
        return self._f.tell()

    def truncate(self, *args) -> int:
        return self._f.truncate(*args)

    def close(self) -> None:
        self._f.close()
        super().close()


@pytest.fixture
def small_disk(monkeypatch):
    """``small_disk(root, free_bytes)``: from then on only ``free_bytes`` more fit under ``root``
    (in files ``Path.open`` opens there to write or append; the read-write lock file is left
    alone)."""
    real_open = Path.open
    disks = []

    def open_(self, mode="r", buffering=-1, encoding=None, errors=None, newline=None):
        disk = next((d for d in disks if Path(self).resolve().is_relative_to(d.root.resolve())), None)
        if disk is None or not any(c in mode for c in "wax") or "+" in mode:
            return real_open(self, mode, buffering, encoding, errors, newline)
        raw = _SmallDiskFile(self, mode, disk)
        if buffering == 0:
            return raw
        buffered = io.BufferedWriter(raw)
        if "b" in mode:
            return buffered
        return io.TextIOWrapper(buffered, encoding=encoding or "utf-8", errors=errors, newline=newline)

    monkeypatch.setattr(Path, "open", open_)

    def make(root: Path, free_bytes: int) -> SmallDisk:
        disks.append(SmallDisk(root, free_bytes))
        return disks[-1]

    return make


def _no_space(error: BaseException, path: Path) -> None:
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC, repr(error)
    assert error.filename == str(path), error.filename
    assert "No space left on device" in str(error) and str(path) in str(error)


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*.tmp"))


def test_a_checkpoint_that_does_not_fit_keeps_the_last_one_whole_and_leaves_no_tmp(tmp_path, small_disk):
    path = tmp_path / CHECKPOINT
    save_checkpoint(path, {"round": 1, "global": {"w": torch.arange(10.0)}})
    before = path.read_bytes()
    small_disk(tmp_path, 4096)
    with pytest.raises(OSError) as e:
        save_checkpoint(path, {"round": 2, "global": {"w": torch.zeros(100_000)}})
    _no_space(e.value, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT]
    assert path.read_bytes() == before and load_checkpoint(path)["round"] == 1


def test_summaries_are_replaced_whole_or_not_at_all(tmp_path, small_disk):
    d = RunDirectory(tmp_path)
    d.write_summary({"name": "before", "status": "completed", "clean_accuracy": 0.5})
    md, js = (tmp_path / "summary.md").read_text(), (tmp_path / "summary.json").read_text()
    small_disk(tmp_path, 10)
    with pytest.raises(OSError) as e:
        d.write_summary({"name": "after " * 100, "status": "failed", "error": "x" * 1000})
    _no_space(e.value, tmp_path / "summary.md")
    assert (tmp_path / "summary.md").read_text() == md
    assert (tmp_path / "summary.json").read_text() == js
    assert _leftovers(tmp_path) == []


def test_a_config_that_does_not_fit_leaves_no_empty_file(tmp_path, small_disk):
    d = RunDirectory(tmp_path)
    small_disk(tmp_path, 10)
    with pytest.raises(OSError) as e:
        d.write_config("name = 'x'\n" * 100)
    _no_space(e.value, tmp_path / "config.toml")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_round_that_does_not_fit_is_taken_back(tmp_path, small_disk):
    d = RunDirectory(tmp_path)
    d.append_round({"round": 1, "clean_accuracy": 0.5})
    before = d.rounds_file.read_bytes()
    small_disk(tmp_path, 20)  # room for part of the next line only
    with pytest.raises(OSError) as e:
        d.append_round({"round": 2, "clean_accuracy": 0.25, "note": "x" * 200})
    _no_space(e.value, d.rounds_file)
    assert d.rounds_file.read_bytes() == before
    assert [r["round"] for r in d.read_rounds()] == [1]


def test_rounds_read_without_a_last_line_a_kill_cut_short(tmp_path):
    d = RunDirectory(tmp_path)
    d.append_round({"round": 1, "clean_accuracy": 0.5})
    with d.rounds_file.open("a") as f:
        f.write('{"round": 2, "clean_acc')
    assert [r["round"] for r in d.read_rounds()] == [1]


def _finished_rounds(run_dir: RunDirectory, n: int = 2) -> None:
    for r in range(1, n + 1):
        run_dir.append_round({"round": r, "clean_accuracy": 0.4 + r / 10, "attack_success_rate": 0.1})


def test_finish_on_a_full_disk_writes_summary_json_last_with_the_initial_numbers(tmp_path, small_disk):
    """The plot (tens of kB) does not fit, summary.md and summary.json (1–2 kB each) do."""
    cfg = load_config(None, ["rounds=2"])
    d = RunDirectory(tmp_path)
    _finished_rounds(d)
    rounds = d.rounds_file.read_bytes()
    small_disk(tmp_path, 6000)
    initial = {"clean_accuracy": 0.125, "attack_success_rate": 0.0625}
    summary = finish(d, cfg, initial=initial, wall_s=1.0)
    assert summary["status"] == "failed"
    assert "No space left on device" in summary["error"] and str(tmp_path / "metrics.png") in summary["error"]
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert (on_disk["initial_clean_accuracy"], on_disk["initial_attack_success_rate"]) == (0.125, 0.0625)
    assert "**Status: failed**" in (tmp_path / "summary.md").read_text()
    assert not (tmp_path / "metrics.png").exists() and _leftovers(tmp_path) == []
    assert d.rounds_file.read_bytes() == rounds


def test_finish_raises_only_when_summary_json_does_not_fit(tmp_path, small_disk):
    cfg = load_config(None, ["rounds=2"])
    d = RunDirectory(tmp_path)
    _finished_rounds(d)
    small_disk(tmp_path, 0)
    with pytest.raises(OSError) as e:
        finish(d, cfg, initial=None, wall_s=1.0)
    _no_space(e.value, tmp_path / "summary.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rounds.jsonl"]


def _arrays() -> ArrayRecord:
    return ArrayRecord({"w": Array(torch.zeros(2).numpy())})


def test_the_recorder_hands_on_the_initial_numbers_as_soon_as_it_measures_them(tmp_path):
    seen = []
    metrics = {"clean_accuracy": 0.25, "attack_success_rate": 0.5, "retrieval": {"i2t_r1": 0.1}}
    rec = Recorder(RunDirectory(tmp_path), lambda a: metrics, dict, log=lambda m: None, on_initial=seen.append)
    rec(0, _arrays())
    assert seen == [{"clean_accuracy": 0.25, "attack_success_rate": 0.5}]
    resumed = Recorder(RunDirectory(tmp_path), lambda a: pytest.fail("evaluated again"), dict,
                       log=lambda m: None, rounds_done=2, initial=seen[0], on_initial=seen.append)
    resumed(0, _arrays())
    assert seen[1] == seen[0]


def test_a_run_that_fails_for_space_after_round_0_says_so_and_keeps_the_initial_numbers(
        tmp_path, monkeypatch, capsys, small_disk):
    """The ServerApp measures round 0, then its checkpoint does not fit: one line naming the
    file, exit 1, and summary.json with the initial numbers (Flower's Ray runtime replaced by
    running the ServerApp here)."""
    import flwr.simulation

    server_module = importlib.import_module("fedsim.app.server_app")
    out = tmp_path / "run"

    def run_server(grid, cfg, run_dir, *, on_initial=None, **kwargs):
        on_initial({"clean_accuracy": 0.25, "attack_success_rate": 0.5})
        save_checkpoint(run_dir.path / CHECKPOINT, {"round": 1, "global": {"w": torch.zeros(100_000)}})

    def run_simulation(*, server_app, **kwargs):
        server_app._main(None, None)

    monkeypatch.setattr(server_module, "run_server", run_server)
    monkeypatch.setattr(flwr.simulation, "run_simulation", run_simulation)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    small_disk(out, 12_000)  # config.toml and the summaries fit, the checkpoint does not
    code = main(["run", QUICKSTART, "--out", str(out), "--set", "model.init='scratch'",
                 "--set", "data.train_size=40", "--set", "data.test_size=20", "--set", "clients.num=2",
                 "--set", "clients.per_round=2", "--set", "attack.malicious=[0]",
                 "--set", "resources.engine='ray'"])  # the faked runtime is Ray's
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "No space left on device" in err and str(out / CHECKPOINT) in err, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left on device" in summary["error"]
    assert (summary["initial_clean_accuracy"], summary["initial_attack_success_rate"]) == (0.25, 0.5)
    assert _leftovers(out) == [] and not (out / CHECKPOINT).exists()
    assert [p.name for p in tmp_path.glob("fedsim-ray-*")] == []


# -- a real full disk ------------------------------------------------------------------------------
@pytest.fixture
def tmpfs_300k():
    """A 300 KiB tmpfs (needs root and a kernel that lets this process mount)."""
    mount = Path(tempfile.mkdtemp(prefix="fsfull-", dir="/tmp"))
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)], capture_output=True).returncode:
        mount.rmdir()
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
        mount.rmdir()


@pytest.mark.slow
def test_fedsim_run_on_a_300k_tmpfs_ends_with_one_line_and_keeps_what_it_wrote(tmpfs_300k, tmp_path):
    """The checkpoint of round 1 (MBs) does not fit; rounds.jsonl, the summaries and the plot do."""
    out = tmpfs_300k / "run"
    ray_root = Path(tempfile.mkdtemp(prefix="fsr-", dir="/tmp"))
    argv = [sys.executable, "-m", "fedsim.cli", "run", QUICKSTART, "--out", str(out), "--set", "rounds=3"]
    for item in ["data.train_size=200", "data.test_size=100", "model.init='scratch'", "clients.num=2",
                 "clients.per_round=2", "attack.malicious=[0]", "resources.total_cpus=2"]:
        argv += ["--set", item]
    try:
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "RAY_TMPDIR": str(ray_root)})
        leftover_ray = list(ray_root.iterdir())
    finally:
        shutil.rmtree(ray_root, ignore_errors=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "No space left on device" in proc.stderr and str(out / CHECKPOINT) in proc.stderr, proc.stderr
    assert _leftovers(out) == [] and not (out / CHECKPOINT).exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left on device" in summary["error"]
    assert summary["initial_clean_accuracy"] is not None and summary["initial_attack_success_rate"] is not None
    assert summary["rounds"] == 1 and [r["round"] for r in RunDirectory(out).read_rounds()] == [1]
    assert (out / "summary.md").stat().st_size > 0 and (out / "config.toml").stat().st_size > 0
    assert leftover_ray == []
