"""Divide-and-Conquer (Shejwalkar, Houmansadr, "Manipulating the Byzantine: Optimizing Model
Poisoning Attacks and Defenses for Federated Learning", NDSS 2021)."""

from __future__ import annotations

import math

import torch

from strategies.inputs import takes
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
    times: draw b coordinates r at random without replacement (``torch.randperm(d,
    generator=generator)[:b]``, a fresh draw every iteration), centre the n sub-vectors on
    their mean μ, take the top right singular vector v of the centred (n, b) matrix, score
    s_i = ⟨Δ_i[r] − μ, v⟩² and remove the ⌊c·f⌋ highest scores. The clients kept in every
    iteration are accepted; the aggregate is their unweighted mean.

    ``f`` ≥ 0: assumed malicious clients; ``c`` > 0: filtering fraction (c·f removed per
    iteration; ⌊c·f⌋ < n required); ``niters`` ≥ 1; ``b`` ≥ 1: sub-sample dimension (all d
    coordinates when b ≥ d). Ties: rows with identical sub-vectors get the same score (the
    largest of their computed scores, so rounding cannot split them), and every row scoring
    at least the ⌊c·f⌋-th highest score is removed — a tie at the cut removes the whole
    tied group, more than ⌊c·f⌋ rows (sybils sending one update more than c·f times are
    all dropped), so the result does not depend on the clients' row order. Should no client
    survive all iterations (e.g. all updates identical), ValueError (the server keeps the
    global model). ``weights`` (num-examples) are validated but not used. Flower has no
    built-in."""
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
        group = torch.unique(sub, dim=0, return_inverse=True)[1].cpu()
        scores = torch.zeros(n, dtype=scores.dtype).scatter_reduce(0, group, scores, "amax")[group]
        if removed:
            good &= scores < scores.topk(removed).values[-1]
    if not good.any():
        raise ValueError(f"dnc: no client was kept in all niters={niters} iterations")
    accepted = torch.nonzero(good).flatten()
    return AggregationResult(
        aggregate=updates[accepted.to(updates.device)].mean(dim=0),
        accepted=accepted,
        info={"removed_per_iter": removed, "b": b, "niters": niters},
    )


takes("generator")(dnc)
