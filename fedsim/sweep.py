"""A grid of runs: a config, its axes (``fedsim.grid``) and seeds → one run directory per cell
under the sweep's folder, run one after another in this process.

Every cell's config is validated before the first one starts (all problems at once). A re-run
of the same sweep skips the cells whose summary says "completed", resumes those that hold the
checkpoint of an unfinished run, and sets any other existing cell folder aside
(``<cell>.failed-<n>``, never deleted) to run the cell afresh. A failing cell is recorded and
the sweep goes on. What happened to each cell is appended to ``sweep.jsonl``, the runs' own
progress lines to ``sweep.log``; at the end ``fedsim.results`` writes the tables and figures.
The cells' clients share one Ray cluster the sweep starts and ends (``SharedCluster``).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fedsim.config import Config, ConfigError, invalid, problems_of, read_config, set_key, validate_config
from fedsim.grid import Axis, Cell, axes_of, axis_conflicts, axis_option, expand, merge_axes
from fedsim.report import RunDirectory, RunDirectoryError, exclusive, new_run_directory, read_summary
from fedsim.results import GRID_FILE, STATUS_FILE, write_results

LOG_FILE = "sweep.log"
# How many cells a problem shared by many cells names before "and N more".
SHOWN_CELLS = 3


@dataclass(frozen=True)
class Plan:
    axes: list[Axis]
    cells: list[tuple[Cell, Config]]


def plan(config: str | Path, overrides=(), grid=(), seeds: int | None = None, out: Path | None = None) -> Plan:
    """Every cell of the sweep with its validated config. Seeds: ``seeds`` (else the table's
    ``seeds``, else 1) runs per cell with seed = the config's seed, seed + 1, … . Each cell is
    the config with the ``--set`` overrides, then the cell's axis values and seed, named
    ``<name>-<cell>``. Raises ConfigError naming every problem: of the grid itself, else of
    each cell (a problem shared by several cells once, with the cells it affects), and, with
    ``out``, a cell folder there that holds a run of a different config."""
    raw = read_config(config, overrides)
    table = raw.pop("sweep", {})
    if not isinstance(table, dict):
        raise ConfigError(invalid([f"sweep={table!r}: expected a table"]))
    axes, declared_seeds, problems = axes_of(table)
    given = []
    for item in grid:
        try:
            given.append(axis_option(item))
        except ConfigError as e:
            problems += problems_of(e)
    axes = merge_axes(axes, given)
    problems += axis_conflicts(axes)
    problems += [f"--set {item!r} sets a key the sweep varies ({key!r}); drop one of them"
                 for item in overrides for key in (item.partition("=")[0].strip(),)
                 for axis in axes for swept in axis.keys
                 if key == swept or key.startswith(swept + ".") or swept.startswith(key + ".")]
    base_seed = raw.get("seed", 0)
    if isinstance(base_seed, bool) or not isinstance(base_seed, int):
        problems.append(f"seed={base_seed!r}: expected an integer")
    if problems:
        raise ConfigError(invalid(problems))
    cells = expand(axes, [base_seed + i for i in range(seeds or declared_seeds or 1)])
    names = [c.name for c in cells]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ConfigError(invalid([f"sweep: several cells would be named {n!r}; relabel an axis's values"
                                   for n in clashes]))
    return Plan(axes, _validated(raw, cells, out))


def _validated(raw: dict, cells: list[Cell], out: Path | None) -> list[tuple[Cell, Config]]:
    from fedsim.runner import run_checks

    checks = run_checks()
    found: dict[str, list[str]] = {}  # problem → the cells that have it
    planned = []
    for cell in cells:
        cell_raw = copy.deepcopy(raw)
        try:
            for key, value in cell.settings.items():
                set_key(cell_raw, key.split("."), value, f"sweep value {key!r}")
            cell_raw["name"] = f"{raw.get('name', 'experiment')}-{cell.name}"
            cfg = validate_config(cell_raw, checks)
        except ConfigError as e:
            for problem in problems_of(e):
                found.setdefault(problem, []).append(cell.name)
            continue
        if out is not None and not _same_config(out / cell.name, cfg):
            found.setdefault(f"{out / cell.name} holds a run of a different config; use another --out "
                             "or move that folder", []).append(cell.name)
        planned.append((cell, cfg))
    if found:
        raise ConfigError(invalid(f"{problem}  [{_which(names, len(cells))}]" for problem, names in found.items()))
    return planned


def _which(names: list[str], total: int) -> str:
    shown = ", ".join(names[:SHOWN_CELLS])
    more = f" and {len(names) - SHOWN_CELLS} more" if len(names) > SHOWN_CELLS else ""
    return f"{len(names)} of {total} cells: {shown}{more}"


def _same_config(path: Path, cfg: Config) -> bool:
    """Whether a cell folder is new or holds a run of ``cfg``: its config.toml, read by this
    version of fedsim (fields added since take their defaults, so a sweep continues after an
    upgrade that changes nothing it set), equals ``cfg`` (a BadCLIP patch the run learned and
    wrote into its config.toml aside)."""
    file = path / "config.toml"
    if not file.is_file():
        return True
    try:
        theirs = tomllib.loads(Config.model_validate(tomllib.loads(file.read_text())).to_toml())
    except (ValueError, OSError):  # unreadable, or not a config of this version
        return False
    params = theirs.get("attack", {}).get("data", {}).get("trigger", {}).get("params", {})
    if cfg.attack.data.trigger.name == "badclip" and "pattern" not in cfg.attack.data.trigger.params:
        params.pop("pattern", None)
    return theirs == tomllib.loads(cfg.to_toml())


def set_aside(path: Path) -> Path:
    """Rename a cell folder to ``<cell>.failed-<n>`` (the first n not taken)."""
    n = 1
    while (target := path.with_name(f"{path.name}.failed-{n}")).exists():
        n += 1
    path.rename(target)
    return target


class SharedCluster:
    """One Ray cluster for every cell of a sweep that runs (``runner.start_cluster``, started
    when the first cell that is not skipped needs it, ended when the sweep ends, however it
    ends): starting Ray is a fixed cost of every run, ≈ 5 s of a 3-round cell here (2-vCPU VM
    B, 2026-11-25; same numbers either way), paid once. Not used when a cell names a cluster
    of its own (``resources.ray_address``) or the cells ask for different CPU totals, nor for
    a single cell, nor when a cell runs without Ray (``resources.engine``: the in-process
    engine, the default where no cell needs Ray). While it lives its folder is named in ``ray-session.txt`` under the sweep's
    folder, so a re-run after a ``kill -9`` ends what was left; a cluster that fails to start
    falls back to a Ray session per run."""

    def __init__(self, out: Path, cfgs: list[Config], log):
        totals = {cfg.resources.total_cpus for cfg in cfgs}
        self.wanted = len(cfgs) > 1 and len(totals) == 1 and all(
            cfg.resources.ray_address is None and cfg.resources.engine_for(cfg.faults.straggler_rate) == "ray"
            for cfg in cfgs
        )
        self.total = totals.pop() if len(totals) == 1 else None
        self.out, self.log = out, log
        self.folder: Path | None = None
        self.address: str | None = None

    def __enter__(self):
        from fedsim import runner

        runner.end_leftover_session(self.out)
        return self

    def __call__(self) -> str | None:
        """The cluster's address (started on the first call), or None: a Ray session per run."""
        from fedsim import runner

        if self.wanted and self.address is None:
            try:
                self.folder, self.address = runner.start_cluster(self.total or runner.available_cpus())
            except (OSError, subprocess.SubprocessError) as e:
                self.wanted = False
                self.log(f"fedsim: no shared Ray cluster ({runner.describe(e)}); each run starts its own")
            else:
                (self.out / runner.RAY_SESSION).write_text(str(self.folder))
        return self.address

    def __exit__(self, *exc):
        from fedsim import runner

        if self.folder is not None:
            runner.end_ray(self.folder)
            (self.out / runner.RAY_SESSION).unlink(missing_ok=True)


