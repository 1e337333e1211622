"""What a run leaves in its directory: each round's metrics in rounds.jsonl as soon as it is
evaluated (with a progress line) and a checkpoint to resume from, and at the end summary.json,
summary.md and the plot."""

from __future__ import annotations

import io
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, MetricRecord

from fedsim.app.attack_plan import schedule_of
from fedsim.app.data_plan import eval_classes
from fedsim.config import Config
from fedsim.provenance import provenance
from fedsim.report import RunDirectory, summarize, write_atomic


CHECKPOINT = "checkpoint.pt"


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` (tensors, numbers, strings, lists and dicts of them) so that a kill or a
    full disk at any moment leaves either the previous checkpoint or this one, whole
    (``write_atomic``). It is serialised in memory first: ``torch.save`` to a file reports a
    full disk as "RuntimeError: [enforce fail at inline_container.cc]", which names neither the
    cause nor the file."""
    data = io.BytesIO()
    torch.save(state, data)
    write_atomic(path, data.getbuffer())


def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by ``save_checkpoint``; a file users bring is untrusted, so nothing
    but tensors and plain containers is unpickled (``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state() -> dict:
    """This process's global RNG states (torch, numpy, random), as tensors and lists. fedsim
    seeds every draw it makes from (seed, round, partition), so these are kept only so that
    no library's use of a global generator can tell a resumed run from an uninterrupted one."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "random": [version, list(internal), gauss]}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))


class Recorder:
    """Flower's ``evaluate_fn``: evaluate the global model of each round with ``evaluate``,
    append the round to ``run_dir`` with what the strategy saw in it (``round_stats()``), log a
    progress line and hand the round to ``checkpoint(round, arrays, initial metrics)``. Returns
    the scalar metrics, which Flower keeps in its ``Result``.

    Resumed after round ``rounds_done`` (Flower counts from 1 again), it adds those rounds to
    Flower's count and answers Flower's round-0 call with the ``initial`` metrics the first
    session measured, without evaluating.

    ``on_initial(metrics)`` receives the initial model's metrics as soon as they are known, so
    that a run that fails later still reports them."""

    def __init__(self, run_dir: RunDirectory, evaluate: Callable[[ArrayRecord], dict],
                 round_stats: Callable[[], dict], *, log=print,
                 checkpoint: Callable[[int, ArrayRecord, dict], None] | None = None,
                 rounds_done: int = 0, initial: dict | None = None,
                 on_initial: Callable[[dict], None] | None = None,
                 track: Callable[[int, dict], None] | None = None):
        self.run_dir, self.evaluate, self.round_stats, self.log = run_dir, evaluate, round_stats, log
        self.checkpoint, self.rounds_done, self.initial = checkpoint, rounds_done, initial
        self.on_initial = on_initial
        self.track = track  # (round, record) → None: TensorBoard (``tensorboard_tracker``)

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        if server_round == 0 and self.rounds_done:
            self.log(f"resuming after round {self.rounds_done}")
            if self.on_initial is not None:
                self.on_initial(dict(self.initial))
            return MetricRecord(self.initial)
        metrics = self.evaluate(arrays)
        scalars = {k: v for k, v in metrics.items() if isinstance(v, float)}
        if server_round == 0:
            self.initial = scalars
            if self.on_initial is not None:
                self.on_initial(dict(scalars))
            self.log(f"round  0  CA {metrics['clean_accuracy']:.3f}  "
                     f"ASR {metrics['attack_success_rate']:.3f}  (initial model)")
            if self.track is not None:
                self.track(0, dict(metrics))
        else:
            self.record(server_round + self.rounds_done, metrics)
            if self.checkpoint is not None:
                self.checkpoint(server_round + self.rounds_done, arrays, self.initial)
        return MetricRecord(scalars)

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
            # the rest of what the evaluator measured: retrieval, per-piece and text-side ASR
            # (CLIP mode), kNN and linear-probe numbers (SimCLR mode)
            **{k: v for k, v in metrics.items() if k not in ("clean_accuracy", "attack_success_rate")},
        }
        self.run_dir.append_round(record)
        if self.track is not None:
            self.track(server_round, record)
        # Detection rates mean something only for a rule that filters: show them once it does.
        extra = (f"  TPR {record['tpr']:.2f} FPR {record['fpr']:.2f}"
                 if record.get("tpr") is not None and record.get("flagged") else "")
        skipped = f"  [{record['skipped']}]" if record.get("skipped") else ""
        self.log(
            f"round {server_round:2d}  CA {record['clean_accuracy']:.3f}  "
            f"ASR {record['attack_success_rate']:.3f}  {record['wall_s']:.1f} s{extra}{skipped}"
        )


def scalars_of(record: dict, prefix: str = "") -> dict[str, float]:
    """The numeric entries of a round's record as ``tag → value`` (nested records joined
    with "/": ``retrieval/i2t_r1``); booleans, lists, text and None left out."""
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(scalars_of(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and key != "round":
            out[f"{prefix}{key}"] = float(value)
    return out


def tensorboard_tracker(folder: Path) -> Callable[[int, dict], None]:
    """``track(round, record)``: the record's scalars (``scalars_of``) at step ``round`` in a
    TensorBoard event file under ``folder`` (``[logging] tensorboard``), flushed each round."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))

    def track(server_round: int, record: dict) -> None:
        for tag, value in scalars_of(record).items():
            writer.add_scalar(tag, value, server_round)
        writer.flush()

    return track


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
           status: str = "completed", error: str | None = None, engine: str = "inprocess") -> dict:
    """Write the plot, summary.md and summary.json from the rounds already on disk. A run that
    went through all its rounds without aggregating once (every round skipped) failed, and so
    did one whose plot or summary.md could not be written (a full disk): summary.json, small,
    comes last and says so. Raises OSError only when summary.json itself cannot be written."""
    rounds = run_dir.read_rounds()
    if status == "completed" and all(r.get("skipped") for r in rounds):
        reasons = sorted({str(r["skipped"]) for r in rounds})
        status, error = "failed", "no round aggregated" + (f" (every round skipped: {'; '.join(reasons)})" if reasons else "")
    extra = {"name": cfg.name, "seed": cfg.seed, "strategy": cfg.strategy.name,
             "malicious": cfg.malicious, "status": status}
    if error:
        extra["error"] = error
    extra.update(lifespan(cfg, rounds))
    extra["provenance"] = provenance(engine=engine, client_threads=cfg.resources.client_threads)
    summary = summarize(rounds, initial=initial, wall_s=wall_s, extra=extra)
    for write in (lambda: run_dir.plot(initial=initial, chance=1 / len(eval_classes(cfg)[0])),
                  lambda: run_dir.write_summary_md(summary)):
        try:
            write()
        except OSError as e:
            if summary["status"] == "completed":
                summary["status"], summary["error"] = "failed", f"{type(e).__name__}: {e}"
    run_dir.write_summary_json(summary)
    return summary
