"""Divide-and-Conquer (Shejwalkar, Houmansadr, "Manipulating the Byzantine: Optimizing Model
Poisoning Attacks and Defenses for Federated Learning", NDSS 2021)."""

from __future__ import annotations

import math

import torch

from strategies.params import require_int, require_real
from strategies.result import AggregationResult, check_updates


def dnc(
    updates: torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
    f: int,
    c: float = 1.0,
    niters: int = 5,
    b: int = 10000,
    generator: torch.Generator | None = None,
) -> AggregationResult:
    """Divide-and-Conquer (Shejwalkar & Houmansadr, NDSS 2021, Algorithm 2). ``niters``
    times: draw b coordinates at random without replacement (from ``generator``), centre the
    n sub-vectors on their mean, take the top right singular vector v of the centred (n, b)
    matrix, score s_i = ⟨Δ_i[r] − μ, v⟩² and keep the n − ⌊c·f⌋ lowest scores. The clients
    kept in every iteration are accepted; the aggregate is their unweighted mean.

    ``f`` ≥ 0: assumed malicious clients; ``c`` > 0: filtering fraction (c·f removed per
    iteration; ⌊c·f⌋ < n required); ``niters`` ≥ 1; ``b`` ≥ 1: sub-sample dimension (all d
    coordinates when b ≥ d). Ties in the score go to the lower row index. Should no client
    survive all iterations, ValueError (the server keeps the global model). ``weights``
    (num-examples) are validated but not used. Flower has no built-in."""
    check_updates(updates, weights)
    n, d = updates.shape
    f = require_int("dnc", "f", f)
    c = require_real("dnc", "c", c)
    niters = require_int("dnc", "niters", niters, low=1)
    b = require_int("dnc", "b", b, low=1)
    removed = math.floor(c * f)
    if removed >= n:
        raise ValueError(
            f"dnc: c*f = {c}*{f} removes {removed} of n={n} clients per iteration; needs fewer than n"
        )
    b = min(b, d)
    good = torch.ones(n, dtype=torch.bool)
    for _ in range(niters):
        coords = torch.randperm(d, generator=generator)[:b].to(updates.device)
        sub = updates[:, coords].to(torch.float64)
        centred = sub - sub.mean(dim=0)
        # ⟨c_i, v⟩² for the top right singular vector v of C equals λ·u_i², with (λ, u) the top
        # eigenpair of the (n, n) matrix C Cᵀ: no SVD of the (n, b) matrix needed.
        eigenvalues, eigenvectors = torch.linalg.eigh(centred @ centred.T)
        scores = (eigenvalues[-1] * eigenvectors[:, -1].square()).cpu()
        kept = torch.zeros(n, dtype=torch.bool)
        kept[torch.sort(scores, stable=True).indices[: n - removed]] = True
        good &= kept
    if not good.any():
        raise ValueError(f"dnc: no client was kept in all niters={niters} iterations")
    accepted = torch.nonzero(good).flatten()
    return AggregationResult(
        aggregate=updates[accepted.to(updates.device)].mean(dim=0),
        accepted=accepted,
        info={"removed_per_iter": removed, "b": b, "niters": niters},
    )
