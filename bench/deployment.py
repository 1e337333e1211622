"""Seconds per round on Flower's Deployment Engine (a SuperLink and one SuperNode per client on
this machine, ``fedsim deploy``) against Flower's simulation engine (``fedsim run``) for the
same config.

    python bench/deployment.py [--repeat 2] [--set key=value ...] [--json]

Default config: the quickstart with 3 clients, 3 rounds, 600 training and 300 test samples
(as docs/deployment.md). The runs are interleaved (``fedsim run`` with its default engine, the
same on Flower's simulation engine on Ray, deployment, ...);
per engine the figures are the medians over the repeats of round 1, of the median later
round and of the whole command. Both engines must give the same CA and ASR in every round;
the script checks it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "deployment.json"
DEFAULTS = ["rounds=3", "data.train_size=600", "data.test_size=300", "clients.num=3", "clients.per_round=3"]


def one(command: str, sets: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="fedsim-deploy-bench-") as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "fedsim.cli", command, "configs/quickstart.toml", "--out", str(out)]
        for s in sets:
            cmd += ["--set", s]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"fedsim {command} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
        rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    return {"wall_s": round(wall, 1), "rounds_s": [r["wall_s"] for r in rounds],
            "metrics": [(r["clean_accuracy"], r["attack_success_rate"]) for r in rounds]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", action="store_true", help=f"also write {RESULTS.relative_to(ROOT)}")
    args = ap.parse_args(argv)
    sets = [*DEFAULTS, *args.set]
    # "run": fedsim run as it runs by default (the in-process engine where "auto" picks it);
    # "ray": the same on Flower's simulation engine, the "simulation" issue #21 compared with
    variants = {"run": ("run", []), "ray": ("run", ['resources.engine="ray"']), "deploy": ("deploy", [])}
    runs = {name: [] for name in variants}
    for i in range(args.repeat):
        for command, (cli, extra) in variants.items():
            r = one(cli, [*sets, *extra])
            runs[command].append(r)
            print(f"repeat {i + 1}/{args.repeat} {command:6s} {r['wall_s']:6.1f} s  rounds "
                  + " ".join(f"{s:.1f}" for s in r["rounds_s"]), flush=True)
    same = all(r["metrics"] == runs["run"][0]["metrics"] for rs in runs.values() for r in rs)

    def med(command, f):
        return round(statistics.median(f(r) for r in runs[command]), 2)

    out = {"config": sets, "repeat": args.repeat, "date": time.strftime("%Y-%m-%d"),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "load_average": os.getloadavg(),
           "same_metrics": same, "runs": runs}
    for command in runs:
        out[f"{command}_round1_s"] = med(command, lambda r: r["rounds_s"][0])
        out[f"{command}_steady_s"] = med(command, lambda r: statistics.median(r["rounds_s"][1:]))
        out[f"{command}_wall_s"] = med(command, lambda r: r["wall_s"])
    out["steady_ratio"] = round(out["deploy_steady_s"] / out["ray_steady_s"], 2)
    out["steady_ratio_default"] = round(out["deploy_steady_s"] / out["run_steady_s"], 2)
    print(f"steady round: deployment {out['deploy_steady_s']} s / simulation on Ray {out['ray_steady_s']} s = "
          f"{out['steady_ratio']} (goal ≤ 4, issue #21; / the default engine's {out['run_steady_s']} s: "
          f"{out['steady_ratio_default']}); same CA/ASR every round: {same}")
    if args.json:
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
