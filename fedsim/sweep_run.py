"""A grid of runs: a config, its axes (``fedsim.grid``) and seeds → one run directory per cell
under the sweep's folder. Cells on the in-process engine run side by side, each in a worker
process of its own (``jobs`` at a time); cells on Ray one after another in this process.

Every cell's config is validated before the first one starts (all problems at once). A re-run
of the same sweep skips the cells whose summary says "completed", resumes those that hold the
checkpoint of an unfinished run, and sets any other existing cell folder aside
(``<cell>.failed-<n>``, never deleted) to run the cell afresh. A failing cell is recorded and
the sweep goes on. What happened to each cell is appended to ``sweep.jsonl``, the runs' own
progress lines to ``sweep.log``; at the end ``fedsim.results`` writes the tables and figures.
The clients of cells on Ray share one Ray cluster the sweep starts and ends (``SharedCluster``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import multiprocessing
import os
import signal
import subprocess
import threading
import time
import tomllib
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from multiprocessing import connection
from pathlib import Path

from fedsim import ray_session
from fedsim.config import Config, ConfigError, invalid, problems_of, read_config, set_key, validate_config
from fedsim.grid import Axis, Cell, axes_of, axis_conflicts, axis_option, expand, merge_axes, select, union_axes
from fedsim.report import RunDirectory, exclusive, new_run_directory, read_summary
from fedsim.results import GRID_FILE, STATUS_FILE, write_results

LOG_FILE = "sweep.log"
# How many cells a problem shared by many cells names before "and N more".
SHOWN_CELLS = 3
# Ctrl-C while cells run side by side: each is interrupted as `fedsim run` is (it ends after the
# client and the evaluation in progress, its summary says interrupted); one still running
# GRACE_S later is interrupted again (it ends at once, its summary still written) and one still
# running KILL_S after that is killed. A second Ctrl-C hurries each step.
GRACE_S, KILL_S = 30.0, 10.0
# How often the sweep looks at its workers between their messages (one that died, a Ctrl-C).
POLL_S = 0.2


@dataclass(frozen=True)
class Plan:
    axes: list[Axis]
    cells: list[tuple[Cell, Config]]


def plan(config: str | Path, overrides=(), grid=(), seeds: int | None = None, out: Path | None = None,
         only=()) -> Plan:
    """Every cell of the sweep with its validated config. Seeds: ``seeds`` (else the table's
    ``seeds``, else 1) runs per cell with seed = the config's seed, seed + 1, … . Each cell is
    the config with the ``--set`` overrides, then the cell's axis values and seed, named
    ``<name>-<cell>``. Raises ConfigError naming every problem: of the grid itself, else of
    each cell (a problem shared by several cells once, with the cells it affects), and, with
    ``out``, a cell folder there that holds a run of a different config. ``only``: ``--only``
    items (``axis=label,...``) keep those values of an axis (``fedsim.grid.select``)."""
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
    for item in only:
        axes, wrong = select(axes, item)
        problems += wrong
    problems += axis_conflicts(axes)
    problems += [f"--set {item!r} sets a key the sweep varies ({key!r}); drop one of them (a value "
                 f"the grid lacks: add it to the config's [sweep] table, or run one cell with "
                 f"`fedsim run CONFIG --set ...`)"
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
    upgrade that changes nothing it set), equals ``cfg`` (a learned trigger's pixels the run
    learned and wrote into its config.toml aside)."""
    from clients.attacks import LEARNED_TRIGGERS, PATTERN

    file = path / "config.toml"
    if not file.is_file():
        return True
    try:
        theirs = tomllib.loads(Config.model_validate(tomllib.loads(file.read_text())).to_toml())
    except (ValueError, OSError):  # unreadable, or not a config of this version
        return False
    params = theirs.get("attack", {}).get("data", {}).get("trigger", {}).get("params", {})
    if cfg.attack.data.trigger.name in LEARNED_TRIGGERS and PATTERN not in cfg.attack.data.trigger.params:
        params.pop(PATTERN, None)  # learned by the run, not part of the cell's own config
    return theirs == tomllib.loads(cfg.to_toml())


