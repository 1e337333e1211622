"""FLAME (Nguyen, Rieger, Chen, Yalame, Möllering, Fereidooni, Marchal, Miettinen, Mirhoseini,
Zeitouni, Koushanfar, Sadeghi, Schneider, "FLAME: Taming Backdoors in Federated Learning",
USENIX Security 2022)."""

from __future__ import annotations

import torch

from strategies.clipping import add_gaussian_noise, clip_factors
from strategies.geometry import cosine_similarities, gram
from strategies.inputs import takes
from strategies.params import require_real
from strategies.result import AggregationResult, all_accepted, check_updates


def flame(
    updates: torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
    lam: float = 0.001,
    generator: torch.Generator | None = None,
) -> AggregationResult:
    """FLAME (Nguyen et al., USENIX Security 2022):

    1. HDBSCAN on the pairwise cosine distances 1 − cos(Δ_i, Δ_j) (float64, precomputed),
       min_cluster_size = ⌊n/2⌋ + 1, min_samples = 1, allow_single_cluster; keep the
       clients of the largest cluster (those HDBSCAN calls noise are dropped too, even
       honest ones at the cluster's edge, as in the paper). Being at least ⌊n/2⌋ + 1
       strong, that cluster is a majority: FLAME assumes fewer than n/2 malicious clients
       (no f to set).
    2. S_t = median of ‖Δ_i‖ over *all* n updates (even n: mean of the two middle norms);
       clip every kept update to S_t: Δ_i · min(1, S_t/‖Δ_i‖).
    3. Aggregate = unweighted mean of the kept clipped updates + N(0, (λ S_t)²) on every
       coordinate, drawn from ``generator``; ``lam`` ≥ 0 is λ (0.001 in the paper for image
       models).

    If HDBSCAN labels every client noise (no cluster of ⌊n/2⌋ + 1), no majority exists to
    prefer: all clients are kept (still clipped and noised) and ``info["all_noise"]`` is
    True so the run records it. Needs n ≥ 2 (ValueError otherwise). The paper clusters the
    local models; like most implementations we cluster the updates Δ_i = w_i − w_global,
    whose cosines are not swamped by the shared global weights. A zero update has cosine 0 to
    everything. ``weights`` (num-examples) are validated but not used. Flower has no
    built-in."""
    check_updates(updates, weights)
    n = updates.shape[0]
    lam = require_real("flame", "lam", lam, strict=False)
    if n < 2:
        raise ValueError(f"flame: needs n >= 2 clients to cluster, got n={n}")
    g = gram(updates)
    cosine_distance = (1.0 - cosine_similarities(g)).clamp(0.0, 2.0).fill_diagonal_(0.0)
    # Imported here: scikit-learn (and the scipy.stats it loads) costs seconds to import, paid
    # by every ClientApp process the Deployment Engine starts, which never runs a rule.
    from sklearn.cluster import HDBSCAN

    labels = HDBSCAN(
        metric="precomputed",
        min_cluster_size=n // 2 + 1,
        min_samples=1,
        allow_single_cluster=True,
        copy=True,
    ).fit_predict(cosine_distance.cpu().numpy())
    labels = torch.as_tensor(labels, dtype=torch.long)
    clustered = labels[labels >= 0]
    all_noise = clustered.numel() == 0
    if all_noise:
        accepted = all_accepted(n)
    else:
        counts = torch.bincount(clustered)
        accepted = torch.nonzero(labels == int(counts.argmax())).flatten()

    norms = g.diagonal().sqrt()
    s_t = float(torch.quantile(norms, 0.5))
    kept = updates[accepted.to(updates.device)]
    factors = clip_factors(norms[accepted.to(norms.device)], s_t).to(updates.dtype)
    sigma = lam * s_t
    aggregate = add_gaussian_noise(factors @ kept / kept.shape[0], sigma, generator)
    return AggregationResult(
        aggregate=aggregate,
        accepted=accepted,
        info={"labels": labels.tolist(), "all_noise": all_noise, "S_t": s_t, "sigma": sigma},
    )


takes("generator")(flame)
