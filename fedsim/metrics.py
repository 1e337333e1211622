"""What a run is reduced to, declared once: each ``Metric`` names the ``rounds.jsonl`` key it
reads, how the rounds are reduced to one number (the last round's value, the maximum, or the
mean over the rounds that have one; or the initial model's, measured before round 1), and
where it is shown. ``summary.json`` holds every
metric (``fedsim.report.summarize``), ``summary.md`` the ones with ``in_summary_md``, and a
sweep's results.csv and results.md the ones with a ``column`` (``fedsim.results``), in this
order. A new metric is one entry here (and the key it reads in the rounds' records).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """``name``: its summary.json key; ``of``: the rounds.jsonl key it reduces; ``reduce``:
    "last" (the last round's value), "max" (the largest over the rounds), "mean" (over the
    rounds that have a value; None if none has) or "initial" (the initial model's value); ``column`` and ``heading``: its results.csv
    column and its sweep-table heading (None: not in the sweep tables); ``in_summary_md``: a
    row of summary.md."""

    name: str
    of: str
    reduce: str
    column: str | None = None
    heading: str | None = None
    in_summary_md: bool = True

    def __post_init__(self):
        if self.reduce not in ("last", "max", "mean", "initial"):
            raise ValueError(f"metric {self.name}: reduce={self.reduce!r}; allowed: last, max, mean, initial")

    def of_run(self, rounds: list[dict], initial: dict | None = None):
        """This metric of a run's rounds and initial model (None where nothing has a value)."""
        if self.reduce == "initial":
            return (initial or {}).get(self.of)
        if self.reduce == "last":
            return rounds[-1].get(self.of) if rounds else None
        values = [r[self.of] for r in rounds if r.get(self.of) is not None]
        if not values:
            return None
        return max(values) if self.reduce == "max" else sum(values) / len(values)


METRICS: list[Metric] = [
    Metric("attack_success_rate", "attack_success_rate", "last", "final_asr", "final ASR"),
    Metric("max_attack_success_rate", "attack_success_rate", "max", "max_asr", "max ASR"),
    Metric("clean_accuracy", "clean_accuracy", "last", "final_ca", "final CA"),
    Metric("initial_clean_accuracy", "clean_accuracy", "initial"),
    Metric("initial_attack_success_rate", "attack_success_rate", "initial"),
    Metric("mean_tpr", "tpr", "mean", "mean_tpr", "mean TPR"),
    Metric("mean_fpr", "fpr", "mean", "mean_fpr", "mean FPR"),
    Metric("mean_precision", "precision", "mean", in_summary_md=False),
    Metric("mean_recall", "recall", "mean", in_summary_md=False),
]