def set_aside(path: Path) -> Path:
    """Rename a cell folder to ``<cell>.failed-<n>`` (the first n not taken)."""
    n = 1
    while (target := path.with_name(f"{path.name}.failed-{n}")).exists():
        n += 1
    path.rename(target)
    return target


class SharedCluster:
    """One Ray cluster for every cell of a sweep that runs (``ray_session.start_cluster``, started
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
            cfg.resources.ray_address is None and cfg.engine() == "ray"
            for cfg in cfgs
        )
        self.total = totals.pop() if len(totals) == 1 else None
        self.out, self.log = out, log
        self.folder: Path | None = None
        self.address: str | None = None

    def __enter__(self):
        ray_session.end_leftover_session(self.out)
        return self

    def __call__(self) -> str | None:
        """The cluster's address (started on the first call), or None: a Ray session per run."""
        from fedsim import runner

        if self.wanted and self.address is None:
            try:
                self.folder, self.address = ray_session.start_cluster(self.total or ray_session.available_cpus())
            except (OSError, subprocess.SubprocessError) as e:
                self.wanted = False
                self.log(f"fedsim: no shared Ray cluster ({runner.describe(e)}); each run starts its own")
            else:
                (self.out / ray_session.RAY_SESSION).write_text(str(self.folder))
        return self.address

    def __exit__(self, *exc):
        if self.folder is not None:
            ray_session.end_ray(self.folder)
            (self.out / ray_session.RAY_SESSION).unlink(missing_ok=True)


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
        return action, _failed(path, cfg, runner.describe(e))


def _failed(path: Path, cfg: Config, error: str) -> dict:
    """The summary of a cell that failed with ``error`` (written unless its run wrote one)."""
    summary = read_summary(path)
    if summary.get("status") != "failed":
        summary = _summary_of(cfg, "failed", error)
        RunDirectory(path).write_summary(summary)
    return summary


def _summary_of(cfg: Config, status: str, error: str) -> dict:
    return {"name": cfg.name, "seed": cfg.seed, "strategy": cfg.strategy.name, "malicious": cfg.malicious,
            "status": status, "error": error}


class _Progress:
    """A bar over the cells and, while they run one after another, one over the current cell's
    rounds (from its progress lines), on a terminal; elsewhere only the line each cell ends
    with. Every progress line of the runs goes to ``sweep.log``."""

    def __init__(self, out: Path, total: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(highlight=False)
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), console=self.console, disable=not self.console.is_terminal)
        self.cells = self.bars.add_task("cells", total=total)
        self.rounds = self.bars.add_task("rounds", total=None, visible=False)
        self.log_file = (out / LOG_FILE).open("a")
        self.total, self.ended = total, 0

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

    def running(self, n: int) -> None:
        """``n`` cells run side by side: no bar over one cell's rounds."""
        self.bars.update(self.cells, description=f"{n} running")
        self.bars.update(self.rounds, visible=False)

    def end(self, line: str) -> None:
        """``[k/total] line``: the k-th cell to end."""
        self.ended += 1
        self.bars.advance(self.cells)
        self.console.print(f"[{self.ended}/{self.total}] {line}", markup=False, soft_wrap=True)


def _outcome(action: str, summary: dict) -> str:
    if summary.get("status") == "completed":
        numbers = f"CA {summary['clean_accuracy']:.3f}  ASR {summary['attack_success_rate']:.3f}"
        return f"{'skipped, completed before' if action == 'skipped' else action}: {numbers}"
    return f"{action}: {summary.get('status')}: {summary.get('error')}"


def in_process(cfg: Config) -> bool:
    """Whether ``cfg`` runs on the in-process engine (its clients in its own process, no Ray):
    such cells may run side by side."""
    return cfg.engine() == "inprocess"


