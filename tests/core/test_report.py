"""fedsim.report: the run directory's files (config, rounds.jsonl appended whole or not at all,
summaries, the plot), atomic replaces that name the file on failure, the folder lock, the
summary's numbers and the markdown of one run and of several; expected values by hand."""

import errno
import fcntl
import io
import json
import math
import os
from pathlib import Path

import pytest

from fedsim import report
from fedsim.report import RunDirectory, RunDirectoryError

PNG = b"\x89PNG\r\n\x1a\n"
NOSPC = "No space left on device"


# ---- JSON without NaN ------------------------------------------------------------------------
def test_clean_writes_non_finite_floats_as_null_at_any_depth():
    value = {"a": math.nan, "b": [1.5, math.inf, (-math.inf, 2)], "c": {"d": {"e": math.nan, "f": "x"}}, "g": 3}
    assert report._clean(value) == {"a": None, "b": [1.5, None, [None, 2]], "c": {"d": {"e": None, "f": "x"}},
                                    "g": 3}
    assert report._clean(0.25) == 0.25 and report._clean(None) is None and report._clean("nan") == "nan"
    assert report._clean((1, 2)) == [1, 2]


# ---- atomic writes ---------------------------------------------------------------------------
def test_write_atomic_replaces_the_file_through_a_synced_temporary_beside_it(tmp_path, monkeypatch):
    path = tmp_path / "f.txt"
    path.write_text("old")
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", Path(f"/proc/self/fd/{fd}").resolve().name,
                                                               Path(f"/proc/self/fd/{fd}").resolve().read_text()))
                        or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("replace", Path(a).name, Path(b).name))
                        or real_replace(a, b))
    report.write_atomic(path, "new ✓", tmp_suffix=".part")
    assert events == [("fsync", "f.txt.part", "new ✓"), ("replace", "f.txt.part", "f.txt")]
    assert path.read_text() == "new ✓"
    events.clear()
    report.write_atomic(str(path), b"\x00bytes")
    assert events == [("fsync", "f.txt.tmp", "\x00bytes"), ("replace", "f.txt.tmp", "f.txt")]
    assert path.read_bytes() == b"\x00bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_a_failed_atomic_write_keeps_the_old_file_removes_the_temporary_and_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.md"
    path.write_text("old")

    def full(a, b):
        raise OSError(errno.ENOSPC, NOSPC)

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError) as e:
        report.write_atomic(path, "new")
    assert (e.value.errno, e.value.strerror, e.value.filename) == (errno.ENOSPC, NOSPC, str(path))
    assert str(e.value) == f"[Errno 28] {NOSPC}: '{path}'"
    assert e.value.__suppress_context__ and e.value.__cause__ is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.md"] and path.read_text() == "old"


def test_an_interrupted_atomic_write_removes_the_temporary_and_raises_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "a"

    def interrupted(a, b):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        report.write_atomic(path, "x")
    assert list(tmp_path.iterdir()) == []


def test_an_atomic_write_into_a_missing_folder_names_the_file(tmp_path):
    path = tmp_path / "missing" / "x"
    with pytest.raises(FileNotFoundError) as e:
        report.write_atomic(path, "x")
    assert (e.value.errno, e.value.filename) == (errno.ENOENT, str(path))


def test_naming_an_error_keeps_its_kind_and_errno():
    named = report._naming(OSError(errno.ENOENT, "gone"), Path("/x/y"))
    assert type(named) is FileNotFoundError and (named.errno, named.strerror, named.filename) == (2, "gone", "/x/y")
    named = report._naming(OSError(errno.ENOSPC, None), Path("p"))
    assert (named.errno, named.filename) == (errno.ENOSPC, "p") and named.strerror == str(OSError(errno.ENOSPC, None))
    plain = OSError("no errno")
    assert report._naming(plain, Path("p")) is plain


# ---- the folder lock -------------------------------------------------------------------------
def _hold(folder: Path, note: str):
    """Another holder of the folder's lock (flock is per open file: this conflicts in-process)."""
    folder.mkdir(parents=True, exist_ok=True)
    f = (folder / report.LOCK_FILE).open("a+")
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    f.write(note)
    f.flush()
    return f


