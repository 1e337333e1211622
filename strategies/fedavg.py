"""FedAvg (McMahan et al., "Communication-Efficient Learning of Deep Networks from
Decentralized Data", AISTATS 2017)."""

from __future__ import annotations

import torch

from strategies.result import AggregationResult, all_accepted, check_updates


def fedavg(updates: torch.Tensor, *, weights: torch.Tensor | None = None) -> AggregationResult:
    """Weighted mean of the updates: Σ_k n_k Δ_k / Σ_k n_k, with n_k = ``weights``
    (the clients' example counts; uniform when None). Nothing is filtered.

    Note that n_k is reported by the client: an attacker can inflate it."""
    w = check_updates(updates, weights)
    n = updates.shape[0]
    if w is None:
        w = torch.full((n,), 1.0 / n, dtype=updates.dtype, device=updates.device)
    return AggregationResult(aggregate=w @ updates, accepted=all_accepted(n), weights=w)