def default_jobs(cfgs: list[Config]) -> int:
    """How many cells run at once unless ``--jobs`` says: the cores this process may use over
    the torch threads of a client (``resources.client_threads``; the in-process engine trains
    one client at a time), at most the number of in-process cells; 1 where every cell runs on
    Ray (those run one after another on the shared cluster, whose CPUs their clients fill)."""
    local = [cfg for cfg in cfgs if in_process(cfg)]
    if not local:
        return 1
    return max(1, min(len(local), ray_session.available_cpus() // max(cfg.resources.client_threads for cfg in local)))


def server_threads(cfg: Config, parallel: int) -> int | None:
    """The torch threads of a cell's server while ``parallel`` cells run at once, where its
    config leaves them to the machine (``resources.total_cpus`` unset; alone, a run's server
    takes every core): its share, cores // parallel, at least 1 and at least the CPUs a client
    asks for (``resources.client_cpus``: the config's checks, which a resumed run passes again,
    ask that much of "every core"). None where the config names them: they may change the
    numbers (README), so they stay as the config says even if the cells then ask for more
    threads than there are cores while they evaluate."""
    if cfg.resources.total_cpus is not None:
        return None
    return max(1, ray_session.available_cpus() // parallel, math.ceil(cfg.resources.client_cpus))


def grid_record(out: Path, config: str | Path, overrides, p: Plan) -> dict:
    """What ``sweep.json`` in ``out`` records of the grid: the config, the ``--set`` overrides,
    the axes, seeds and cells. A folder that already records a sweep of the same config and
    overrides with the same axes (e.g. ``--only attack=none,badnet`` and then ``--only
    attack=pgd4`` into one folder) keeps what it recorded and adds this sweep's values, seeds and
    cells (``fedsim.grid.union_axes``), so that ``fedsim report`` labels every run the folder
    holds; otherwise this sweep's grid replaces it."""
    axes, seeds, cells = list(p.axes), {c.seed for c, _ in p.cells}, [c.name for c, _ in p.cells]
    try:
        old = json.loads((out / GRID_FILE).read_text())
    except (OSError, ValueError):
        old = None
    if isinstance(old, dict) and old.get("config") == str(config) and old.get("overrides") == list(overrides):
        try:
            merged = union_axes([Axis.from_json(a) for a in old["axes"]], axes)
        except (KeyError, TypeError, ValueError):
            merged = None
        if merged is not None:
            axes = merged
            seeds |= {s for s in old.get("seeds", []) if isinstance(s, int)}
            cells = [c for c in old.get("cells", []) if isinstance(c, str) and c not in cells] + cells
    return {"config": str(config), "overrides": list(overrides), "axes": [a.to_json() for a in axes],
            "seeds": sorted(seeds), "cells": cells}


def run_plan(p: Plan, out: Path, *, config: str | Path, overrides=(), jobs: int | None = None,
             power_warning: bool = True) -> list[dict]:
    """Run every cell of ``p`` under ``out`` (``sweep.json``: the grid; ``sweep.jsonl``: one
    line per cell), up to ``jobs`` in-process cells at a time (default ``default_jobs``), then
    write the results (``power_warning``: as ``write_results``); returns the status lines of
    this sweep, in the plan's order. RunDirectoryError when another fedsim process works in
    ``out``."""
    with exclusive(out):
        return _run_plan(p, out, config=config, overrides=overrides, jobs=jobs, power_warning=power_warning)


def _run_plan(p: Plan, out: Path, *, config: str | Path, overrides, jobs: int | None,
              power_warning: bool) -> list[dict]:
    (out / GRID_FILE).write_text(json.dumps(grid_record(out, config, overrides, p), indent=2) + "\n")
    jobs = jobs or default_jobs([cfg for _, cfg in p.cells])
    done = [read_summary(out / cell.name).get("status") == "completed" for cell, _ in p.cells]
    side_by_side = [c for c, d in zip(p.cells, done) if in_process(c[1]) and not d] if jobs > 1 else []
    if len(side_by_side) < 2:
        side_by_side = []
    try:
        with _Progress(out, len(p.cells)) as progress, SharedCluster(out, [c for _, c in p.cells], progress.log) as cluster:
            if side_by_side:
                # The cells completed before first (nothing to start), those on Ray last: one
                # after another in this process, on the shared cluster
                rest = [(c, d) for c, d in zip(p.cells, done) if all(c is not s for s in side_by_side)]
                statuses = _one_by_one([c for c, d in rest if d], out, progress, cluster)
                statuses += _side_by_side(side_by_side, out, jobs, progress)
                statuses += _one_by_one([c for c, d in rest if not d], out, progress, cluster)
            else:
                statuses = _one_by_one(p.cells, out, progress, cluster)
    except KeyboardInterrupt:
        # what the cells that completed learned is tabulated even so
        if any(read_summary(out / cell.name).get("status") == "completed" for cell, _ in p.cells):
            write_results([out], out, power_warning=power_warning)
        raise
    write_results([out], out, power_warning=power_warning)
    order = {cell.name: i for i, (cell, _) in enumerate(p.cells)}
    return sorted(statuses, key=lambda status: order[status["cell"]])


def _status(out: Path, cell: Cell) -> dict:
    return {"cell": cell.name, "labels": cell.labels, "seed": cell.seed, "run_dir": str(out / cell.name)}


def _one_by_one(cells: list[tuple[Cell, Config]], out: Path, progress: _Progress, cluster) -> list[dict]:
    """Run ``cells`` one after another in this process."""
    statuses = []
    for cell, cfg in cells:
        progress.start(cell, cfg.rounds)
        t0 = time.perf_counter()
        status = _status(out, cell)
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
        progress.end(f"{cell.name}: {_outcome(action, summary)}")
    return statuses


# ---- cells side by side, each in a worker process ------------------------------------------

def _side_by_side(cells: list[tuple[Cell, Config]], out: Path, jobs: int, progress: _Progress,
                  execute=run_cell) -> list[dict]:
    """Run ``cells`` (in-process ones) ``jobs`` at a time, each with ``execute`` (``run_cell``)
    in a worker process of its own, the process ``fedsim run`` would be, so that its numbers
    are those of the cell alone. Each worker's progress lines go to ``sweep.log`` after its
    cell's name; a cell's line and status are written as it ends. A cell that fails or whose
    worker dies is recorded and the others go on. Ctrl-C: no cell starts any more, each
    running one is interrupted (``GRACE_S``), then KeyboardInterrupt once every worker is gone."""
    parallel = min(jobs, len(cells))
    progress.log(f"fedsim: {len(cells)} cells side by side, {parallel} at a time, each in a worker process")
    waiting, running, statuses = deque(cells), [], []
    ctrl_c, told, deadline = _CtrlC(), 0, math.inf
    try:
        with ray_session.sigint(ctrl_c):
            while waiting or running:
                while waiting and len(running) < parallel and not ctrl_c.count:
                    cell, cfg = waiting.popleft()
                    running.append(_Job.start(out / cell.name, cell, cfg, execute, server_threads(cfg, parallel)))
                if not running:
                    break
                progress.running(len(running))
                connection.wait([job.conn for job in running], timeout=POLL_S)
                for job in list(running):
                    job.read(progress.log)
                    if job.ended():
                        running.remove(job)
                        status, line = _record(out, job, stopped=ctrl_c.count > 0)
                        statuses.append(status)
                        progress.end(line)
                if ctrl_c.count > told or (told and time.monotonic() >= deadline):
                    told += 1
                    deadline = time.monotonic() + (GRACE_S if told == 1 else KILL_S)
                for job in running:
                    job.tell(told)
    finally:
        for job in running:  # only after an error of the sweep itself: nothing may outlive it
            job.worker.kill()
            job.worker.join()
    if ctrl_c.count:
        raise KeyboardInterrupt
    return statuses


class _CtrlC:
    """A SIGINT handler that counts (the sweep passes Ctrl-C on to its workers, step by step)."""

    count = 0

    def __call__(self, signum, frame) -> None:
        self.count += 1


@dataclass
class _Job:
    """A cell in its worker: the end of the pipe its messages come on, what it sent so far."""

    path: Path
    cell: Cell
    cfg: Config
    conn: connection.Connection
    worker: "_Worker"
    t0: float
    started: bool = False  # its worker handles Ctrl-C (before, it ignores it)
    told: int = 0  # how many steps of stopping it was given (1, 2: Ctrl-C; 3: killed)
    end: tuple | None = None
    eof: bool = False

    @classmethod
    def start(cls, path: Path, cell: Cell, cfg: Config, execute, threads: int | None) -> "_Job":
        receive, send = multiprocessing.Pipe(duplex=False)
        try:
            worker = _Worker(send, execute, path, cfg, threads)
        finally:
            send.close()  # the worker's copy is the one left: its end is the pipe's end
        return cls(path, cell, cfg, receive, worker, time.perf_counter())

    def read(self, log) -> None:
        """Take what the worker sent: ("started",), ("log", line), and at the end ("done",
        action, summary), ("interrupted",) or ("error", what)."""
        while not self.eof and self.conn.poll():
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                self.eof = True
                break
            if message[0] == "log":
                log(f"{self.cell.name}: {message[1]}")
            elif message[0] == "started":
                self.started = True
            else:
                self.end = message

    def ended(self) -> bool:
        """The worker is gone (what it sent read to the last)."""
        if not self.eof and self.worker.exitcode is None:
            return False
        self.worker.join()
        self.read(lambda line: None)
        self.conn.close()
        return True

    def tell(self, step: int) -> None:
        """Stopping step ``step``: 1 and 2 a Ctrl-C (once its worker handles one), 3 kill."""
        if step >= 3 and self.told < 3:
            self.worker.kill()
            self.told = 3
        elif self.started and self.told < min(step, 2):
            self.worker.interrupt()
            self.told += 1


def _record(out: Path, job: _Job, stopped: bool) -> tuple[dict, str]:
    """What became of a cell whose worker ended: its status line (appended to sweep.jsonl) and
    its line for the terminal. A worker that ended without saying how (killed, or died) left a
    cell that was interrupted (after a Ctrl-C) or failed; its summary says so."""
    kind, *rest = job.end or (None,)
    wall_s = time.perf_counter() - job.t0
    if kind == "done":
        action, summary = rest
    elif kind == "interrupted" or (kind is None and stopped):
        summary = read_summary(job.path)
        if not summary.get("status") and (job.path / "config.toml").is_file():  # killed
            summary = _summary_of(job.cfg, "interrupted", "stopped by the user")
            RunDirectory(job.path).write_summary(summary)
        summary = {"status": "interrupted", "error": "stopped by the user", **summary}
        action = "ran" if summary["status"] == "completed" else "stopped by the user"
    else:
        action = "ran"
        if not (job.path / "config.toml").is_file():  # a run directory, as a run that failed leaves
            RunDirectory(job.path).write_config(job.cfg.to_toml())
        summary = _failed(job.path, job.cfg, rest[0] if kind == "error" else
                          f"its worker process ended with exit code {job.worker.exitcode}")
    status = {**_status(out, job.cell), "status": summary.get("status"), "action": action,
              "error": summary.get("error"), "wall_s": round(wall_s, 2)}
    _append(out, status)
    outcome = "interrupted" if action == "stopped by the user" else _outcome(action, summary)
    return status, f"{job.cell.name}: {outcome}  ({wall_s:.0f} s)"


def start_worker_server() -> None:
    """Start the fork server the cells' workers are forked from (``_Worker``), if it is not
    running: a fresh Python that imports fedsim.runner (torch, Flower, open_clip: ≈ 7 s of one
    core, 2-vCPU AMD EPYC VM, 2026-12-08) and then forks a worker per cell. The sweep's
    commands call it before ``plan``, whose registry checks import fedsim.runner in this
    process too: the two imports then run side by side on two cores instead of one after the
    other before the first cell (a 4-cell sweep of 3-round cells: 16 s from the command's start
    to its first cell, 8 s of it the fork server's import). Where no cell ends up in a worker
    (every cell on Ray or completed, ``--jobs 1``) that import was for nothing; the server ends
    with this process either way (Python's multiprocessing ends it when its parent exits)."""
    from multiprocessing import forkserver

    # matplotlib's pyplot too (≈ 0.8 s): every run draws its plot as it ends
    multiprocessing.get_context("forkserver").set_forkserver_preload(["fedsim.runner", "matplotlib.pyplot"])
    with ray_session.sigint(signal.SIG_IGN):  # inherited by the fork server if this starts it (a moment)
        forkserver.ensure_running()


def stop_worker_server() -> None:
    """End the fork server ``start_worker_server`` started, at once, if it runs: it holds
    nothing but imported modules, and left to end with this process it spends ≈ 1.6 s freeing
    them after the command has ended, a command whose output a caller reads included (the
    server holds the same stdout). A later sweep in this process starts a new one. Uses
    multiprocessing's own stop (``ForkServer._stop``, private); where a Python lacks it the
    server ends with this process as before."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    pid = getattr(server, "_forkserver_pid", None)
    if pid is None or not hasattr(server, "_stop"):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    server._stop()  # closes its "alive" pipe, reaps it, removes its socket


class _Worker:
    """A cell's worker process, forked from Python's fork server, which imports fedsim.runner
    (torch, Flower) once, before any of torch's threads start: a cell starts without importing
    anything, and nothing of the sweep process (its threads, its Ray connection) is in it.
    The fork server ignores Ctrl-C from its start, and so do the workers it forks until they
    leave the terminal's process group (``_worker_main``): the terminal's Ctrl-C reaches the
    sweep alone, which passes it on (``interrupt``)."""

    def __init__(self, conn: connection.Connection, execute, path: Path, cfg: Config, threads: int | None):
        start_worker_server()
        self.process = multiprocessing.get_context("forkserver").Process(
            target=_worker_main, args=(conn, execute, path, cfg, threads), name=f"fedsim-sweep-{path.name}")
        self.process.start()

    @property
    def exitcode(self) -> int | None:
        return self.process.exitcode

    def interrupt(self) -> None:
        if self.process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGINT)

    def kill(self) -> None:
        self.process.kill()

    def join(self) -> None:
        self.process.join()


def _worker_main(conn: connection.Connection, execute, path: Path, cfg: Config, threads: int | None) -> None:
    """A worker's life: out of the terminal's process group, Ctrl-C handled from now on (the
    sweep's, passed on), interrupted if the sweep dies, its server's threads ``threads`` where
    not None, then its cell."""
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _interrupt_when_alone(conn)
    if threads is not None:
        # what a run takes for "every core" in this process: the cell's share of them
        ray_session.available_cpus = lambda: threads
    _run_and_report(conn, execute, path, cfg)


def _interrupt_when_alone(conn: connection.Connection) -> None:
    """Interrupt this process (as Ctrl-C does) once nothing reads ``conn`` (the write end of a
    pipe to the sweep) any more: a sweep killed with ``kill -9`` leaves no cell running, each
    ends as interrupted (resumable). A pipe's write end polls POLLERR once it has no reader."""
    import select

    fd = os.dup(conn.fileno())  # open as long as this process: ``conn`` is closed at the end

    def watch():
        poll = select.poll()
        poll.register(fd, select.POLLERR)
        while not poll.poll():
            pass
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, name="fedsim-sweep-watch", daemon=True).start()


def _run_and_report(conn: connection.Connection, execute, path: Path, cfg: Config) -> None:
    """Run one cell with ``execute`` (``run_cell``) and send over ``conn`` that it started, its
    progress lines, and how it ended (``_Job.read``)."""
    from fedsim.runner import describe

    def send(*message) -> None:
        with contextlib.suppress(OSError):  # the sweep is gone: nobody listens
            conn.send(message)

    send("started")
    try:
        end = ("done", *execute(path, cfg, lambda line: send("log", line)))
    except KeyboardInterrupt:
        end = ("interrupted",)
    except Exception as e:  # run_cell's own (a run's failure is in its summary already)
        end = ("error", describe(e))
    send(*end)
    conn.close()


def _append(out: Path, status: dict) -> None:
    with (out / STATUS_FILE).open("a") as f:
        f.write(json.dumps({**status, "time": datetime.now().isoformat(timespec="seconds")}) + "\n")


def default_out(config: str | Path) -> Path:
    """``runs/sweep-<config file name>``: the same command finds its own cells again."""
    return Path("runs") / f"sweep-{Path(config).stem}"