def test_exclusive_makes_the_folder_notes_the_pid_and_releases_the_lock_at_the_end(tmp_path):
    folder = tmp_path / "a" / "b"
    (folder).mkdir(parents=True)
    (folder / report.LOCK_FILE).write_text("pid 1 (an old note)\n")
    with report.exclusive(folder):
        assert (folder / report.LOCK_FILE).read_text() == f"pid {os.getpid()}\n"
        assert folder.resolve() in report._held
        with report.exclusive(str(folder)):  # re-entrant
            pass
        assert folder.resolve() in report._held
    assert folder.resolve() not in report._held
    _hold(folder, "").close()  # free again
    with report.exclusive(tmp_path / "new" / "deep"):
        assert (tmp_path / "new" / "deep" / report.LOCK_FILE).is_file()


def test_exclusive_refuses_a_folder_another_process_holds_naming_it(tmp_path):
    held = _hold(tmp_path / "run", "pid 4242\n")
    try:
        with pytest.raises(RunDirectoryError) as e:
            with report.exclusive(tmp_path / "run"):
                pass
        assert str(e.value) == (f"{str((tmp_path / 'run').resolve())!r} is in use by another fedsim process "
                                "(pid 4242); wait for it to end, or use another folder")
        assert e.value.__suppress_context__
    finally:
        held.close()
    held = _hold(tmp_path / "quiet", "")
    try:
        with pytest.raises(RunDirectoryError, match=r"in use by another fedsim process \(another process\); "):
            with report.exclusive(tmp_path / "quiet"):
                pass
    finally:
        held.close()
    assert (tmp_path / "run").resolve() not in report._held


