"""Geometric median by the smoothed Weiszfeld algorithm — Robust Federated Aggregation
(Pillutla, Kakade, Harchaoui, "Robust Aggregation for Federated Learning", IEEE Transactions
on Signal Processing, 2022)."""

from __future__ import annotations

import torch

from strategies.geometry import gram
from strategies.params import require_int, require_real
from strategies.result import AggregationResult, all_accepted, check_updates


def geometric_median(
    updates: torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
    nu: float = 1e-6,
    max_iter: int = 100,
    tol: float = 1e-6,
) -> AggregationResult:
    """Approximate argmin_v Σ_i α_i ‖v − Δ_i‖ by the smoothed Weiszfeld iteration of RFA
    (Pillutla et al., IEEE TSP 2022):

        v ← Σ_i β_i Δ_i / Σ_i β_i,   β_i = α_i / max(ν, ‖v − Δ_i‖),

    starting from the α-weighted mean and stopping after ``max_iter`` iterations or when the
    objective changes by at most ``tol`` relative to its new value. ``weights`` are the α_i
    (num-examples, as in RFA; uniform when None). ``nu`` > 0 is the smoothing ν that keeps
    the step defined when v reaches a data point. No f to set: the breakdown point is 1/2 of
    the total weight. Nothing is filtered; ``weights`` in the result are the final β_i
    normalised, i.e. the update is Σ_i weights_i Δ_i.

    Every iterate is a combination Σ c_i Δ_i of the rows, so distances come from the (n, n)
    Gram matrix: one pass over the data, O(n²) per iteration. Flower has no built-in."""
    alpha = check_updates(updates, weights)
    n = updates.shape[0]
    nu = require_real("geometric_median", "nu", nu)
    max_iter = require_int("geometric_median", "max_iter", max_iter, low=1)
    tol = require_real("geometric_median", "tol", tol)
    if alpha is None:
        alpha = torch.full((n,), 1.0 / n, dtype=torch.float64, device=updates.device)
    alpha = alpha.to(torch.float64)
    g = gram(updates)
    sq = g.diagonal()

    def distances(c: torch.Tensor) -> torch.Tensor:
        # ‖Σ_j c_j Δ_j − Δ_i‖² = cᵀGc − 2 (Gc)_i + G_ii
        gc = g @ c
        return (c @ gc - 2 * gc + sq).clamp_min(0).sqrt()

    c = alpha
    objective = float(alpha @ distances(c))
    iterations, converged = 0, False
    while iterations < max_iter and not converged:
        beta = alpha / distances(c).clamp_min(nu)
        c = beta / beta.sum()
        previous, objective = objective, float(alpha @ distances(c))
        iterations += 1
        converged = abs(previous - objective) <= tol * objective
    return AggregationResult(
        aggregate=c.to(updates.dtype) @ updates,
        accepted=all_accepted(n),
        weights=c.to(updates.dtype),
        info={"iterations": iterations, "converged": converged, "objective": objective},
    )
