"""Robust learning rate (Ozdayi, Kantarcioglu, Gel, "Defending against Backdoors in Federated
Learning with Robust Learning Rate", AAAI 2021)."""

from __future__ import annotations

import torch

from strategies.params import require_int, require_real
from strategies.result import AggregationResult, all_accepted, check_updates


def rlr(
    updates: torch.Tensor, *, weights: torch.Tensor | None = None, theta: int, eta: float = 1.0
) -> AggregationResult:
    """Robust learning rate (Ozdayi et al., AAAI 2021): per coordinate, the server learning
    rate is +η where the clients agree on the sign, −η where they do not,

        lr_j = η if |Σ_i sign(Δ_i,j)| ≥ θ else −η,   aggregate = lr ⊙ Σ_i p_i Δ_i,

    with p the normalised ``weights`` (num-examples, as the paper's FedAvg aggregate;
    uniform when None); the sign vote itself is one client, one vote. ``theta`` is the
    integer vote threshold θ in [0, n], the net agreement |Σ sign| needed to keep the
    sign; ``eta`` > 0 is η. Note that this lr multiplies the aggregate, on
    top of the strategy's own server_lr. Nothing is filtered. Flower has no built-in."""
    p = check_updates(updates, weights)
    n = updates.shape[0]
    theta = require_int("rlr", "theta", theta, low=0, high=n)
    eta = require_real("rlr", "eta", eta)
    if p is None:
        p = torch.full((n,), 1.0 / n, dtype=updates.dtype, device=updates.device)
    votes = torch.sign(updates).sum(dim=0)
    agree = votes.abs() >= theta
    # ±1 in the updates' dtype times the Python float eta: a float32 ±eta would round eta
    lr = torch.where(agree, 1.0, -1.0).to(updates.dtype) * eta
    return AggregationResult(
        aggregate=lr * (p @ updates),
        accepted=all_accepted(n),
        weights=p,
        info={"theta": theta, "eta": eta, "flipped": int((~agree).sum()), "d": updates.shape[1]},
    )