def test_exclusive_refuses_a_folder_it_cannot_make(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(RunDirectoryError) as e:
        with report.exclusive(tmp_path / "file"):
            pass
    assert str(e.value) == f"{str(tmp_path / 'file')!r} cannot be used: File exists"
    assert e.value.__suppress_context__


def test_a_pid_note_that_cannot_be_written_does_not_stop_the_work(tmp_path, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, NOSPC)

    monkeypatch.setattr(os, "write", full)
    with report.exclusive(tmp_path):
        assert tmp_path.resolve() in report._held
    assert (tmp_path / report.LOCK_FILE).read_text() == ""


def test_the_lock_is_held_while_inside(tmp_path):
    with report.exclusive(tmp_path):
        with pytest.raises(BlockingIOError):
            _hold(tmp_path, "")


# ---- a new run directory ---------------------------------------------------------------------
def test_a_new_run_directory_must_be_new_or_empty_but_for_what_is_allowed(tmp_path):
    d = report.new_run_directory(tmp_path / "a" / "b")
    assert d.path == tmp_path / "a" / "b" and d.path.is_dir()
    assert d.rounds_file == tmp_path / "a" / "b" / "rounds.jsonl"
    assert report.new_run_directory(str(tmp_path / "a" / "b")).path == tmp_path / "a" / "b"  # empty
    (tmp_path / "a" / "b" / "deploy").mkdir()
    (tmp_path / "a" / "b" / ".fedsim.lock").write_text("")
    assert report.new_run_directory(tmp_path / "a" / "b", allow=("deploy", ".fedsim.lock")).path.is_dir()
    with pytest.raises(RunDirectoryError) as e:
        report.new_run_directory(tmp_path / "a" / "b", allow=("deploy",))
    assert str(e.value) == f"{str(tmp_path / 'a' / 'b')!r} already exists and is not empty"
    (tmp_path / "f").write_text("")
    with pytest.raises(RunDirectoryError, match="already exists and is not empty"):
        report.new_run_directory(tmp_path / "f", allow=("f",))


def test_a_run_directory_that_cannot_be_made_or_written_is_refused(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("")
    with pytest.raises(RunDirectoryError) as e:
        report.new_run_directory(tmp_path / "f" / "run")
    assert str(e.value) == f"{str(tmp_path / 'f' / 'run')!r} cannot be created: Not a directory"
    assert e.value.__suppress_context__
    asked = []
    monkeypatch.setattr(os, "access", lambda path, mode: asked.append((Path(path), mode)) or False)
    with pytest.raises(RunDirectoryError) as e:
        report.new_run_directory(tmp_path / "ro")
    assert str(e.value) == f"{str(tmp_path / 'ro')!r} is not writable"
    assert asked == [(tmp_path / "ro", os.W_OK | os.X_OK)]


# ---- rounds.jsonl ----------------------------------------------------------------------------
def test_rounds_are_appended_one_json_line_each_without_nan(tmp_path):
    d = RunDirectory(tmp_path / "run")
    d.append_round({"round": 1, "clean_accuracy": math.nan, "rates": [math.inf, 0.5]})
    d.append_round({"round": 2})
    assert d.rounds_file.read_text() == ('{"round": 1, "clean_accuracy": null, "rates": [null, 0.5]}\n'
                                         '{"round": 2}\n')
    assert d.read_rounds() == [{"round": 1, "clean_accuracy": None, "rates": [None, 0.5]}, {"round": 2}]


class _PartialFile(io.RawIOBase):
    """A file that writes ``room`` bytes in pieces of ``piece``, then fails like a full disk
    (and, with ``stuck``, cannot be truncated either)."""

    def __init__(self, path, room, piece, error, stuck=False):
        self._f, self.room, self.piece, self.error, self.stuck = io.FileIO(path, "a"), room, piece, error, stuck

    def writable(self):
        return True

    def write(self, data):
        data = bytes(data)[:self.piece]
        if self.room <= 0:
            raise self.error
        n = self._f.write(data[:self.room])
        self.room -= n
        return n

    def seek(self, *args):
        return self._f.seek(*args)

    def truncate(self, *args):
        if self.stuck:
            raise OSError(errno.EIO, "I/O error")
        return self._f.truncate(*args)

    def close(self):
        self._f.close()
        super().close()


def _partial_disk(monkeypatch, room, piece=1000, error=None, stuck=False):
    """``Path.open(…, "ab")`` opens a _PartialFile, unbuffered only when asked (as open does)."""
    real_open = Path.open

    def open_(self, mode="r", buffering=-1, *args, **kwargs):
        if mode == "ab":
            raw = _PartialFile(self, room, piece, error or OSError(errno.ENOSPC, NOSPC), stuck)
            return raw if buffering == 0 else io.BufferedWriter(raw)
        return real_open(self, mode, buffering, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_)


def test_a_round_is_written_in_as_many_pieces_as_the_file_takes(tmp_path, monkeypatch):
    d = RunDirectory(tmp_path)
    _partial_disk(monkeypatch, room=10_000, piece=3)
    d.append_round({"round": 1, "x": "abcdefgh"})
    assert d.rounds_file.read_text() == '{"round": 1, "x": "abcdefgh"}\n'


def test_a_round_that_does_not_fit_is_taken_back_whole_and_the_error_names_the_file(tmp_path, monkeypatch):
    d = RunDirectory(tmp_path)
    d.append_round({"round": 1})
    _partial_disk(monkeypatch, room=5, piece=2)
    with pytest.raises(OSError) as e:
        d.append_round({"round": 2, "clean_accuracy": 0.5})
    assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(d.rounds_file))
    assert e.value.__suppress_context__
    assert d.rounds_file.read_text() == '{"round": 1}\n'


def test_a_round_that_cannot_be_taken_back_still_raises_the_write_error(tmp_path, monkeypatch):
    d = RunDirectory(tmp_path)
    _partial_disk(monkeypatch, room=5, stuck=True)
    with pytest.raises(OSError) as e:
        d.append_round({"round": 2})
    assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(d.rounds_file))


