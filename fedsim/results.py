"""Many runs side by side, from their run directories: ``results.csv`` (one row per run),
``results.md`` (mean ± std over seeds, one table per metric), heatmaps of final ASR and CA
over the first two axes, and CA / ASR per round overlaid per cell with a min–max band over
seeds. ``fedsim sweep`` writes them at its end; ``fedsim report DIR...`` rebuilds them.

The axes come from the grid file ``fedsim sweep`` leaves in its folder (``sweep.json``: axis
names and labels), else from the runs' configs (``fedsim.grid.infer_axes``). A run's label on
each axis is the one the sweep recorded for its cell (``sweep.jsonl``), else the axis value its
config matches.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from fedsim import power
from fedsim.metrics import METRICS as RUN_METRICS
from fedsim.grid import Axis, flatten, infer_axes, label_in

GRID_FILE = "sweep.json"
# One line per cell a sweep ran: its labels, status, what was done (fedsim.sweep_run writes it).
STATUS_FILE = "sweep.jsonl"


def table_metrics() -> list[tuple[str, str, str]]:
    """What one run is reduced to in the sweep tables: (column, summary.json key, heading) of
    the metrics with a column (``fedsim.metrics.METRICS``, where they are declared), in order."""
    return [(m.column, m.name, m.heading) for m in RUN_METRICS if m.column]
# Folders a sweep moved aside (a cell run afresh): kept, never reported.
_SET_ASIDE = re.compile(r"\.failed-\d+$")


@dataclass(frozen=True)
class Run:
    path: Path
    config: dict  # flat: dotted key → value
    summary: dict
    rounds: list[dict]
    labels: dict | None = None  # axis → label, as the sweep that ran it recorded

    @property
    def completed(self) -> bool:
        return self.summary.get("status") == "completed"


def is_run_dir(path: Path) -> bool:
    """A run directory: a resolved config and a summary (rounds.jsonl too once a round ended)."""
    return (path / "config.toml").is_file() and (path / "summary.json").is_file()


def find_runs(paths) -> list[Path]:
    """The run directories among ``paths``: each path that is one, else the run directories
    directly inside it (sorted by name; ``*.failed-N`` folders a sweep set aside left out)."""
    found = []
    for p in map(Path, paths):
        if is_run_dir(p):
            found.append(p)
        elif p.is_dir():
            found += sorted(d for d in p.iterdir() if is_run_dir(d) and not _SET_ASIDE.search(d.name))
        else:
            raise FileNotFoundError(f"{p} is not a directory")
    if not found:
        raise FileNotFoundError(f"no run directory (config.toml + summary.json) in {', '.join(map(str, paths))}")
    return found


def load_run(path: Path) -> Run:
    rounds_file = path / "rounds.jsonl"
    rounds = ([json.loads(line) for line in rounds_file.read_text().splitlines() if line]
              if rounds_file.is_file() else [])
    return Run(path, flatten(tomllib.loads((path / "config.toml").read_text())),
               json.loads((path / "summary.json").read_text()), rounds, recorded_labels(path))


def recorded_labels(path: Path) -> dict | None:
    """The labels ``fedsim sweep`` recorded for the cell in ``path`` (the last line of its
    folder's ``sweep.jsonl`` naming it), or None. They are what the cell was run as: a
    config alone can match several values of an axis (values setting different keys, each
    equal to the base's where the other does not set it) or none (a BadCLIP patch the run
    learned and wrote into its config)."""
    status = path.parent / STATUS_FILE
    if not status.is_file():
        return None
    labels = None
    for line in status.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("cell") == path.name and isinstance(entry.get("labels"), dict):
            labels = entry["labels"]
    return labels


def grid_axes(paths, runs: list[Run]) -> list[Axis]:
    """The axes a sweep declared (its ``sweep.json`` in one of ``paths``), else those the
    runs' configs show."""
    for p in map(Path, paths):
        if (p / GRID_FILE).is_file():
            return [Axis.from_json(a) for a in json.loads((p / GRID_FILE).read_text())["axes"]]
    return infer_axes([r.config for r in runs])


def labels_of(run: Run, axes: list[Axis]) -> tuple[str, ...]:
    """The run's value on each axis: the label its sweep recorded, else the value its config
    matches ("?" where it matches none)."""
    recorded = run.labels or {}
    return tuple(
        recorded[axis.name] if recorded.get(axis.name) in {label for label, _ in axis.values}
        else label_in(axis, run.config) or "?"
        for axis in axes
    )


def swept_keys(axes: list[Axis]) -> list[str]:
    return list(dict.fromkeys(k for axis in axes for k in axis.keys))


def csv_rows(runs: list[Run], axes: list[Axis]) -> list[dict]:
    """One row per run: its label on every axis, every swept key's value, the seed, status,
    final and max ASR, final CA, mean TPR / FPR, wall time, run directory and error."""
    keys = [k for k in swept_keys(axes) if k not in {a.name for a in axes}]
    rows = []
    for run in runs:
        s = run.summary
        row = dict(zip((a.name for a in axes), labels_of(run, axes)))
        row.update({k: _csv_value(run.config.get(k)) for k in keys})
        row.update({"seed": run.config.get("seed"), "status": s.get("status")})
        row.update({column: s.get(key) for column, key, _ in table_metrics()})
        row.update({"wall_s": s.get("wall_s"), "run_dir": str(run.path), "error": s.get("error") or ""})
        rows.append(row)
    return rows


def _csv_value(value):
    return json.dumps(value) if isinstance(value, (dict, list)) else value


def results_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["run_dir"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def mean_std(values: list[float]) -> str:
    """``mean ± std`` (sample standard deviation, n − 1) of the values; one value: itself."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def cells(runs: list[Run], axes: list[Axis]) -> dict[tuple[str, ...], list[Run]]:
    """The runs of each cell (one label per axis; its runs are the seeds), in axis order."""
    grouped: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        grouped.setdefault(labels_of(run, axes), []).append(run)
    order = [[label for label, _ in axis.values] + ["?"] for axis in axes]
    return dict(sorted(grouped.items(), key=lambda kv: [o.index(x) for o, x in zip(order, kv[0])]))


def cell_text(runs: list[Run], key: str) -> str:
    """The table entry of one cell: mean ± std over its completed runs that recorded ``key``;
    "(k of n)" when some of its n runs did not count, "failed" / "n/a" when none did."""
    done = [r for r in runs if r.completed]
    values = [r.summary[key] for r in done if r.summary.get(key) is not None]
    if not values:
        return "n/a" if done else "none completed"
    text = mean_std(values)
    return text if len(values) == len(runs) else f"{text} ({len(values)} of {len(runs)})"


def results_markdown(runs: list[Run], axes: list[Axis]) -> str:
    """One table per metric: a row per combination of every axis but the last, a column per
    value of the last axis; entries are mean ± std over the cell's seeds."""
    grouped = cells(runs, axes)
    row_axes, col_axis = (axes[:-1], axes[-1]) if axes else ([], None)
    cols = [label for label, _ in col_axis.values] if col_axis else ["all runs"]
    rows = list(dict.fromkeys(k[:-1] for k in grouped)) if axes else [()]
    seeds = sorted({r.config.get("seed") for r in runs}, key=str)
    lines = [f"# Results of {len(runs)} runs", "",
             f"Mean ± sample standard deviation over seeds {', '.join(map(str, seeds))} of the "
             "completed runs of each cell; \"(k of n)\": only k of the cell's n runs completed.", ""]
    head = " / ".join(a.name for a in row_axes) or "runs"
    for _, key, heading in table_metrics():
        lines += [f"## {heading}", "", f"| {head} \\ {col_axis.name if col_axis else ''} | " + " | ".join(cols) + " |",
                  "|---" * (len(cols) + 1) + "|"]
        for row in rows:
            entries = [cell_text(grouped[(*row, c)], key) if (*row, c) in grouped else "–" for c in cols] \
                if axes else [cell_text(runs, key)]
            lines.append(f"| {' / '.join(row) or 'all'} | " + " | ".join(entries) + " |")
        lines.append("")
    return "\n".join(lines)


DEFENSE_KEYS = ("strategy.", "defense.", "clients.training", "clients.roclip_", "clients.adversarial_")


def scenario_of(run: Run, axes: list[Axis]) -> str:
    """What a run's defense faces, for the power check: the attack its config describes
    ("none" when attack.enabled = false, else e.g. "badnet", "badencoder", "model_replacement",
    "lie"),
    followed by its labels on the axes that set no defense key (strategy, defense, client
    training) where those say more, e.g. "badnet (badnet_p1 / r6)": runs differing there are
    different scenarios."""
    c = run.config
    if not power.is_attacked(c):
        described = "none"
    else:
        # the data attack: its trigger when the data is poisoned, else its mode (BadEncoder)
        mode = str(c.get("attack.data.mode", "poison"))
        data = str(c.get("attack.data.trigger.name", "badnet")) if mode == "poison" else mode
        parts = [data if c.get("attack.data.enabled", True) else "",
                 *(str(c.get(k, "none")) for k in ("attack.update.name", "attack.byzantine.name"))]
        described = "+".join(p for p in parts if p and p != "none") or "attack"
    labels = " / ".join(label for axis, label in zip(axes, labels_of(run, axes))
                        if not any(k.startswith(DEFENSE_KEYS) for k in axis.keys))
    return described if labels in ("", described) else f"{described} ({labels})"


def setting_of(run: Run, axes: list[Axis]) -> str:
    """The run's labels on the axes that set neither a defense key nor an attack key (e.g.
    the objective: "clip", "simclr"), joined by " / "; "" where there is none. Each setting
    gets its own no-attack check (``fedsim.power.check``)."""
    return " / ".join(label for axis, label in zip(axes, labels_of(run, axes))
                      if not any(k.startswith((*DEFENSE_KEYS, "attack.")) for k in axis.keys))


def power_check(runs: list[Run], axes: list[Axis]) -> list[power.Verdict]:
    """The grid's power check (``fedsim.power.check``) over its runs, a no-attack check per
    setting (``setting_of``)."""
    return power.check([(scenario_of(r, axes), r.config, r.summary, setting_of(r, axes)) for r in runs])


def _mean_grid(runs: list[Run], axes: list[Axis], key: str):
    """(row labels, column labels, matrix of means) of ``key`` over the first two axes, each
    entry the mean over the completed runs with those two values (seeds and other axes)."""
    rows = [label for label, _ in axes[0].values] if len(axes) > 1 else [""]
    col_axis = axes[1] if len(axes) > 1 else (axes[0] if axes else None)
    cols = [label for label, _ in col_axis.values] if col_axis else ["all runs"]
    matrix = []
    for row in rows:
        line = []
        for col in cols:
            want = ((row, col) if len(axes) > 1 else (col,))[:len(axes)]
            values = [r.summary[key] for r in runs if r.completed and r.summary.get(key) is not None
                      and labels_of(r, axes)[:len(want)] == want]
            line.append(statistics.fmean(values) if values else math.nan)
        matrix.append(line)
    return rows, cols, matrix


# Labels that are a grid's references: the undefended baseline and the attack-free run.
REFERENCES = {"fedavg": "fedavg (baseline)", "none": "none (no attack)"}


def _reference(label: str) -> str:
    return REFERENCES.get(label, label)


def plot_heatmap(runs: list[Run], axes: list[Axis], key: str, title: str, path: Path) -> Path:
    """A heatmap of the mean of ``key`` over the first two axes (rows: the first; one axis:
    a single row), each cell annotated with its value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols, matrix = _mean_grid(runs, axes, key)
    # room for the tick labels, which may be long (inferred several-key labels)
    width = 2.0 + 0.9 * len(cols) + 0.07 * max(map(len, rows))  # pragma: no mutate
    height = 1.4 + 0.45 * len(rows) + 0.05 * max(map(len, cols))  # pragma: no mutate
    fig, ax = plt.subplots(figsize=(width, height), dpi=120)  # pragma: no mutate
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis", aspect="auto")  # pragma: no mutate
    for i, line in enumerate(matrix):
        for j, v in enumerate(line):
            ax.text(j, i, "–" if math.isnan(v) else f"{v:.2f}", ha="center", va="center",
                    color="white" if not math.isnan(v) and v < 0.6 else "black", fontsize=8)
    ax.set_xticks(range(len(cols)), [_reference(c) for c in cols], rotation=30, ha="right", fontsize=8)  # pragma: no mutate
    ax.set_yticks(range(len(rows)), [_reference(r) for r in rows], fontsize=8)  # pragma: no mutate
    ax.set_xlabel(axes[1].name if len(axes) > 1 else (axes[0].name if axes else ""))
    ax.set_ylabel(axes[0].name if len(axes) > 1 else "")
    ax.set_title(f"{title} (mean over seeds{' and other axes' if len(axes) > 2 else ''})", fontsize=9)  # pragma: no mutate
    fig.colorbar(image, ax=ax, fraction=0.05)  # pragma: no mutate
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _series(runs: list[Run], key: str, initial_key: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """Rounds and, per round, the mean, min and max of ``key`` over ``runs`` (round 0: the
    initial model, where the summaries recorded it)."""
    by_round: dict[int, list[float]] = {}
    for run in runs:
        if run.summary.get(initial_key) is not None:
            by_round.setdefault(0, []).append(run.summary[initial_key])
        for r in run.rounds:
            if r.get(key) is not None:
                by_round.setdefault(r["round"], []).append(r[key])
    xs = sorted(by_round)
    return (xs, [statistics.fmean(by_round[x]) for x in xs], [min(by_round[x]) for x in xs],
            [max(by_round[x]) for x in xs])


def plot_curves(runs: list[Run], axes: list[Axis], key: str, initial_key: str, title: str, path: Path) -> Path:
    """``key`` per round, one line per cell (mean over its seeds) with a min–max band; with two
    or more axes one panel per value of the first axis, lines for the other axes' values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    grouped = cells(runs, axes)
    split = len(axes) > 1
    panels = list(dict.fromkeys(k[0] for k in grouped)) if split else [None]
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.8 * nrows), dpi=110,  # pragma: no mutate
                             sharex=True, sharey=True, squeeze=False)
    for ax, panel in zip(grid.flat, panels):
        for labels, members in grouped.items():
            if split and labels[0] != panel:
                continue
            xs, mean, low, high = _series(members, key, initial_key)
            if not xs:
                continue
            line, = ax.plot(xs, mean, marker="o", markersize=2.5, linewidth=1.2,  # pragma: no mutate
                            label=" / ".join(labels[1:] if split else labels) or "all runs")
            ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)  # pragma: no mutate
        ax.set_title(f"{axes[0].name} = {panel}" if split else title, fontsize=9)  # pragma: no mutate
        ax.set_ylim(0, 1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)  # pragma: no mutate
        ax.legend(fontsize=7, loc="best")  # pragma: no mutate
    for ax in list(grid.flat)[len(panels):]:
        ax.set_visible(False)
    for ax in grid[-1]:
        ax.set_xlabel("round")
    fig.suptitle(f"{title} per round: mean over seeds, band min–max", fontsize=10)  # pragma: no mutate
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_results(paths, out: Path, *, power_warning: bool = True) -> list[Path]:
    """Read the run directories among ``paths`` and write results.csv, results.md, the
    heatmaps (``heatmap_asr.png``, ``heatmap_ca.png``) and the curves (``curves_asr.png``,
    ``curves_ca.png``) into ``out``; returns the files written. results.md ends with the power
    check; ``power_warning``: also warn on stderr when the grid is not powered (a claim's arms
    are no defense × attack grid: ``fedsim claims`` judges them by the claim's own checks)."""
    runs = [load_run(p) for p in find_runs(paths)]
    axes = grid_axes(paths, runs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.csv").write_text(results_csv(csv_rows(runs, axes)))
    verdicts = power_check(runs, axes)
    (out / "results.md").write_text(results_markdown(runs, axes) + "\n" + power.markdown(verdicts))
    if power_warning and not power.powered(verdicts):
        print(f"fedsim: warning: the grid in {out} is not powered (its FedAvg baseline must show each "
              "attack and keep CA without one; results.md, 'Power check'):\n  "
              + "\n  ".join(v.text for v in verdicts if v.powered is not True), file=sys.stderr)
    return [
        out / "results.csv", out / "results.md",
        plot_heatmap(runs, axes, "attack_success_rate", "final ASR", out / "heatmap_asr.png"),
        plot_heatmap(runs, axes, "clean_accuracy", "final CA", out / "heatmap_ca.png"),
        plot_curves(runs, axes, "attack_success_rate", "initial_attack_success_rate", "ASR", out / "curves_asr.png"),
        plot_curves(runs, axes, "clean_accuracy", "initial_clean_accuracy", "CA", out / "curves_ca.png"),
    ]
