"""What a run leaves in its directory: each round's metrics in rounds.jsonl as soon as it is
evaluated (with a progress line), and at the end summary.json, summary.md and the plot."""

from __future__ import annotations

import time
from collections.abc import Callable

from flwr.app import ArrayRecord, MetricRecord

from fedsim.app.attack_plan import schedule_of
from fedsim.config import Config, eval_classes
from fedsim.report import RunDirectory, summarize


class Recorder:
    """Flower's ``evaluate_fn``: evaluate the global model of each round with ``evaluate``,
    append the round to ``run_dir`` with what the strategy saw in it (``round_stats()``), and
    log a progress line. Returns the scalar metrics, which Flower keeps in its ``Result``."""

    def __init__(self, run_dir: RunDirectory, evaluate: Callable[[ArrayRecord], dict],
                 round_stats: Callable[[], dict], *, log=print):
        self.run_dir, self.evaluate, self.round_stats, self.log = run_dir, evaluate, round_stats, log

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        metrics = self.evaluate(arrays)
        if server_round == 0:
            self.log(f"round  0  CA {metrics['clean_accuracy']:.3f}  "
                     f"ASR {metrics['attack_success_rate']:.3f}  (initial model)")
        else:
            self.record(server_round, metrics)
        return MetricRecord({k: v for k, v in metrics.items() if isinstance(v, float)})

    def record(self, server_round: int, metrics: dict) -> None:
        stats = dict(self.round_stats())
        t0 = stats.pop("t0", time.perf_counter())
        stats.pop("round", None)
        record = {
            "round": server_round,
            "clean_accuracy": metrics["clean_accuracy"],
            "attack_success_rate": metrics["attack_success_rate"],
            "wall_s": round(time.perf_counter() - t0, 3),
            **stats,
            "retrieval": metrics["retrieval"],
            **({"asr_by_trigger": metrics["asr_by_trigger"]} if "asr_by_trigger" in metrics else {}),
            **({"text_attack_success_rate": metrics["text_attack_success_rate"]}
               if "text_attack_success_rate" in metrics else {}),
        }
        self.run_dir.append_round(record)
        # Detection rates mean something only for a rule that filters: show them once it does.
        extra = (f"  TPR {record['tpr']:.2f} FPR {record['fpr']:.2f}"
                 if record.get("tpr") is not None and record.get("flagged") else "")
        skipped = f"  [{record['skipped']}]" if record.get("skipped") else ""
        self.log(
            f"round {server_round:2d}  CA {record['clean_accuracy']:.3f}  "
            f"ASR {record['attack_success_rate']:.3f}  {record['wall_s']:.1f} s{extra}{skipped}"
        )


def lifespan(cfg: Config, rounds: list[dict]) -> dict:
    """Backdoor lifespan (Neurotoxin, Zhang et al., ICML 2022): after the last attack round
    ``s`` (the schedule's stop), the number of rounds r > s during which ASR stays at or above
    ``attack.lifespan_threshold`` before first falling below it. ``survived`` says ASR never
    fell below the threshold by the end of the run (the lifespan is then a lower bound)."""
    stop = schedule_of(cfg).stop
    if not cfg.malicious or stop is None or stop >= cfg.rounds:
        return {}
    after = [r for r in rounds if r["round"] > stop and r.get("attack_success_rate") is not None]
    below = [r["round"] for r in after if r["attack_success_rate"] < cfg.attack.lifespan_threshold]
    return {
        "last_attack_round": stop,
        "backdoor_lifespan": (below[0] - stop - 1) if below else len(after),
        "backdoor_survived": not below,
    }


def finish(run_dir: RunDirectory, cfg: Config, *, initial: dict | None, wall_s: float,
           status: str = "completed", error: str | None = None) -> dict:
    """Write summary.json, summary.md and the plot from the rounds already on disk. A run that
    went through all its rounds without aggregating once (every round skipped) failed."""
    rounds = run_dir.read_rounds()
    if status == "completed" and all(r.get("skipped") for r in rounds):
        reasons = sorted({str(r["skipped"]) for r in rounds})
        status, error = "failed", "no round aggregated" + (f" (every round skipped: {'; '.join(reasons)})" if reasons else "")
    extra = {"name": cfg.name, "seed": cfg.seed, "strategy": cfg.strategy.name,
             "malicious": cfg.malicious, "status": status}
    if error:
        extra["error"] = error
    extra.update(lifespan(cfg, rounds))
    summary = summarize(rounds, initial=initial, wall_s=wall_s, extra=extra)
    run_dir.write_summary(summary)
    run_dir.plot(initial=initial, chance=1 / len(eval_classes(cfg)[0]))
    return summary