def test_an_interrupted_append_is_taken_back_and_raised_as_it_was(tmp_path, monkeypatch):
    d = RunDirectory(tmp_path)
    d.append_round({"round": 1})
    _partial_disk(monkeypatch, room=3, error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        d.append_round({"round": 2})
    assert d.rounds_file.read_text() == '{"round": 1}\n'


def test_read_rounds_drops_only_a_last_line_cut_short(tmp_path):
    d = RunDirectory(tmp_path)
    assert d.read_rounds() == []
    d.rounds_file.write_text("")
    assert d.read_rounds() == []
    d.rounds_file.write_text('{"round": 1}\n\n{"round": 2}\n{"rou')
    assert d.read_rounds() == [{"round": 1}, {"round": 2}]
    d.rounds_file.write_text('{"round": 1}\n{"round": 2}\n{"round": 3, "clean_acc')
    assert d.read_rounds() == [{"round": 1}, {"round": 2}]
    d.rounds_file.write_text('{"round": 1}\n{"round": 2}')  # whole, only the newline missing
    assert d.read_rounds() == [{"round": 1}, {"round": 2}]
    d.rounds_file.write_text('{"round": 1}\n{"rou\n')  # a broken line that was ended is an error
    with pytest.raises(json.JSONDecodeError):
        d.read_rounds()


def test_keep_rounds_drops_the_later_rounds_and_broken_lines(tmp_path):
    d = RunDirectory(tmp_path)
    d.keep_rounds(3)
    assert d.rounds_file.read_text() == ""
    d.rounds_file.write_text('{"round": 1}\n{"round": 2, "a": 1}\nbroken\n{"no": "round"}\n{"round": 3}\n{"round": 4')
    d.keep_rounds(2)
    assert d.rounds_file.read_text() == '{"round": 1}\n{"round": 2, "a": 1}\n'
    d.rounds_file.write_text('{"round": 1}\n{"rou\n{"round": 2}\n')  # a broken line among others
    d.keep_rounds(2)
    assert d.rounds_file.read_text() == '{"round": 1}\n{"round": 2}\n'
    d.keep_rounds(0)
    assert d.rounds_file.read_text() == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rounds.jsonl"]


# ---- config and summaries --------------------------------------------------------------------
def test_the_config_and_the_summaries_are_written_whole(tmp_path):
    d = RunDirectory(tmp_path)
    d.write_config('seed = 1\n')
    assert (tmp_path / "config.toml").read_text() == "seed = 1\n"
    d.append_round({"round": 1, "clean_accuracy": 0.5})
    d.write_summary({"name": "run-a", "rounds": 1, "clean_accuracy": math.nan})
    assert (tmp_path / "summary.json").read_text() == (
        '{\n  "name": "run-a",\n  "rounds": 1,\n  "clean_accuracy": null\n}\n')
    md = (tmp_path / "summary.md").read_text()
    assert md.startswith("# run-a\n\n| metric | value |\n")
    assert "| clean_accuracy | – |" in md and "| 1 | 0.500 | – | – | – | 0 | – |" in md
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml", "rounds.jsonl", "summary.json", "summary.md"]


def test_summarize_reduces_the_rounds_to_the_final_numbers():
    rounds = [
        {"round": 1, "clean_accuracy": 0.4, "attack_success_rate": 0.7, "bytes_up": 10, "bytes_down": 100,
         "rejected": {"3": "nan"}, "tpr": 0.5, "fpr": 0.1, "precision": None},
        {"round": 2, "clean_accuracy": None, "attack_success_rate": None, "skipped": "no replies",
         "bytes_up": None, "tpr": None},
        {"round": 3, "clean_accuracy": 0.6, "attack_success_rate": 0.2, "bytes_up": 5, "bytes_down": 50,
         "rejected": {"1": "a", "2": "b"}, "tpr": 1.0, "fpr": 0.3, "recall": 0.25, "retrieval": {"r@1": 0.5},
         "probe_accuracy": 0.55},
    ]
    summary = report.summarize(rounds, initial={"clean_accuracy": 0.1, "attack_success_rate": 0.05},
                               wall_s=12.3456, extra={"name": "x", "rounds": 99})
    assert summary == {
        "rounds": 99, "clean_accuracy": 0.6, "attack_success_rate": 0.2, "max_attack_success_rate": 0.7,
        "wall_s": 12.35, "initial_clean_accuracy": 0.1, "initial_attack_success_rate": 0.05,
        "retrieval": {"r@1": 0.5}, "probe_accuracy": 0.55, "bytes_up": 15, "bytes_down": 150,
        "rejected_replies": 3, "aggregated_rounds": 2, "skipped_rounds": [2],
        "mean_tpr": 0.75, "mean_fpr": pytest.approx(0.2), "mean_precision": None, "mean_recall": 0.25,
        "name": "x"}
    assert list(summary)[:3] == ["rounds", "attack_success_rate", "max_attack_success_rate"]  # fedsim.metrics order


def test_summarize_of_no_rounds():
    assert report.summarize([], initial=None, wall_s=0.004, extra={}) == {
        "rounds": 0, "clean_accuracy": None, "attack_success_rate": None, "max_attack_success_rate": None,
        "wall_s": 0.0, "initial_clean_accuracy": None, "initial_attack_success_rate": None, "retrieval": None,
        "bytes_up": 0, "bytes_down": 0, "rejected_replies": 0, "aggregated_rounds": 0, "skipped_rounds": [],
        "mean_tpr": None, "mean_fpr": None, "mean_precision": None, "mean_recall": None}
    last = report.summarize([{"round": 1, "probe_attack_success_rate": 0.9}], initial={}, wall_s=1, extra={})
    assert last["probe_attack_success_rate"] == 0.9 and "probe_accuracy" not in last
    assert last["aggregated_rounds"] == 1 and last["initial_clean_accuracy"] is None
    assert (last["bytes_up"], last["bytes_down"], last["rejected_replies"]) == (0, 0, 0)


@pytest.mark.parametrize("value, text", [(None, "–"), (0.12345, "0.123"), (2.0, "2.000"), (3, "3"),
                                         ("fedavg", "fedavg"), (True, "True")])
def test_fmt(value, text):
    assert report._fmt(value) == text


def test_summary_markdown_in_full():
    summary = {"name": "r1", "status": "failed", "error": "boom", "rounds": 2, "aggregated_rounds": 1,
               "clean_accuracy": 0.5, "attack_success_rate": None, "max_attack_success_rate": 0.25,
               "initial_clean_accuracy": 0.1, "mean_tpr": 1, "wall_s": 3.14159, "bytes_up": 10,
               "provenance": {"torch": "2.5", "cpu": ["avx2", "fma"], "threads": 4}}
    rounds = [{"round": 1, "clean_accuracy": 0.4, "attack_success_rate": 0.123456, "tpr": 0.5, "fpr": 0.0,
               "accepted": [0, 1, 3], "wall_s": 1.5},
              {"round": 2, "accepted": None}]
    assert report.summary_markdown(summary, rounds) == (
        "# r1\n\n**Status: failed** — boom\n\n"
        "| metric | value |\n|---|---|\n"
        "| rounds | 2 |\n| aggregated_rounds | 1 |\n| attack_success_rate | – |\n"
        "| max_attack_success_rate | 0.250 |\n| clean_accuracy | 0.500 |\n| initial_clean_accuracy | 0.100 |\n"
        "| initial_attack_success_rate | – |\n| mean_tpr | 1 |\n| mean_fpr | – |\n| wall_s | 3.142 |\n"
        "| bytes_up | 10 |\n| bytes_down | – |\n| rejected_replies | – |\n\n"
        "| round | CA | ASR | TPR | FPR | accepted | s |\n|---|---|---|---|---|---|---|\n"
        "| 1 | 0.400 | 0.123 | 0.500 | 0.000 | 3 | 1.500 |\n"
        "| 2 | – | – | – | – | 0 | – |\n\n"
        "Measured with: torch 2.5, cpu avx2, fma, threads 4\n\n")


def test_summary_markdown_of_a_completed_run_without_a_name_or_status():
    md = report.summary_markdown({"status": "completed"}, [])
    assert md.startswith("# run\n\n| metric | value |\n")
    assert md.endswith("|---|---|---|---|---|---|---|\n")
    assert report.summary_markdown({}, []) == md
    md = report.summary_markdown({"status": "interrupted", "provenance": "not a table"}, [])
    assert md.startswith("# run\n\n**Status: interrupted** — \n\n| metric")
    assert "Measured with" not in md


# ---- the plot --------------------------------------------------------------------------------
@pytest.fixture
def figures(monkeypatch):
    import matplotlib.pyplot as plt

    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    yield kept
    plt.close("all")


def test_the_plot_shows_ca_and_asr_per_round_from_the_initial_model(tmp_path, figures):
    rounds = [{"round": 1, "clean_accuracy": 0.5, "attack_success_rate": None},
              {"round": 2, "clean_accuracy": 0.6, "attack_success_rate": 0.3}]
    path = report.plot_rounds(rounds, tmp_path / "m.png", initial={"clean_accuracy": 0.1, "attack_success_rate": None},
                              chance=0.25)
    assert path == tmp_path / "m.png" and path.read_bytes()[:8] == PNG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png"]
    [fig] = figures
    [ax] = fig.axes
    ca, asr, chance = ax.lines
    assert (ca.get_label(), list(ca.get_xdata()), list(ca.get_ydata())) == (
        "clean accuracy (zero-shot)", [0, 1, 2], [0.1, 0.5, 0.6])
    assert (asr.get_label(), list(asr.get_xdata())) == ("attack success rate", [1, 2])
    assert math.isnan(asr.get_ydata()[0]) and asr.get_ydata()[1] == 0.3
    assert (chance.get_label(), list(chance.get_ydata())) == ("chance accuracy", [0.25, 0.25])
    assert ax.get_xlabel() == "round" and ax.get_ylim() == (0, 1)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "clean accuracy (zero-shot)", "attack success rate", "chance accuracy"]


