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


def check_finite(what: str, t: torch.Tensor) -> None:
    """ValueError naming ``what`` and its rows (entries, for a vector) holding NaN or ±Inf,
    if any: no rule is defined on them (one NaN row makes every distance, cosine and mean NaN),
    and what to do with such a client is the server's call, before aggregating.

    A NaN or ±Inf entry makes the sum NaN or ±Inf, so a finite sum proves every entry finite
    in one pass without an (n, d) mask (the mask costs ~10 passes on CPU, bench/aggregators.py);
    only a sum that is not finite — a bad entry, or finite entries overflowing — is checked
    entry by entry."""
    if torch.isfinite(t.sum()):
        return
    bad = ~torch.isfinite(t)
    if bad.any():
        rows = torch.nonzero(bad.reshape(t.shape[0], -1).any(dim=1)).flatten().tolist()
        kinds = " and ".join(k for k, found in (("NaN", t.isnan()), ("Inf", t.isinf())) if found.any())
        where = "row(s)" if t.ndim > 1 else "entries"
        raise ValueError(f"{what} contains {kinds} in {where} {rows[:10]}{' ...' if len(rows) > 10 else ''}")


def check_updates(updates: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Validate the common input contract — (n, d) floating point, all finite; weights (n,),
    finite, non-negative, not all zero — and return normalised weights (sum 1) or None."""
    if updates.ndim != 2 or updates.shape[0] < 1:
        raise ValueError(f"updates must be an (n, d) tensor with n >= 1, got {tuple(updates.shape)}")
    if not updates.is_floating_point():
        raise ValueError(f"updates must be floating point, got {updates.dtype}")
    check_finite("updates", updates)
    if weights is None:
        return None
    weights = torch.as_tensor(weights, dtype=updates.dtype, device=updates.device)
    if weights.shape != (updates.shape[0],):
        raise ValueError(
            f"weights must have shape ({updates.shape[0]},), got {tuple(weights.shape)}"
        )
    check_finite("weights", weights)
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    return weights / weights.sum()
