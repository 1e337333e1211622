"""How a run scales with the clients that are *not* sampled: the same round (50 clients
sampled, the same samples per client) with 100, 300, 1,000 and 10,000 simulated clients.

    python bench/scale.py [--clients 100,300,1000,10000] [--per-round 50] [--samples 20]
                          [--rounds 3] [--set key=value ...] [--json]

Each size is one ``fedsim run`` of the quickstart (attack off) in a child process, with
``clients.num`` = N, ``clients.per_round`` = 50 and ``data.train_size`` = samples × N.
Reported per size: round 1 and the median later round (``rounds.jsonl`` ``wall_s``), the
whole run, and the peak over the run of the memory summed over every process of the run —
the fedsim process and all its descendants (Ray's GCS, raylet, workers and actors) —, as
proportional set size (PSS: a page shared by k processes counts 1/k in each, so the sum is
what the run occupies) and, for comparison, as resident set size (RSS, shared pages counted
in every process). Sampled every 0.5 s with psutil. The run's engine (``resources.engine``,
"auto" by default) is recorded per row. Goals (issue #21): at 10,000 clients a steady round
≤ 1.1× one at 100 and round 1 ≤ 2× a steady round (issue #13's earlier ones: < 4 GiB at 1,000
clients, < 6 GiB at 10,000).

Then (``--memory``, on by default) the memory of a 10-client run — the quickstart at 3 rounds,
2,000 pairs, every client sampled (``bench/overhead.py``'s size) — on each engine; goal
(issue #21): ≤ 2.5 GiB summed PSS.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "scale.json"
GIB = 1024**3


class PeakMemory(threading.Thread):
    """Samples the summed PSS and RSS of a process tree until stopped; keeps the peaks."""

    def __init__(self, pid: int, every_s: float = 0.5):
        super().__init__(daemon=True)
        self.root, self.every_s = psutil.Process(pid), every_s
        self.peak_pss = self.peak_rss = 0
        self.processes = 0
        self._halt = threading.Event()

    def sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        pss = rss = 0
        for p in procs:
            try:
                info = p.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            pss += getattr(info, "pss", info.rss)
            rss += info.rss
        self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)
        self.processes = max(self.processes, len(procs))

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.every_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def one(n: int, per_round: int, samples: int, rounds: int, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="fedsim-scale-") as tmp:
        out = Path(tmp) / "run"
        sets = [f"name='scale-{n}'", f"rounds={rounds}", f"clients.num={n}", f"clients.per_round={per_round}",
                f"data.train_size={samples * n}", "data.test_size=500", "attack.enabled=false", *overrides]
        cmd = [sys.executable, "-m", "fedsim.cli", "run", "configs/quickstart.toml", "--out", str(out)]
        for s in sets:
            cmd += ["--set", s]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        sampler = PeakMemory(proc.pid)
        sampler.start()
        log = proc.communicate()[0]
        sampler.stop()
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{n} clients: fedsim exited {proc.returncode}:\n{log[-3000:]}")
        walls = [json.loads(line)["wall_s"] for line in (out / "rounds.jsonl").read_text().splitlines()]
        engine = json.loads((out / "summary.json").read_text()).get("provenance", {}).get("engine")
    return {
        "engine": engine,
        "clients": n, "per_round": per_round, "samples_per_client": samples, "rounds": rounds,
        "round1_s": round(walls[0], 2), "steady_round_s": round(statistics.median(walls[1:]), 2),
        "rounds_s": walls, "run_s": round(wall, 1),
        "peak_pss_gib": round(sampler.peak_pss / GIB, 2), "peak_rss_gib": round(sampler.peak_rss / GIB, 2),
        "processes": sampler.processes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="100,300,1000,10000", help="comma-separated client counts")
    parser.add_argument("--per-round", type=int, default=50)
    parser.add_argument("--samples", type=int, default=20, help="training samples per client")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", action="store_true", help=f"also write {RESULTS.relative_to(ROOT)}")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the 10-client runs")
    args = parser.parse_args(argv)
    memory = []
    for engine in ("inprocess", "ray") if args.memory else ():
        print(f"memory: 10 clients, {engine} engine ...", flush=True)
        row = one(10, 10, 200, 3, [f"resources.engine='{engine}'", *args.set])
        print(f"  run {row['run_s']} s, peak PSS {row['peak_pss_gib']} GiB (RSS {row['peak_rss_gib']} GiB, "
              f"{row['processes']} processes)", flush=True)
        memory.append(row)
    rows = []
    for n in (int(x) for x in args.clients.split(",")):
        print(f"scale: {n} clients ...", flush=True)
        row = one(n, args.per_round, args.samples, args.rounds, args.set)
        print(f"  round 1 {row['round1_s']} s, steady {row['steady_round_s']} s, run {row['run_s']} s, "
              f"peak PSS {row['peak_pss_gib']} GiB (RSS {row['peak_rss_gib']} GiB, {row['processes']} processes)",
              flush=True)
        rows.append(row)
    base = rows[0]["steady_round_s"]
    for row in rows:
        row["steady_vs_first_size"] = round(row["steady_round_s"] / base, 2)
        row["round1_vs_steady"] = round(row["round1_s"] / row["steady_round_s"], 2)
    if args.json:
        RESULTS.write_text(json.dumps({
            "machine": f"{platform.machine()}, {psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / GIB:.0f} GiB",
            "date": time.strftime("%Y-%m-%d"), "rows": rows, "memory": memory}, indent=2) + "\n")
    print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