def test_the_plot_without_an_initial_model_or_chance_and_in_the_suffixs_format(tmp_path, figures):
    rounds = [{"round": 3, "clean_accuracy": 0.5, "attack_success_rate": 0.1}]
    report.plot_rounds(rounds, tmp_path / "m.svg")
    assert (tmp_path / "m.svg").read_text().lstrip().startswith("<?xml")
    report.plot_rounds(rounds, tmp_path / "noext", initial={"clean_accuracy": None})
    assert (tmp_path / "noext").read_bytes()[:8] == PNG
    for fig in figures:
        [ax] = fig.axes
        assert [list(ln.get_xdata()) for ln in ax.lines] == [[3], [3]]
    with pytest.raises(ValueError, match="Format .xpng. is not supported"):  # a suffix no format has is refused, not read another way
        report.plot_rounds(rounds, tmp_path / "m.Xpng")
    assert not (tmp_path / "m.Xpng").exists()


def test_a_run_directory_plots_its_rounds_into_metrics_png(tmp_path, figures):
    d = RunDirectory(tmp_path)
    assert d.plot() is None and figures == []
    d.append_round({"round": 1, "clean_accuracy": 0.5, "attack_success_rate": 0.1})
    assert d.plot(initial={"clean_accuracy": 0.2}, chance=0.1) == tmp_path / "metrics.png"
    assert (tmp_path / "metrics.png").read_bytes()[:8] == PNG
    [ax] = figures[0].axes
    assert list(ax.lines[0].get_xdata()) == [0, 1] and ax.lines[2].get_label() == "chance accuracy"