def run_cell(path: Path, cfg: Config, log, cluster=lambda: None) -> tuple[str, dict]:
    """Bring one cell to an end: skip it when completed, resume it when resumable, else run it
    afresh (an unfinished folder set aside first), its clients on ``cluster()``'s Ray cluster.
    Returns (what was done, its summary); a run that raised is "failed" with its error, and a
    summary.json says so."""
    from fedsim import runner

    summary = read_summary(path)
    if summary.get("status") == "completed":
        return "skipped", summary
    action = "ran"
    if path.exists() and any(path.iterdir()):
        if runner.resumable(path):
            action = "resumed"
        else:
            action = f"ran afresh, the unfinished run moved to {set_aside(path).name}"
    try:
        if action == "resumed":
            return action, runner.resume(path, log=log, ray_address=cluster())
        run_dir = new_run_directory(path)
        run_dir.write_config(cfg.to_toml())
        return action, runner.run(cfg, run_dir, log=log, ray_address=cluster())
    except Exception as e:
        summary = read_summary(path)
        if summary.get("status") != "failed":
            summary = {"name": cfg.name, "seed": cfg.seed, "strategy": cfg.strategy.name,
                       "malicious": cfg.malicious, "status": "failed", "error": runner.describe(e)}
            RunDirectory(path).write_summary(summary)
        return action, summary


