"""What a sweep costs: cells per hour of ``fedsim sweep`` as it runs by default (in-process
cells, ``--jobs`` of them side by side) against the sweep as it ran when issue #21 was filed
(every cell a Flower simulation on Ray, one cell after another), and the sweep's wall time
against the sum of its cells' plain PyTorch loops (``bench/overhead.py``'s ``plain_loop``:
the same clients' steps, FedAvg and evaluation in one process with every thread), and against
the floor for cells side by side: the same plain loops with one thread each, as many at once
as the sweep runs cells, in worker processes whose imports are done before the clock starts
(what a sweep of one-thread cells would take with no cost of its own).

    python bench/sweep.py [--cells 4] [--set key=value ...] [--json] [--tag TAG]

The cells are seeds of one config — by default the cell size of the headline grid when the
issue was filed (``configs/sweeps/defense-vs-attack.toml`` of 2026-11-25: the quickstart at 3
rounds, 600 training pairs, 300 test images), FedAvg without an attack, so that the plain loop
does exactly a cell's work. Both sweeps must give the same numbers cell by cell
(rounds.jsonl without its wall-clock seconds); the script says whether they did. The three
measurements run one after another on the same machine; nothing else should run beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from overhead import plain_loop  # noqa: E402

from fedsim.pretrain import warm_start  # noqa: E402
from fedsim.runner import load  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "sweep.json"
DEFAULTS = ["rounds=3", "data.train_size=600", "data.test_size=300", "attack.enabled=false"]


def _ready(_: int) -> None:
    """A pool task that holds its worker a moment, so that every worker has started (and
    imported what the fork server preloads) before the timed tasks."""
    time.sleep(1.0)


def _plain_one_thread(cfg_json: str) -> float:
    from fedsim.config import Config

    cfg = Config.model_validate_json(cfg_json)
    cfg = cfg.model_copy(update={"resources": cfg.resources.model_copy(update={"total_cpus": 1})})
    return plain_loop(cfg)["wall_s"]


def _floor(cfgs: list, jobs: int) -> float:
    """Wall seconds of the cells' plain loops at one torch thread each, ``jobs`` at a time."""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["fedsim.runner", "overhead"])
    with context.Pool(jobs) as pool:
        pool.map(_ready, range(jobs), chunksize=1)
        t0 = time.perf_counter()
        pool.map(_plain_one_thread, [cfg.model_dump_json() for cfg in cfgs], chunksize=1)
        return time.perf_counter() - t0


def _sweep(out: Path, cells: int, sets: list[str], extra: list[str]) -> dict:
    """``fedsim sweep configs/quickstart.toml --seeds CELLS`` with ``sets``: wall seconds and
    each cell's rounds.jsonl records without wall-clock fields."""
    cmd = [sys.executable, "-m", "fedsim.cli", "sweep",
           str(ROOT / "configs" / "quickstart.toml"), "--out", str(out), "--seeds", str(cells),
           *(a for s in sets for a in ("--set", s)), *extra]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"bench/sweep.py: {' '.join(cmd[2:])} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    rounds = {}
    for path in sorted(out.rglob("rounds.jsonl")):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        rounds[path.parent.name] = [{k: v for k, v in r.items() if k != "wall_s"} for r in records]
    if len(rounds) != cells:
        sys.exit(f"bench/sweep.py: expected {cells} cells under {out}, found {len(rounds)}")
    return {"wall_s": wall, "rounds": rounds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", type=int, default=4, help="seeds of the config (the sweep's cells)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", action="store_true", help="also write bench/results/sweep.json")
    ap.add_argument("--tag", default=None, help="with --json: write bench/results/sweep-TAG.json instead "
                    "(another cell size beside the default one)")
    args = ap.parse_args()
    sets = [*DEFAULTS, *args.set]
    base = load(ROOT / "configs" / "quickstart.toml", sets)
    if base.clients.per_round != base.clients.num or base.attack.enabled:
        sys.exit("bench/sweep.py: the plain loop trains every client and no attack; keep "
                 "clients.per_round = clients.num and attack.enabled = false")
    cfgs = [load(ROOT / "configs" / "quickstart.toml", [*sets, f"seed={base.seed + k}"]) for k in range(args.cells)]
    for cfg in cfgs:  # each seed's warm start is trained once and cached: not a cost of any side
        if cfg.model.init == "warm":
            warm_start(cfg, log=lambda m: None)
    plain = []
    for cfg in cfgs:
        plain.append(plain_loop(cfg)["wall_s"])
        print(f"plain loop, seed {cfg.seed}: {plain[-1]:.1f} s", flush=True)
    from fedsim.sweep_run import default_jobs

    jobs = default_jobs(cfgs)
    floor = _floor(cfgs, jobs)
    print(f"plain loops, one thread each, {jobs} at a time: {floor:.1f} s", flush=True)
    with tempfile.TemporaryDirectory() as d:
        before = _sweep(Path(d) / "ray", args.cells, [*sets, 'resources.engine="ray"'], ["--jobs", "1"])
        print(f"sweep, every cell on Ray, one at a time: {before['wall_s']:.1f} s", flush=True)
        now = _sweep(Path(d) / "default", args.cells, sets, [])
        print(f"sweep as it runs by default ({base.engine()} cells, side by side): {now['wall_s']:.1f} s",
              flush=True)
    same = before["rounds"] == now["rounds"]
    hour = 3600.0
    out = {
        "config": sets, "extra": args.set, "tag": args.tag, "cells": args.cells, "engine": base.engine(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or platform.platform()}",
        "load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%d"),
        "plain_s": plain, "plain_sum_s": sum(plain),
        "before_s": before["wall_s"], "now_s": now["wall_s"],
        "before_cells_per_hour": args.cells * hour / before["wall_s"],
        "now_cells_per_hour": args.cells * hour / now["wall_s"],
        "same_numbers": same, "jobs": jobs, "floor_s": floor,
    }
    out["cells_per_hour_ratio"] = out["now_cells_per_hour"] / out["before_cells_per_hour"]
    out["now_over_plain_sum"] = now["wall_s"] / out["plain_sum_s"]
    out["now_over_floor"] = now["wall_s"] / floor
    out["floor_over_plain_sum"] = floor / out["plain_sum_s"]
    print(f"cells per hour: {out['now_cells_per_hour']:.0f} against {out['before_cells_per_hour']:.0f} "
          f"({out['cells_per_hour_ratio']:.2f}×, goal ≥ 3); wall / sum of plain loops "
          f"{out['now_over_plain_sum']:.2f} (goal ≤ 0.75); same numbers cell by cell: {same}")
    if args.json:
        RESULTS.parent.mkdir(exist_ok=True)
        path = RESULTS.with_name(f"sweep-{args.tag}.json") if args.tag else RESULTS
        path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
