"""FoolsGold (Fung, Yoon, Beschastnikh, "The Limitations of Federated Learning in Sybil
Settings", RAID 2020)."""

from __future__ import annotations

import torch

from strategies.geometry import cosine_similarities, gram
from strategies.inputs import takes
from strategies.params import require_bool, require_real
from strategies.result import AggregationResult, check_finite, check_updates

# 1 − cos below this counts as parallel (cosines are float64, see strategies.geometry).
_PARALLEL = 1e-12


def foolsgold(
    updates: torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
    history: torch.Tensor,
    kappa: float = 1.0,
    normalize: bool = True,
) -> AggregationResult:
    """FoolsGold (Fung et al., RAID 2020, Algorithm 1) on the clients' historical updates
    H_i = Σ_t Δ_i,t (``history``, (n, d), same rows as ``updates``, this round included):

    1. cs_ij = cos(H_i, H_j) for j ≠ i; v_i = max_j cs_ij.
    2. Pardoning: if v_j > v_i, cs_ij ← cs_ij · v_i / v_j.
    3. α_i = 1 − max_j cs_ij, clipped to [0, 1] (below 1e-12, a float64 rounding of a parallel
       pair, it is 0); α ← α / max α.
    4. α_i ← κ (ln(α_i / (1 − α_i)) + 0.5), clipped to [0, 1] (α_i = 1 gives +∞ → 1,
       α_i = 0 gives −∞ → 0).
    5. Aggregate over this round's updates: Σ α_i Δ_i / Σ α_i when ``normalize`` (the
       default), Σ α_i Δ_i when not — the paper's rule, whose step the server learning rate
       then scales.

    As in the authors' code, the self similarity counts as 0 in the maxima (cs − I), so
    v_i ≥ 0 and the pardoning ratio is always defined. ``kappa`` > 0 is the logit confidence
    κ. ``normalize`` keeps the step size comparable with FedAvg's whatever the number of
    clients with α_i > 0; without it the step grows with that number, as in the paper. No
    f: FoolsGold assumes sybils share an objective and so push alike over rounds; sybils
    whose histories differ are not caught, and honest clients with similar data are
    penalised.

    ``accepted``: clients with α_i > 0; ``weights``: the coefficients of the Δ_i in the
    aggregate (α / Σ α, or α when not ``normalize``); ``info`` carries the raw α. If every
    α_i is 0 (e.g. all histories parallel) there is nothing to aggregate: ValueError, so the
    server keeps the global model and logs it.
    ``weights`` (num-examples) are validated but not used. Flower has no built-in."""
    check_updates(updates, weights)
    kappa = require_real("foolsgold", "kappa", kappa)
    normalize = require_bool("foolsgold", "normalize", normalize)
    if tuple(history.shape) != tuple(updates.shape):
        raise ValueError(
            f"foolsgold: history has shape {tuple(history.shape)}, expected {tuple(updates.shape)}"
        )
    check_finite("foolsgold: history", history)
    cs = cosine_similarities(gram(history)).fill_diagonal_(0.0)
    v = cs.max(dim=1).values
    pardon = v[None, :] > v[:, None]
    cs = torch.where(pardon, cs * v[:, None] / torch.where(pardon, v[None, :], 1.0), cs)
    alpha = (1.0 - cs.max(dim=1).values).clamp(0.0, 1.0)
    # Parallel histories have a float64 cosine of 1 − O(1e-16), not 1: such a weight is a
    # rounding of 0, and normalising by the largest α would otherwise blow it up to 1.
    alpha = torch.where(alpha < _PARALLEL, 0.0, alpha)
    if alpha.max() == 0:
        raise ValueError("foolsgold: every client has weight 0 (all histories alike); nothing to aggregate")
    alpha = alpha / alpha.max()
    alpha = (kappa * (torch.log(alpha / (1.0 - alpha)) + 0.5)).clamp(0.0, 1.0)
    p = (alpha / alpha.sum() if normalize else alpha).to(updates.dtype)
    return AggregationResult(
        aggregate=p @ updates,
        accepted=torch.nonzero(alpha > 0).flatten().cpu(),
        weights=p,
        info={"kappa": kappa, "normalize": normalize, "alpha": alpha.tolist()},
    )


takes("history")(foolsgold)
