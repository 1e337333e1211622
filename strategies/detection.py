"""Detection bookkeeping: what a filtering rule accepted against who was malicious.

A *positive* is a malicious client; a client counts as *flagged* (predicted positive) when the
rule did not accept it. TPR = TP / (TP + FN) (malicious clients flagged), FPR = FP / (FP + TN)
(honest clients flagged), precision = TP / (TP + FP). A ratio whose denominator is zero is
None (e.g. TPR in a round with no malicious participant), never 0, so means skip it."""

from __future__ import annotations

from collections.abc import Sequence


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def detection_counts(accepted: Sequence[int], malicious: Sequence[bool], n: int) -> dict:
    """Confusion counts and rates for one round. ``accepted``: row indices the rule used;
    ``malicious``: ground truth per row (length n)."""
    if len(malicious) != n:
        raise ValueError(f"malicious has {len(malicious)} entries, expected {n}")
    acc = set(accepted)
    if not acc <= set(range(n)):
        raise ValueError(f"accepted indices {sorted(acc - set(range(n)))} are outside [0, {n})")
    tp = sum(1 for i in range(n) if malicious[i] and i not in acc)
    fn = sum(1 for i in range(n) if malicious[i] and i in acc)
    fp = sum(1 for i in range(n) if not malicious[i] and i not in acc)
    tn = n - tp - fn - fp
    return {
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "tpr": _ratio(tp, tp + fn), "fpr": _ratio(fp, fp + tn),
        "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn),
    }
