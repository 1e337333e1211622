"""The run directory: what a run learned, as files a person can open.

``config.toml`` (resolved), ``rounds.jsonl`` (one JSON object per round, appended and flushed
as soon as the round is evaluated, so a crash or Ctrl-C never loses finished rounds),
``summary.json`` / ``summary.md`` (written at the end, also after a failure, from whatever
rounds exist) and ``metrics.png`` (clean accuracy and attack success rate per round).

A write that fails (a full disk above all) never costs what was written before: whole files are
replaced atomically (``write_atomic``), a round that cannot be appended is taken back, and the
error is an OSError naming the file ("No space left on device: '…/summary.md'").
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import math
import os
from pathlib import Path

from fedsim.metrics import METRICS

# ``fedsim deploy``'s folder in a run directory (the SuperLink's and SuperNodes' logs, Flower's
# home), made before the ServerApp opens the directory.
DEPLOY_DIR = "deploy"


def _clean(value):
    """JSON has no NaN/Inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_atomic(path: Path, data: bytes | str, *, tmp_suffix: str = ".tmp") -> None:
    """Replace ``path`` with ``data`` so that a failure or a kill at any moment leaves either the
    previous file or the new one, whole, never a part or an empty file: a temporary file beside
    it (``path`` + ``tmp_suffix``), flushed to disk, then renamed over it. On failure the
    temporary file is removed and an OSError names ``path`` (a write's own error names no file:
    "[Errno 28] No space left on device" alone would not say which disk is full)."""
    path = Path(path)
    tmp = path.with_name(path.name + tmp_suffix)
    try:
        with tmp.open("wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError):
            raise _naming(e, path) from None
        raise


def _naming(error: OSError, path: Path) -> OSError:
    """``error`` as an OSError (of the same subclass) about ``path``."""
    return OSError(error.errno, error.strerror or str(error), str(path)) if error.errno else error


class RunDirectoryError(ValueError):
    """A run directory that cannot be used; ``str()`` says why."""


# Held (flock) by the fedsim process working in a run or sweep directory; the kernel drops it
# when that process ends, however it ends, so a stale file never blocks anyone.
LOCK_FILE = ".fedsim.lock"
_held: set[Path] = set()


@contextlib.contextmanager
def exclusive(path: str | Path):
    """Work in the directory ``path`` (made if missing) with no other fedsim process in it: a
    second ``fedsim run``/``resume``/``sweep`` on the same folder would take the first one's
    Ray session for a killed run's leftover and end it, and both would append to the same
    files. RunDirectoryError, naming the holder, when another process holds it; re-entrant
    within one process (a sweep's cell, a resumed run)."""
    path = Path(path).resolve()
    if path in _held:
        yield
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
        f = (path / LOCK_FILE).open("a+")
    except OSError as e:
        raise RunDirectoryError(f"{str(path)!r} cannot be used: {e.strerror or e}") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise RunDirectoryError(f"{str(path)!r} is in use by another fedsim process ({holder}); "
                                    "wait for it to end, or use another folder") from None
        f.truncate(0)
        # Only a note for whoever is refused (a full disk must not fail the run here, nor later
        # when a buffered note would be flushed as the file closes)
        with contextlib.suppress(OSError):
            os.write(f.fileno(), f"pid {os.getpid()}\n".encode())
        _held.add(path)
        try:
            yield
        finally:
            _held.discard(path)


def new_run_directory(path: str | Path, allow: tuple[str, ...] = ()) -> "RunDirectory":
    """A run directory at ``path``, which must be new or empty (but for the entries named in
    ``allow``): an existing non-empty one is refused, so results are never overwritten or
    appended to."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(p.name not in allow for p in path.iterdir())):
        raise RunDirectoryError(f"{str(path)!r} already exists and is not empty")
    try:
        run_dir = RunDirectory(path)
    except OSError as e:
        raise RunDirectoryError(f"{str(path)!r} cannot be created: {e.strerror or e}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunDirectoryError(f"{str(path)!r} is not writable")
    return run_dir


class RunDirectory:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.rounds_file = self.path / "rounds.jsonl"

    def write_config(self, toml_text: str) -> None:
        write_atomic(self.path / "config.toml", toml_text)

    def append_round(self, record: dict) -> None:
        """Append ``record`` as one line, written through at once; a line that cannot be
        written whole (a full disk) is cut off again, so rounds.jsonl never ends in half a
        record."""
        line = memoryview((json.dumps(_clean(record)) + "\n").encode())
        with self.rounds_file.open("ab", buffering=0) as f:
            end = f.seek(0, os.SEEK_END)
            try:
                while line:  # an unbuffered write may write only a part
                    line = line[f.write(line):]
            except BaseException as e:
                with contextlib.suppress(OSError):
                    f.truncate(end)
                if isinstance(e, OSError):
                    raise _naming(e, self.rounds_file) from None
                raise

    def read_rounds(self) -> list[dict]:
        """The rounds in rounds.jsonl, less a last line a kill cut short."""
        if not self.rounds_file.is_file():
            return []
        text = self.rounds_file.read_text()
        lines = text.splitlines()
        if lines and not text.endswith("\n"):
            try:
                json.loads(lines[-1])
            except json.JSONDecodeError:
                lines.pop()
        return [json.loads(line) for line in lines if line]

    def keep_rounds(self, last: int) -> None:
        """Drop the rounds after ``last`` (and a line a kill cut short) from rounds.jsonl, by
        an atomic replace: resuming from round ``last``'s checkpoint redoes the later ones."""
        kept = []
        for line in self.rounds_file.read_text().splitlines() if self.rounds_file.is_file() else []:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("round", last + 1) <= last:
                kept.append(line + "\n")
        write_atomic(self.rounds_file, "".join(kept))

    def write_summary(self, summary: dict) -> None:
        """summary.md, then summary.json, each whole or not at all."""
        self.write_summary_md(summary)
        self.write_summary_json(summary)

    def write_summary_md(self, summary: dict) -> None:
        write_atomic(self.path / "summary.md", summary_markdown(_clean(summary), self.read_rounds()))

    def write_summary_json(self, summary: dict) -> None:
        write_atomic(self.path / "summary.json", json.dumps(_clean(summary), indent=2) + "\n")

    def plot(self, initial: dict | None = None, chance: float | None = None) -> Path | None:
        rounds = self.read_rounds()
        if not rounds:
            return None
        return plot_rounds(rounds, self.path / "metrics.png", initial=initial, chance=chance,
                           title=f"{self.path.name}: CA and ASR per round")


def summarize(rounds: list[dict], *, initial: dict | None, wall_s: float, extra: dict) -> dict:
    """Final numbers of a run from its rounds (``rounds`` may be empty after a failure)."""
    last = rounds[-1] if rounds else {}
    summary = {
        "rounds": len(rounds),
        **{m.name: m.of_run(rounds, initial) for m in METRICS},
        "wall_s": round(wall_s, 2),
        "retrieval": last.get("retrieval"),
        # SimCLR mode: clean_accuracy is kNN's; the linear probe's numbers next to it
        **{k: last[k] for k in ("probe_accuracy", "probe_attack_success_rate") if k in last},
        # a CleanCLIP step after the last round: the aggregate's numbers before it
        **{k: last[k] for k in ("clean_accuracy_before_cleanclip", "attack_success_rate_before_cleanclip")
           if k in last},
        "bytes_up": sum(r.get("bytes_up", 0) or 0 for r in rounds),
        "bytes_down": sum(r.get("bytes_down", 0) or 0 for r in rounds),
        "rejected_replies": sum(len(r.get("rejected") or {}) for r in rounds),
        "aggregated_rounds": sum(1 for r in rounds if not r.get("skipped")),
        "skipped_rounds": [r["round"] for r in rounds if r.get("skipped")],
    }
    summary.update(extra)
    return summary


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def summary_markdown(summary: dict, rounds: list[dict]) -> str:
    lines = [f"# {summary.get('name', 'run')}", ""]
    if summary.get("status", "completed") != "completed":
        lines += [f"**Status: {summary['status']}** — {summary.get('error', '')}", ""]
    lines += [
        "| metric | value |",
        "|---|---|",
        *(f"| {k} | {_fmt(summary.get(k))} |" for k in (
            "rounds", "aggregated_rounds", *(m.name for m in METRICS if m.in_summary_md),
            "wall_s", "bytes_up", "bytes_down", "rejected_replies",
        )),
        "",
        "| round | CA | ASR | TPR | FPR | accepted | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rounds:
        lines.append(
            f"| {r['round']} | {_fmt(r.get('clean_accuracy'))} | {_fmt(r.get('attack_success_rate'))}"
            f" | {_fmt(r.get('tpr'))} | {_fmt(r.get('fpr'))} | {len(r.get('accepted') or [])}"
            f" | {_fmt(r.get('wall_s'))} |"
        )
    made = summary.get("provenance")
    if isinstance(made, dict):
        lines += ["", "Measured with: " + ", ".join(
            f"{k} {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in made.items()), ""]
    return "\n".join(lines) + "\n"


def plot_rounds(
    rounds: list[dict], path: Path, *, initial: dict | None = None, chance: float | None = None,
    title: str | None = None,
) -> Path:
    """Clean accuracy and attack success rate against the round (round 0 = initial model):
    titled (``title``, else "CA and ASR per round"), y axis "share of test images", whole
    rounds on the x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["round"] for r in rounds]
    series = {}
    for key, label in (("clean_accuracy", "clean accuracy (zero-shot)"),
                       ("attack_success_rate", "attack success rate")):
        ys = [r.get(key) for r in rounds]
        x0 = ([0] if initial and initial.get(key) is not None else [])
        y0 = ([initial[key]] if x0 else [])
        series[label] = (x0 + xs, y0 + [y if y is not None else float("nan") for y in ys])
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)  # pragma: no mutate
    for label, (x, y) in series.items():
        ax.plot(x, y, marker="o", markersize=3, label=label)  # pragma: no mutate
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", linewidth=1, label="chance accuracy")  # pragma: no mutate
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("share of test images")
    ax.set_title(title or "CA and ASR per round", fontsize=9)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)  # pragma: no mutate
    ax.legend(loc="best", fontsize=8)  # pragma: no mutate
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    write_atomic(path, image.getbuffer())
    return path


TABLE_COLUMNS = (
    ("name", "run"), ("strategy", "defense"), ("clean_accuracy", "CA"),
    ("attack_success_rate", "ASR"), ("mean_tpr", "mean TPR"), ("mean_fpr", "mean FPR"),
    ("wall_s", "wall s"),
)


def read_summary(run_dir: str | Path) -> dict:
    """``run_dir``'s summary.json; {} when it has none or none that reads as a JSON object
    (a run killed before its end, a file cut short or edited)."""
    try:
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def summaries_table(run_dirs) -> str:
    """A markdown table of several runs' summary.json (``fedsim table DIR...``)."""
    lines = ["| " + " | ".join(h for _, h in TABLE_COLUMNS) + " |",
             "|" + "---|" * len(TABLE_COLUMNS)]
    for d in run_dirs:
        p = Path(d) / "summary.json"
        if not p.is_file():
            raise FileNotFoundError(f"{p} does not exist (not a finished run directory)")
        s = json.loads(p.read_text())
        lines.append("| " + " | ".join(_fmt(s.get(k)) for k, _ in TABLE_COLUMNS) + " |")
    return "\n".join(lines) + "\n"
