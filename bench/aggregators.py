"""Time every aggregation rule on one (n, d) batch of updates and, where Flower has a built-in
(FedMedian, FedTrimmedAvg, Krum, MultiKrum, Bulyan), Flower's strategy on the same replies,
side by side in the same process.

    python bench/aggregators.py [--n 50] [--d 3500000] [--repeat 3] [--json]

Flower aggregates full weights, so its replies carry global + Δ_i (split into ``--arrays``
arrays, like a model's layers) with equal num-examples; "max |diff|" compares Flower's result
minus the global weights with our aggregate. Reply construction is not timed (Flower's
strategies pop the arrays they aggregate, so each repeat gets fresh replies). Times are the
median over ``--repeat`` runs (``--flower-repeat`` for Flower, default the same).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flwr  # noqa: E402
from flwr.app import Array, ArrayRecord, Message, MessageType, MetricRecord, RecordDict  # noqa: E402
from flwr.serverapp.strategy import Bulyan, FedMedian, FedTrimmedAvg, Krum, MultiKrum  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from strategies import RULES  # noqa: E402

# EmInspector embeds a probe batch with every client's model: it needs a model, not a matrix.
BENCHED = [name for name in RULES if name != "eminspector"]

RESULTS = Path(__file__).resolve().parent / "results" / "aggregators.json"


def make_inputs(n: int, d: int, seed: int) -> dict:
    """Updates with a shared honest direction, f shifted rows, and the rules' stateful inputs."""
    g = torch.Generator().manual_seed(seed)
    f = (n - 3) // 4
    direction = torch.randn(d, generator=g) * 1e-3
    updates = direction + torch.randn(n, d, generator=g) * 1e-3
    updates[:f] += 5 * torch.randn(d, generator=g) * 1e-3
    history = 3 * updates + torch.randn(n, d, generator=g) * 1e-3
    return {"updates": updates, "history": history, "f": f, "seed": seed}


def rule_params(name: str, inputs: dict) -> dict:
    x, f = inputs["updates"], inputs["f"]
    n = x.shape[0]
    tau = float(torch.linalg.vector_norm(x, dim=1).median())
    gen = torch.Generator().manual_seed(inputs["seed"])
    return {
        "fedavg": {},
        "median": {},
        "trimmed_mean": {"beta": 0.2},
        "krum": {"f": f},
        "multi_krum": {"f": f, "m": n - f},
        "bulyan": {"f": f},
        "geometric_median": {},
        "norm_clipping": {"tau": tau, "sigma": 1e-5, "generator": gen},
        "centered_clipping": {"tau": tau, "L": 3, "previous": x[f:].mean(0)},
        "flame": {"lam": 0.001, "generator": gen},
        "foolsgold": {"history": inputs["history"]},
        "fltrust": {"root_update": x[f:].mean(0)},
        "rlr": {"theta": f + 1},
        "dnc": {"f": f, "generator": gen},
    }[name]


def flower_strategies(inputs: dict) -> dict:
    n, f = inputs["updates"].shape[0], inputs["f"]
    return {
        "median": FedMedian(),
        "trimmed_mean": FedTrimmedAvg(beta=0.2),
        "krum": Krum(num_malicious_nodes=f),
        "multi_krum": MultiKrum(num_malicious_nodes=f, num_nodes_to_select=n - f),
        "bulyan": Bulyan(num_malicious_nodes=f),
    }


def make_replies(global_flat: np.ndarray, updates: torch.Tensor, arrays: int) -> list[Message]:
    bounds = np.linspace(0, global_flat.size, arrays + 1).astype(int)
    replies = []
    for i, u in enumerate(updates.numpy()):
        w = global_flat + u
        record = ArrayRecord({f"layer{j}": Array(w[a:b]) for j, (a, b) in enumerate(zip(bounds, bounds[1:]))})
        sent = Message(RecordDict(), dst_node_id=i + 1, message_type=MessageType.TRAIN)
        content = RecordDict({"arrays": record, "metrics": MetricRecord({"num-examples": 100})})
        replies.append(Message(content, reply_to=sent))
    return replies


