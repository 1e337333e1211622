"""Norm clipping with optional weak-DP noise (Sun, Kairouz, Suresh, McMahan, "Can You Really
Backdoor Federated Learning?", arXiv:1911.07963, 2019) and centered clipping (Karimireddy, He,
Jaggi, "Learning from History for Byzantine Robust Optimization", ICML 2021)."""

from __future__ import annotations

import torch

from strategies.geometry import row_norms
from strategies.inputs import takes
from strategies.params import require_int, require_real
from strategies.result import AggregationResult, all_accepted, check_finite, check_updates


def clip_factors(norms: torch.Tensor, bound: float) -> torch.Tensor:
    """min(1, bound/‖x‖) per row; rows within the bound (zero rows included) get exactly 1."""
    return torch.where(norms > bound, bound / norms, 1.0)


def add_gaussian_noise(
    aggregate: torch.Tensor, sigma: float, generator: torch.Generator | None
) -> torch.Tensor:
    """aggregate + N(0, σ²) on every coordinate, drawn on the CPU from ``generator`` so that a
    seed gives the same noise whatever device the aggregate is on."""
    if sigma == 0:
        return aggregate
    noise = torch.randn(aggregate.shape, generator=generator, dtype=aggregate.dtype)
    return aggregate + sigma * noise.to(aggregate.device)


def norm_clipping(
    updates: torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
    tau: float,
    sigma: float = 0.0,
    generator: torch.Generator | None = None,
) -> AggregationResult:
    """FedAvg of norm-clipped updates plus optional Gaussian noise (Sun et al., 2019):

        Σ_k p_k Δ_k · min(1, τ/‖Δ_k‖) + N(0, σ² I),

    with p_k the normalised ``weights`` (num-examples, as in FedAvg; uniform when None).
    ``tau`` > 0 is the L2 norm bound M of the paper; ``sigma`` ≥ 0 the standard deviation of
    the noise added to every coordinate of the aggregate ("weak differential privacy"),
    drawn from ``generator``. No f: the defence bounds each client's influence instead of
    filtering, so every client is accepted.

    Flower's DifferentialPrivacyServerSideFixedClipping clips the same way but calibrates its
    noise as noise_multiplier · clip / n for DP; here σ is the paper's absolute value."""
    p = check_updates(updates, weights)
    n = updates.shape[0]
    tau = require_real("norm_clipping", "tau", tau)
    sigma = require_real("norm_clipping", "sigma", sigma, strict=False)
    if p is None:
        p = torch.full((n,), 1.0 / n, dtype=updates.dtype, device=updates.device)
    norms = row_norms(updates)
    aggregate = add_gaussian_noise((p * clip_factors(norms, tau)) @ updates, sigma, generator)
    return AggregationResult(
        aggregate=aggregate,
        accepted=all_accepted(n),
        weights=p,
        info={
            "tau": tau, "sigma": sigma, "clipped": int((norms > tau).sum()), "max_norm": float(norms.max())
        },
    )


takes("generator")(norm_clipping)


def centered_clipping(
    updates: torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
    tau: float,
    L: int = 1,
    previous: torch.Tensor | None = None,
) -> AggregationResult:
    """Centered clipping (Karimireddy et al., ICML 2021): starting from v₀ = ``previous``
    (last round's aggregate — the server momentum the paper clips around; zeros in the first
    round), repeat L times

        v ← v + (1/n) Σ_i (Δ_i − v) · min(1, τ/‖Δ_i − v‖).

    ``tau`` > 0 is the clipping radius τ, ``L`` ≥ 1 the number of iterations. No f: each
    client's pull on v is bounded by τ/n, so every client is accepted. ``weights``
    (num-examples) are validated but not used: the paper averages uniformly. Flower has no
    built-in."""
    check_updates(updates, weights)
    n, d = updates.shape
    tau = require_real("centered_clipping", "tau", tau)
    L = require_int("centered_clipping", "L", L, low=1)
    if previous is None:
        v = torch.zeros(d, dtype=updates.dtype, device=updates.device)
    else:
        if tuple(previous.shape) != (d,):
            raise ValueError(
                f"centered_clipping: previous has shape {tuple(previous.shape)}, expected ({d},)"
            )
        check_finite("centered_clipping: previous", previous)
        v = previous.to(dtype=updates.dtype, device=updates.device)
    for _ in range(L):
        diff = updates - v
        norms = row_norms(diff)
        v = v + clip_factors(norms, tau) @ diff / n
    return AggregationResult(
        aggregate=v,
        accepted=all_accepted(n),
        info={"tau": tau, "L": L, "clipped_last_iter": int((norms > tau).sum())},
    )


takes("previous")(centered_clipping)
