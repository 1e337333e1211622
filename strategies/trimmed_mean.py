"""Coordinate-wise trimmed mean (Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust
Distributed Learning: Towards Optimal Statistical Rates", ICML 2018)."""

from __future__ import annotations

import torch

from strategies.median import coordinate_sort
from strategies.params import require_real
from strategies.result import AggregationResult, all_accepted, check_updates


def trimmed_mean(
    updates: torch.Tensor, *, weights: torch.Tensor | None = None, beta: float
) -> AggregationResult:
    """Per coordinate, drop the k largest and the k smallest of the n values and average the
    remaining n − 2k, with k = ⌊beta · n⌋ (Yin et al., ICML 2018).

    ``beta`` is a **fraction** in [0, 0.5) cut from each end, as in Flower's
    ``FedTrimmedAvg`` (and ``scipy.stats.trim_mean``), so n − 2k ≥ 1 always holds; the
    paper's β is this fraction. Tolerates up to k malicious values per coordinate. Every
    client is accepted (the trimming differs per coordinate). ``weights`` (num-examples) are
    validated but not used. Same rule as Flower's ``FedTrimmedAvg``."""
    check_updates(updates, weights)
    beta = require_real("trimmed_mean", "beta", beta, strict=False, high=0.5)
    n = updates.shape[0]
    k = int(beta * n)
    return AggregationResult(
        aggregate=coordinate_sort(updates)[k : n - k].mean(dim=0),
        accepted=all_accepted(n),
        info={"beta": beta, "trimmed_each_side": k},
    )