class _Progress:
    """A bar over the cells and one over the current cell's rounds (from its progress lines),
    on a terminal; elsewhere only the line each cell ends with. Every progress line of the
    runs goes to ``sweep.log``."""

    def __init__(self, out: Path, total: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(highlight=False)
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), console=self.console, disable=not self.console.is_terminal)
        self.cells = self.bars.add_task("cells", total=total)
        self.rounds = self.bars.add_task("rounds", total=None, visible=False)
        self.log_file = (out / LOG_FILE).open("a")

    def __enter__(self):
        self.bars.start()
        return self

    def __exit__(self, *exc):
        self.bars.stop()
        self.log_file.close()

    def start(self, cell: Cell, rounds: int) -> None:
        self.bars.update(self.cells, description=cell.name)
        self.bars.reset(self.rounds, total=rounds, visible=True, description="rounds")

    def log(self, message: str) -> None:
        self.log_file.write(message + "\n")
        self.log_file.flush()
        words = message.split()
        if len(words) > 1 and words[0] == "round" and words[1].isdigit() and int(words[1]) > 0:
            self.bars.update(self.rounds, completed=int(words[1]))

    def end(self, line: str) -> None:
        self.bars.advance(self.cells)
        self.console.print(line, markup=False, soft_wrap=True)


def _outcome(action: str, summary: dict) -> str:
    if summary.get("status") == "completed":
        numbers = f"CA {summary['clean_accuracy']:.3f}  ASR {summary['attack_success_rate']:.3f}"
        return f"{'skipped, completed before' if action == 'skipped' else action}: {numbers}"
    return f"{action}: {summary.get('status')}: {summary.get('error')}"


def run_plan(p: Plan, out: Path, *, config: str | Path, overrides=()) -> list[dict]:
    """Run every cell of ``p`` under ``out`` (``sweep.json``: the grid; ``sweep.jsonl``: one
    line per cell), then write the results; returns the status lines of this sweep.
    RunDirectoryError when another fedsim process works in ``out``."""
    with exclusive(out):
        return _run_plan(p, out, config=config, overrides=overrides)


def _run_plan(p: Plan, out: Path, *, config: str | Path, overrides) -> list[dict]:
    (out / GRID_FILE).write_text(json.dumps({
        "config": str(config), "overrides": list(overrides), "axes": [a.to_json() for a in p.axes],
        "seeds": sorted({c.seed for c, _ in p.cells}), "cells": [c.name for c, _ in p.cells],
    }, indent=2) + "\n")
    statuses = []
    with _Progress(out, len(p.cells)) as progress, SharedCluster(out, [c for _, c in p.cells], progress.log) as cluster:
        for i, (cell, cfg) in enumerate(p.cells, start=1):
            progress.start(cell, cfg.rounds)
            t0 = time.perf_counter()
            status = {"cell": cell.name, "labels": cell.labels, "seed": cell.seed, "run_dir": str(out / cell.name)}
            try:
                action, summary = run_cell(out / cell.name, cfg, progress.log, cluster)
            except KeyboardInterrupt:
                _append(out, {**status, "status": "interrupted", "action": "stopped by the user",
                              "wall_s": round(time.perf_counter() - t0, 2)})
                raise
            status.update({"status": summary.get("status"), "action": action, "error": summary.get("error"),
                           "wall_s": round(time.perf_counter() - t0, 2)})
            _append(out, status)
            statuses.append(status)
            progress.end(f"[{i}/{len(p.cells)}] {cell.name}: {_outcome(action, summary)}")
    write_results([out], out)
    return statuses


def _append(out: Path, status: dict) -> None:
    with (out / STATUS_FILE).open("a") as f:
        f.write(json.dumps({**status, "time": datetime.now().isoformat(timespec="seconds")}) + "\n")


def default_out(config: str | Path) -> Path:
    """``runs/sweep-<config file name>``: the same command finds its own cells again."""
    return Path("runs") / f"sweep-{Path(config).stem}"


def main_sweep(config: str, out: str | None, overrides: list[str], grid: list[str], seeds: int | None) -> int:
    """``fedsim sweep``: exit 2 when any cell's config is invalid (nothing started), 1 when a
    cell failed (the others still ran), 0 when every cell completed."""
    folder = Path(out) if out is not None else default_out(config)
    if folder.exists() and not folder.is_dir():
        print(f"fedsim: --out {str(folder)!r} is not a directory", file=sys.stderr)
        return 2
    try:
        p = plan(config, overrides, grid, seeds, out=folder)
    except ConfigError as e:
        print(f"fedsim: {e}", file=sys.stderr)
        return 2
    print(f"fedsim: sweep of {len(p.cells)} runs ({' × '.join(f'{len(a.values)} {a.name}' for a in p.axes) or 'no axes'}"
          f", {len({c.seed for c, _ in p.cells})} seeds) → {folder}")
    try:
        statuses = run_plan(p, folder, config=config, overrides=overrides)
    except RunDirectoryError as e:
        print(f"fedsim: --out {e}", file=sys.stderr)
        return 2
    failed = [s["cell"] for s in statuses if s["status"] != "completed"]
    print(f"fedsim: {len(statuses) - len(failed)} of {len(statuses)} runs completed → {folder}/results.md")
    if failed:
        print(f"fedsim: {len(failed)} failed: {', '.join(failed)} (see {folder}/{STATUS_FILE})", file=sys.stderr)
        return 1
    return 0
