"""Krum and Multi-Krum (Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with
Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017), and the pairwise geometry
(Gram matrix, squared distances, cosines) that the distance- and cosine-based rules share."""

from __future__ import annotations

import torch

from strategies.params import require_int
from strategies.result import AggregationResult, check_updates

# Columns per block when accumulating the Gram matrix: bounds the float64 copy to
# n × 2^18 × 8 bytes (100 MB for n = 50) whatever d is.
_BLOCK = 1 << 18


def gram(rows: torch.Tensor) -> torch.Tensor:
    """(n, n) float64 inner products ⟨x_i, x_j⟩ of the rows of an (n, d) tensor.

    Accumulated in float64 over column blocks: float32 products over millions of coordinates
    lose the small differences between near-identical updates (sybils, duplicates) that
    distances and cosines must resolve."""
    n = rows.shape[0]
    g = torch.zeros(n, n, dtype=torch.float64, device=rows.device)
    for block in rows.split(_BLOCK, dim=1):
        b = block.to(torch.float64)
        g += b @ b.T
    # BLAS need not return an exactly symmetric product; exact symmetry makes d(i, j) and
    # d(j, i) equal, so the ties Krum has by construction stay ties (see krum_order).
    return (g + g.T) / 2


def squared_distances(updates: torch.Tensor) -> torch.Tensor:
    """(n, n) float64 squared L2 distances ‖Δ_i − Δ_j‖² = ‖Δ_i‖² + ‖Δ_j‖² − 2⟨Δ_i, Δ_j⟩,
    clamped at 0 (rounding can make the expansion slightly negative), zero diagonal."""
    g = gram(updates)
    sq = g.diagonal()
    dist = (sq[:, None] + sq[None, :] - 2 * g).clamp_min_(0)
    return dist.fill_diagonal_(0)


def cosine_similarities(rows: torch.Tensor) -> torch.Tensor:
    """(n, n) float64 cosine similarities of the rows; a zero row has similarity 0 to all."""
    g = gram(rows)
    norms = g.diagonal().sqrt()
    inv = torch.where(norms > 0, 1.0 / norms, 0.0)
    return g * inv[:, None] * inv[None, :]


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
