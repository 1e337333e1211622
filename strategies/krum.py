"""Krum and Multi-Krum (Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with
Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017)."""

from __future__ import annotations

import torch

from strategies.geometry import squared_distances
from strategies.params import require_int
from strategies.result import AggregationResult, check_updates

def krum_scores(dist: torch.Tensor, k: int) -> torch.Tensor:
    """Score(i) = sum of the k smallest squared distances from i to the *other* rows.

    Self is excluded by index (the diagonal set to +inf), not by dropping the first entry of
    the sorted row: with duplicate updates the self distance need not sort first."""
    others = dist.clone().fill_diagonal_(float("inf"))
    return others.topk(k, dim=1, largest=False).values.sum(dim=1)


def krum_order(dist: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row indices by increasing Krum score, the scores). Exact ties in the score are broken
    by the sum of squared distances to all other rows, then by index.

    With k = 1 ties are systematic — the two ends of the closest pair score the same — and an
    index tie-break would make the choice depend on the clients' row order."""
    scores = krum_scores(dist, k)
    by_total = torch.sort(dist.sum(dim=1), stable=True).indices
    return by_total[torch.sort(scores[by_total], stable=True).indices], scores


def _order(rule: str, updates: torch.Tensor, f) -> tuple[torch.Tensor, torch.Tensor]:
    n = updates.shape[0]
    f = require_int(rule, "f", f)
    if n <= 2 * f + 2:
        raise ValueError(f"{rule}: f={f} needs n > 2f + 2 = {2 * f + 2} clients, got n={n}")
    return krum_order(squared_distances(updates), n - f - 2)


def krum(updates: torch.Tensor, *, weights: torch.Tensor | None = None, f: int) -> AggregationResult:
    """Krum: the single update with the lowest score, where Score(i) is the sum of **squared**
    L2 distances from Δ_i to its n − f − 2 nearest other updates (Blanchard et al., 2017).

    ``f``: the number of malicious clients assumed; the paper requires n > 2f + 2 (ValueError
    otherwise). Ties in the score go to the update with the smaller sum of squared distances
    to all others (see :func:`krum_order`). ``weights`` (num-examples) are validated but
    not used: the choice depends on geometry only, as in the paper.

    Same rule as Flower's ``Krum``, which drops the self distance by skipping position 0 of
    each sorted distance row instead. That is harmless for exact duplicates (the skipped zero
    equals the self one) but wrong whenever rounding — Flower works on full float32 weights —
    lets another distance sort below the self distance."""
    check_updates(updates, weights)
    order, scores = _order("krum", updates, f)
    best = int(order[0])
    return AggregationResult(
        aggregate=updates[best].clone(),
        accepted=torch.tensor([best], dtype=torch.long),
        info={"f": f, "selected": best, "scores": scores.tolist()},
    )


def multi_krum(
    updates: torch.Tensor, *, weights: torch.Tensor | None = None, f: int, m: int | None = None
) -> AggregationResult:
    """Multi-Krum: the unweighted mean of the m updates with the lowest Krum scores (same
    score as :func:`krum`, n − f − 2 neighbours, squared distances; Blanchard et al., 2017).

    ``f``: assumed malicious clients, n > 2f + 2 required; ``m``: updates averaged, an
    integer in [1, n], default n − f. Ties in the score: as in :func:`krum`.
    ``weights`` (num-examples) are validated but not used, as in the paper — unlike
    Flower's ``MultiKrum``, which weights the selected updates by the client-reported
    num-examples (which an attacker can inflate). With equal num-examples the two agree."""
    check_updates(updates, weights)
    order, scores = _order("multi_krum", updates, f)
    n = updates.shape[0]
    if m is None:
        m = n - f
    m = require_int("multi_krum", "m", m, low=1, high=n)
    chosen = order[:m]
    return AggregationResult(
        aggregate=updates[chosen].mean(dim=0),
        accepted=torch.sort(chosen).values.cpu(),
        info={"f": f, "m": m, "scores": scores.tolist()},
    )
