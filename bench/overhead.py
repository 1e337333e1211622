"""What the federated runtime costs: a fedsim run on each engine (the in-process one, the
default, and Flower's simulation on Ray) against a plain PyTorch loop in one process doing the
same clients' local steps on the same data and model, and round 1 against a steady round.

    python bench/overhead.py [--repeat 3] [--set key=value ...] [--json]

Both sides build the server the same way (warm start, evaluator), then per round train every
sampled client from the global model with the client's own seed and learning rate
(``fedsim.app.build``: the very ``build_client`` and ``LocalSetup`` the ClientApp uses), average
the updates by num-examples (FedAvg) and evaluate the new global model. The plain loop trains
the clients one after another with all of this process's threads; the simulation trains
``total_cpus / client_cpus`` clients at once with ``client_threads`` each on Ray, one after
another on the in-process engine. The repeats are interleaved (plain, in-process, Ray, plain,
...) and the figures are medians; "federated" is the default engine (in-process). Default
config: the quickstart at 3 rounds and 2,000 training samples; plain FedAvg, no attack (a
malicious client's extra work would be the same on both sides).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clients.honest import LocalSetup  # noqa: E402
from fedsim.app.build import build_client, build_server, client_seed, round_lr  # noqa: E402
from fedsim.records import to_array_record  # noqa: E402
from fedsim.ray_session import available_cpus  # noqa: E402
from fedsim.runner import load, run  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "overhead.json"
DEFAULTS = ["rounds=3", "data.train_size=2000", "data.test_size=500", "attack.enabled=false"]


def plain_loop(cfg) -> dict:
    """The clients' local steps, FedAvg and the evaluation, in this process: seconds in all,
    per round, and the final clean accuracy."""
    t0 = time.perf_counter()
    torch.set_num_threads(cfg.resources.total_cpus or available_cpus())
    server = build_server(cfg, log=lambda m: None)
    cfg = server.cfg
    config_json = cfg.model_dump_json()
    state = {k: v.clone() for k, v in server.initial.items()}
    server.evaluate(to_array_record(state))  # the run's round 0
    setup_s = time.perf_counter() - t0
    rounds, metrics = [], {}
    for r in range(1, cfg.rounds + 1):
        t = time.perf_counter()
        total, summed = 0, {k: torch.zeros_like(v, dtype=torch.float64) for k, v in state.items()}
        for pid in range(cfg.clients.num):  # the config samples every client (per_round = num)
            setup = LocalSetup(epochs=cfg.clients.local_epochs, lr=round_lr(cfg, r),
                               batch_size=cfg.clients.batch_size, weight_decay=cfg.clients.weight_decay,
                               seed=client_seed(cfg, r, pid))
            new, m = build_client(cfg, config_json, pid).fit(state, setup, r)
            total += m["num-examples"]
            for k in summed:
                summed[k] += m["num-examples"] * new[k].double()
        state = {k: (summed[k] / total).to(state[k].dtype) for k in state}
        metrics = server.evaluate(to_array_record(state))
        rounds.append(time.perf_counter() - t)
    return {"wall_s": time.perf_counter() - t0, "setup_s": setup_s, "rounds_s": rounds,
            "clean_accuracy": metrics["clean_accuracy"]}


def federated(cfg) -> dict:
    """``fedsim run`` of the same config: seconds in all and per round (rounds.jsonl)."""
    return _fedsim_run(cfg)


def on_ray(cfg) -> dict:
    """The same on Flower's simulation engine on Ray."""
    return _fedsim_run(cfg.model_copy(update={"resources": cfg.resources.model_copy(update={"engine": "ray"})}))


def _fedsim_run(cfg) -> dict:
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        summary = run(cfg, Path(d) / "run", log=lambda m: None)
        wall = time.perf_counter() - t0
        rounds = [json.loads(line) for line in (Path(d) / "run" / "rounds.jsonl").read_text().splitlines()]
    return {"wall_s": wall, "rounds_s": [r["wall_s"] for r in rounds if r["round"] > 0],
            "clean_accuracy": summary["clean_accuracy"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", action="store_true", help="also write bench/results/overhead.json")
    ap.add_argument("--tag", default=None, help="with --json: write bench/results/overhead-TAG.json instead")
    args = ap.parse_args()
    cfg = load(Path(__file__).resolve().parents[1] / "configs" / "quickstart.toml", [*DEFAULTS, *args.set])
    if cfg.clients.per_round != cfg.clients.num:
        sys.exit("bench/overhead.py: the plain loop trains every client; keep clients.per_round = clients.num")
    runs = {"plain": [], "federated": [], "ray": []}
    for i in range(args.repeat):
        for name, fn in (("plain", plain_loop), ("federated", federated), ("ray", on_ray)):
            runs[name].append(fn(cfg))
            r = runs[name][-1]
            print(f"repeat {i + 1}/{args.repeat} {name:9s} {r['wall_s']:6.1f} s  rounds "
                  + " ".join(f"{s:.1f}" for s in r["rounds_s"]) + f"  CA {r['clean_accuracy']:.3f}", flush=True)

    def med(name, f):
        return statistics.median(f(r) for r in runs[name])

    steady = lambda r: statistics.median(r["rounds_s"][1:])  # noqa: E731
    out = {
        "config": [*DEFAULTS, *args.set], "repeat": args.repeat,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or platform.platform()}",
        "load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%d"),
        "plain_s": med("plain", lambda r: r["wall_s"]), "federated_s": med("federated", lambda r: r["wall_s"]),
        "plain_round1_s": med("plain", lambda r: r["rounds_s"][0]), "plain_steady_s": med("plain", steady),
        "federated_round1_s": med("federated", lambda r: r["rounds_s"][0]),
        "federated_steady_s": med("federated", steady),
        "engine": cfg.engine(),
        "ray_s": med("ray", lambda r: r["wall_s"]), "ray_round1_s": med("ray", lambda r: r["rounds_s"][0]),
        "ray_steady_s": med("ray", steady),
        "runs": runs,
    }
    out["ray_ratio"] = out["ray_s"] / out["plain_s"]
    out["ray_round1_over_steady"] = out["ray_round1_s"] / out["ray_steady_s"]
    out["ratio"] = out["federated_s"] / out["plain_s"]
    out["round1_over_steady"] = out["federated_round1_s"] / out["federated_steady_s"]
    print(f"federated ({out['engine']}) / plain: {out['federated_s']:.1f} s / {out['plain_s']:.1f} s = "
          f"{out['ratio']:.2f} (goal ≤ 1.2); on Ray {out['ray_s']:.1f} s = {out['ray_ratio']:.2f}")
    print(f"round 1 / steady round (federated): {out['federated_round1_s']:.1f} s / "
          f"{out['federated_steady_s']:.1f} s = {out['round1_over_steady']:.2f} (goal ≤ 1.3)")
    if args.json:
        path = RESULTS.with_name(f"overhead-{args.tag}.json") if args.tag else RESULTS
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