def timed(fn, repeat: int, setup=lambda: ()) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        args = setup()
        # Collect the previous run's garbage now, so neither side pays for the other's.
        gc.collect()
        t0 = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50, help="clients (rows)")
    parser.add_argument("--d", type=int, default=3_500_000, help="parameters (columns)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per rule; the median is reported")
    parser.add_argument("--flower-repeat", type=int, default=None,
                        help="runs per Flower strategy (default: --repeat)")
    parser.add_argument("--arrays", type=int, default=16, help="arrays per Flower reply (model layers)")
    parser.add_argument("--rules", default=",".join(BENCHED), help="comma-separated rule names")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="also write bench/results/aggregators.json")
    args = parser.parse_args(argv)
    names = [r for r in args.rules.split(",") if r]
    unknown = sorted(set(names) - set(BENCHED))
    if unknown:
        parser.error(f"--rules: unknown {unknown}; allowed: {', '.join(BENCHED)}")
    if args.n < 7 or args.d < 1 or args.repeat < 1 or args.arrays < 1 or args.arrays > args.d:
        parser.error("need --n >= 7 (Bulyan with f = (n - 3) // 4 >= 1), --d >= 1, --repeat >= 1, "
                     "1 <= --arrays <= d")
    flower_repeat = args.flower_repeat or args.repeat

    # Flower builds Messages only inside a task; give this process one, as a ServerApp has.
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    logging.getLogger("flwr").setLevel(logging.WARNING)  # one INFO line per aggregation
    inputs = make_inputs(args.n, args.d, args.seed)
    x = inputs["updates"]
    global_flat = (np.random.default_rng(args.seed).standard_normal(args.d) * 0.02).astype(np.float32)
    flower = flower_strategies(inputs)
    load_before = os.getloadavg()[0]
    print(f"n={args.n} d={args.d} f={inputs['f']} repeat={args.repeat} flower_repeat={flower_repeat} "
          f"torch_threads={torch.get_num_threads()} cpus={os.cpu_count()} load={load_before:.1f} "
          f"torch={torch.__version__} flwr={flwr.__version__}", flush=True)

    # The floor: one pass over the stacked updates (a column sum reads every entry once).
    floor_s, _ = timed(lambda: x.sum(0), args.repeat)
    print(f"floor (one pass over the {args.n} x {args.d} updates, x.sum(0)): {floor_s:.4f} s")
    rows = []
    header = (f"{'rule':<18} {'ours s':>9} {'/floor':>7} {'flower':<14} {'flower s':>9} {'flower/ours':>11} "
              f"{'max |diff|':>10}  note")
    print(header)
    print("-" * len(header))
    for name in names:
        params = rule_params(name, inputs)
        ours_s, result = timed(lambda: RULES[name](x, **params), args.repeat)
        row = {"rule": name, "ours_s": ours_s, "vs_floor": ours_s / floor_s, "accepted": len(result.accepted), "flower": None,
               "flower_s": None, "ratio": None, "max_abs_diff": None, "note": ""}
        if name in flower:
            strategy = flower[name]
            flower_s, (arrays, _) = timed(
                lambda replies: strategy.aggregate_train(1, replies),
                flower_repeat,
                setup=lambda: (make_replies(global_flat, x, args.arrays),),
            )
            got = np.concatenate([arrays[k].numpy().ravel() for k in arrays]).astype(np.float64)
            diff = got - global_flat.astype(np.float64) - result.aggregate.double().numpy()
            row.update(flower=type(strategy).__name__, flower_s=flower_s, ratio=flower_s / ours_s,
                       max_abs_diff=float(np.abs(diff).max()))
            if name == "bulyan":
                row["note"] = ("paper's iterated Krum picked another set than Flower's one-shot"
                               if row["max_abs_diff"] > 1e-6 else "same selection as Flower's one-shot")
        rows.append(row)
        fl = row["flower"] or "-"
        fs = f"{row['flower_s']:9.3f}" if row["flower_s"] is not None else f"{'-':>9}"
        ratio = f"{row['ratio']:11.2f}" if row["ratio"] is not None else f"{'-':>11}"
        diff = f"{row['max_abs_diff']:10.2e}" if row["max_abs_diff"] is not None else f"{'-':>10}"
        print(f"{name:<18} {ours_s:9.3f} {row['vs_floor']:7.1f} {fl:<14} {fs} {ratio} {diff}  {row['note']}", flush=True)

    load_after = os.getloadavg()[0]
    if max(load_before, load_after) > os.cpu_count():
        print(f"note: load average {max(load_before, load_after):.1f} > {os.cpu_count()} CPUs: "
              "other processes shared the cores, times are inflated")
    if args.json:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "n": args.n, "d": args.d, "f": inputs["f"], "floor_s": floor_s, "repeat": args.repeat, "flower_repeat": flower_repeat,
            "arrays": args.arrays, "seed": args.seed, "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "machine": platform.machine(),
            # 1-min load average around the run: above the CPU count, other work shared the cores
            "load_before": load_before, "load_after": load_after, "python": platform.python_version(),
            "torch": torch.__version__, "flwr": flwr.__version__, "numpy": np.__version__,
        }
        RESULTS.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
