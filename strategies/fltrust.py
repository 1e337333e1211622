"""FLTrust (Cao, Fang, Liu, Gong, "FLTrust: Byzantine-robust Federated Learning via Trust
Bootstrapping", NDSS 2021)."""

from __future__ import annotations

import torch

from strategies.geometry import gram, row_norms
from strategies.inputs import takes
from strategies.result import AggregationResult, check_finite, check_updates


def fltrust(
    updates: torch.Tensor, *, weights: torch.Tensor | None = None, root_update: torch.Tensor
) -> AggregationResult:
    """FLTrust (Cao et al., NDSS 2021) with the server's update g₀ on its clean root data
    (``root_update``, (d,)):

        TS_i = ReLU(cos(Δ_i, g₀)),   Δ̄_i = Δ_i · ‖g₀‖ / ‖Δ_i‖,   aggregate = Σ TS_i Δ̄_i / Σ TS_i.

    A zero update (or a zero g₀) has no direction and gets trust 0. ``accepted``: clients
    with TS_i > 0; ``weights``: TS normalised to sum 1. No f: the root data is the trust
    anchor, so any number of malicious clients is tolerated as long as g₀ points the right
    way. If every TS_i is 0 the paper's rule is undefined: ValueError, so the server keeps
    the global model for the round and logs why (some implementations silently fall back
    to FedAvg, which hands the round to the attacker). ``weights`` (num-examples) are
    validated but not used, as in the paper. Flower has no built-in."""
    check_updates(updates, weights)
    d = updates.shape[1]
    if tuple(root_update.shape) != (d,):
        raise ValueError(f"fltrust: root_update has shape {tuple(root_update.shape)}, expected ({d},)")
    check_finite("fltrust: root_update", root_update)
    g0 = root_update.to(dtype=updates.dtype, device=updates.device)
    g0_norm = float(row_norms(g0[None])[0])
    norms = row_norms(updates).to(torch.float64)
    dots = gram(updates, g0[None])[:, 0]
    usable = (norms > 0) & (g0_norm > 0)
    cos = torch.where(usable, dots / torch.where(usable, norms * g0_norm, 1.0), 0.0)
    trust = cos.clamp_min(0.0)
    if trust.sum() == 0:
        raise ValueError(
            "fltrust: every client has zero trust (no update has a positive cosine with the "
            "root update); the global model is kept this round"
        )
    scale = torch.where(usable, g0_norm / torch.where(usable, norms, 1.0), 0.0)
    p = trust / trust.sum()
    return AggregationResult(
        aggregate=(p * scale).to(updates.dtype) @ updates,
        accepted=torch.nonzero(trust > 0).flatten().cpu(),
        weights=p.to(updates.dtype),
        info={"trust": trust.tolist(), "root_norm": g0_norm},
    )


takes("root_update")(fltrust)
