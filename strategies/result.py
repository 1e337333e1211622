"""What every aggregation rule returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class AggregationResult:
    """``aggregate``: the (d,) update the server applies. ``accepted``: sorted int64 indices
    (rows of the input) of the clients the rule used — all of them for non-filtering rules.
    ``weights``: the per-client weights the rule ended up using, where it computes some
    (FoolsGold, FLTrust, FedAvg); ``info``: rule-specific numbers worth logging (scores,
    thresholds), plain Python values only."""

    aggregate: torch.Tensor
    accepted: torch.Tensor
    weights: torch.Tensor | None = None
    info: dict = field(default_factory=dict)


def all_accepted(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.long)


def check_updates(updates: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Validate the common input contract and return normalised weights (sum 1) or None."""
    if updates.ndim != 2 or updates.shape[0] < 1:
        raise ValueError(f"updates must be an (n, d) tensor with n >= 1, got {tuple(updates.shape)}")
    if not updates.is_floating_point():
        raise ValueError(f"updates must be floating point, got {updates.dtype}")
    if weights is None:
        return None
    weights = torch.as_tensor(weights, dtype=updates.dtype, device=updates.device)
    if weights.shape != (updates.shape[0],):
        raise ValueError(
            f"weights must have shape ({updates.shape[0]},), got {tuple(weights.shape)}"
        )
    if (weights < 0).any() or not torch.isfinite(weights).all() or weights.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    return weights / weights.sum()