# ---- several runs ----------------------------------------------------------------------------
def test_read_summary_is_empty_for_anything_but_a_json_object(tmp_path):
    assert report.read_summary(tmp_path) == {}
    (tmp_path / "summary.json").write_text('{"status": "completed"}')
    assert report.read_summary(str(tmp_path)) == {"status": "completed"}
    (tmp_path / "summary.json").write_text('{"status": "compl')
    assert report.read_summary(tmp_path) == {}
    (tmp_path / "summary.json").write_text("[1, 2]")
    assert report.read_summary(tmp_path) == {}


def test_summaries_table_in_full(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "summary.json").write_text(json.dumps(
        {"name": "a", "strategy": "median", "clean_accuracy": 0.5, "attack_success_rate": 0.25, "mean_tpr": None,
         "wall_s": 12}))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "summary.json").write_text("{}")
    assert report.summaries_table([tmp_path / "a", str(tmp_path / "b")]) == (
        "| run | defense | CA | ASR | mean TPR | mean FPR | wall s |\n"
        "|---|---|---|---|---|---|---|\n"
        "| a | median | 0.500 | 0.250 | – | – | 12 |\n"
        "| – | – | – | – | – | – | – |\n")
    assert report.summaries_table([]) == ("| run | defense | CA | ASR | mean TPR | mean FPR | wall s |\n"
                                          "|---|---|---|---|---|---|---|\n")
    with pytest.raises(FileNotFoundError) as e:
        report.summaries_table([tmp_path / "a", tmp_path / "c"])
    assert str(e.value) == f"{tmp_path / 'c' / 'summary.json'} does not exist (not a finished run directory)"
