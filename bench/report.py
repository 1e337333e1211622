"""bench/results.md from the benchmarks' JSON files (bench/results/*.json) and the findings
written by hand beside them (bench/findings.md): every figure with its goal, met or not.

    python bench/report.py        (make bench runs every benchmark with --json, then this)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS, OUT, FINDINGS = HERE / "results", HERE / "results.md", HERE / "findings.md"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _goal(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _how(script: str, r: dict) -> str:
    """How a comparison of interleaved repeats was run: command, settings, date, machine, load."""
    return (f"`python bench/{script} --repeat {r['repeat']}` — `configs/quickstart.toml` with (later ones win) "
            f"{', '.join(f'`{c}`' for c in r['config'])}; {r['date']}, {r['machine']}, load average at the "
            f"end {r['load_average'][0]:.1f}. Medians of {r['repeat']} interleaved repeats")


def overhead(r: dict, heading: bool = True) -> list[str]:
    return [
        *(["## 1. Overhead: a federated run against a plain PyTorch loop", ""] if heading else []),
        _how("overhead.py", r) + ".",
        "",
        f"| figure | plain loop | federated (`fedsim run`, {r.get('engine', 'ray')} engine) | ratio | goal |",
        "|---|---|---|---|---|",
        f"| whole run | {r['plain_s']:.1f} s | {r['federated_s']:.1f} s | {r['ratio']:.2f} | ≤ 1.2: {_goal(r['ratio'] <= 1.2)} |",
        f"| round 1 | {r['plain_round1_s']:.1f} s | {r['federated_round1_s']:.1f} s | | |",
        f"| steady round (median of rounds 2…) | {r['plain_steady_s']:.1f} s | {r['federated_steady_s']:.1f} s | | |",
        f"| round 1 / steady round (federated) | | | {r['round1_over_steady']:.2f} | ≤ 1.3: {_goal(r['round1_over_steady'] <= 1.3)} |",
        *([f"| whole run on Ray (`resources.engine = \"ray\"`) | {r['plain_s']:.1f} s | {r['ray_s']:.1f} s | "
           f"{r['ray_ratio']:.2f} | |",
           f"| round 1 / steady round on Ray | | {r['ray_round1_s']:.1f} s / {r['ray_steady_s']:.1f} s | "
           f"{r['ray_round1_over_steady']:.2f} | |"] if "ray_s" in r else []),
        "",
    ]


def aggregators(r: dict) -> list[str]:
    m = r["meta"]
    lines = [
        "## 2. Aggregators against Flower's built-in strategies",
        "",
        f"`python bench/aggregators.py --n {m['n']} --d {m['d']} --repeat {m['repeat']}` — f = {m['f']}, "
        f"{m['arrays']} arrays per Flower reply, torch {m['torch']}, flwr {m['flwr']}, {m['cpus']} CPUs, load "
        f"{m['load_before']:.1f} before / {m['load_after']:.1f} after. Median of {m['repeat']} runs each. "
        + (f"Floor: one pass over the stacked updates (`x.sum(0)`) {m['floor_s']:.3f} s." if "floor_s" in m else ""),
        "",
        "| rule | ours | × floor | Flower | Flower's | Flower / ours | max abs diff | accepted | goal (≥ 5×) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        ratio = row["ratio"]
        goal = _goal(ratio >= 5) if ratio is not None else ""
        floor = f"{row['vs_floor']:.1f}" if row.get("vs_floor") is not None else ""
        lines.append(
            f"| {row['rule']} | {row['ours_s']:.3f} s | {floor} | {row['flower'] or ''} | "
            + (f"{row['flower_s']:.3f} s | {ratio:.2f} | {row['max_abs_diff']:.1e}" if ratio is not None else " | | ")
            + f" | {row['accepted']} | {goal} |")
    return lines + [""]


def scale(r: dict) -> list[str]:
    rows = r["rows"]
    lines = [
        "## 3. Scale: clients that are not sampled",
        "",
        f"`python bench/scale.py` — {rows[0]['per_round']} clients sampled a round, "
        f"{rows[0]['samples_per_client']} training samples a client, {rows[0]['rounds']} rounds, attack off; "
        f"{r['date']}, {r['machine']}. Memory: the peak over the run of the memory summed over every process "
        "of the run (PSS; RSS, which counts shared pages once per process, in brackets).",
        "",
        "| clients | engine | round 1 | steady round | steady vs the smallest | round 1 / steady | whole run | "
        "peak memory | goal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        goals = []
        if row["clients"] == 10000:
            goals.append(f"steady ≤ 1.1×: {_goal(row['steady_vs_first_size'] <= 1.1)}")
            goals.append(f"round 1 ≤ 2×: {_goal(row['round1_vs_steady'] <= 2)}")
        lines.append(
            f"| {row['clients']:,} | {row.get('engine') or 'ray'} | {row['round1_s']:.1f} s | "
            f"{row['steady_round_s']:.1f} s | {row['steady_vs_first_size']:.2f} | {row['round1_vs_steady']:.2f} | "
            f"{row['run_s']:.0f} s | {row['peak_pss_gib']:.2f} GiB ({row['peak_rss_gib']:.2f}) | {'; '.join(goals)} |")
    if r.get("memory"):
        lines += ["", "A 10-client run (the quickstart at 3 rounds, 2,000 pairs, every client sampled), same "
                  "measurement:", "",
                  "| engine | processes | whole run | peak memory | goal |", "|---|---|---|---|---|"]
        for row in r["memory"]:
            lines.append(f"| {row['engine']} | {row['processes']} | {row['run_s']:.0f} s | {row['peak_pss_gib']:.2f} GiB "
                         f"({row['peak_rss_gib']:.2f}) | ≤ 2.5 GiB: {_goal(row['peak_pss_gib'] <= 2.5)} |")
    return lines + [""]


def deployment(r: dict) -> list[str]:
    return [
        "## 4. Deployment Engine against simulation",
        "",
        _how("deployment.py", r) + f"; same CA and ASR in every round on both engines: {r['same_metrics']}.",
        "",
        "| engine | round 1 | steady round | whole command |",
        "|---|---|---|---|",
        *([f"| `fedsim run`, default engine | {r['run_round1_s']:.1f} s | {r['run_steady_s']:.1f} s | "
           f"{r['run_wall_s']:.0f} s |",
           f"| Flower's simulation on Ray (`resources.engine = \"ray\"`) | {r['ray_round1_s']:.1f} s | "
           f"{r['ray_steady_s']:.1f} s | {r['ray_wall_s']:.0f} s |"] if "ray_steady_s" in r else
          [f"| simulation (`fedsim run`) | {r['run_round1_s']:.1f} s | {r['run_steady_s']:.1f} s | {r['run_wall_s']:.0f} s |"]),
        f"| Deployment Engine (`fedsim deploy`, local SuperNodes) | {r['deploy_round1_s']:.1f} s | "
        f"{r['deploy_steady_s']:.1f} s | {r['deploy_wall_s']:.0f} s |",
        f"| deployment / simulation{' on Ray' if 'ray_steady_s' in r else ''}, steady round | | "
        f"{r['steady_ratio']:.2f} (goal ≤ 4, issue #21: {_goal(r['steady_ratio'] <= 4)}) | |",
        *([f"| deployment / the default engine, steady round | | {r['steady_ratio_default']:.2f} | |"]
          if "steady_ratio_default" in r else []),
        "",
    ]


def sweep(r: dict, heading: bool = True) -> list[str]:
    options = "".join(f" --set {s}" for s in r.get("extra", [])) + (f" --tag {r['tag']}" if r.get("tag") else "")
    return [
        *(["## 5. Sweeps: cells per hour", ""] if heading else []),
        f"`python bench/sweep.py --cells {r['cells']}{options} --json` — {r['cells']} cells (seeds) of "
        f"`configs/quickstart.toml` with {', '.join(f'`{c}`' for c in r['config'])}; {r['date']}, "
        f"{r['machine']}, load average at the end {r['load_average'][0]:.1f}. One measurement each, one "
        f"after another; same numbers cell by cell in both sweeps: {r['same_numbers']}.",
        "",
        "| sweep | wall | cells per hour | goal |",
        "|---|---|---|---|",
        f"| every cell on Ray, one at a time (as when issue #21 was filed) | {r['before_s']:.0f} s | "
        f"{r['before_cells_per_hour']:.0f} | |",
        f"| `fedsim sweep` by default ({r['engine']} cells side by side) | {r['now_s']:.0f} s | "
        f"{r['now_cells_per_hour']:.0f} | ≥ 3× the above: {r['cells_per_hour_ratio']:.2f}×, "
        f"{_goal(r['cells_per_hour_ratio'] >= 3)} |",
        f"| sum of the cells' plain loops | {r['plain_sum_s']:.0f} s | | sweep ≤ 0.75× this: "
        f"{r['now_over_plain_sum']:.2f}, {_goal(r['now_over_plain_sum'] <= 0.75)} |",
        *([f"| the same plain loops, one thread each, {r['jobs']} at a time (the floor for cells side by "
           f"side) | {r['floor_s']:.0f} s | | {r['floor_over_plain_sum']:.2f}× the sum above; the sweep is "
           f"{r['now_over_floor']:.2f}× this | |"] if "floor_s" in r else []),
        "",
    ]


def main() -> int:
    parts = ["# Benchmarks", "",
             "Written by `bench/report.py` from `bench/results/*.json` (`make bench` runs every benchmark, "
             "then this); the findings at the end are written by hand. A figure missing below was not "
             "measured.", ""]
    for name, fn in (("overhead", overhead), ("aggregators", aggregators), ("scale", scale),
                     ("deployment", deployment), ("sweep", sweep)):
        data = _load(name)
        parts += fn(data) if data else [f"## {name}", "", f"Not measured (no `bench/results/{name}.json`).", ""]
        if name in ("overhead", "sweep"):  # the same comparison at other sizes (--tag)
            for path in sorted(RESULTS.glob(f"{name}-*.json")):
                parts += fn(json.loads(path.read_text()), heading=False)
    if FINDINGS.is_file():
        parts += [FINDINGS.read_text().rstrip(), ""]
    OUT.write_text("\n".join(parts))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
