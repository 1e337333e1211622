"""Bulyan (El Mhamdi, Guerraoui, Rouault, "The Hidden Vulnerability of Distributed Learning in
Byzantium", ICML 2018) over Krum."""

from __future__ import annotations

import torch

from strategies.geometry import squared_distances
from strategies.krum import krum_order
from strategies.median import coordinate_sort, sorted_median
from strategies.params import require_int
from strategies.result import AggregationResult, check_updates


def bulyan(updates: torch.Tensor, *, weights: torch.Tensor | None = None, f: int) -> AggregationResult:
    """Bulyan over Krum (El Mhamdi et al., ICML 2018); needs n ≥ 4f + 3 (ValueError otherwise),
    ``f`` being the number of malicious clients assumed.

    1. Selection, θ = n − 2f updates by *iterated* Krum: score the remaining set R (sum of
       squared distances to the |R| − f − 2 nearest others), move the lowest-scoring update
       from R to the selection, re-score the smaller R, repeat θ times. In the last steps
       |R| falls to 2f + 1, below Krum's own n > 2f + 2: there the neighbour count is
       clamped to at least 1 (as Flower's ``select_multikrum`` does for small sets) and a
       lone remaining update is taken as is. Ties in the score (systematic where the
       neighbour count is 1) go to the update nearer to all of R (see ``krum_order``).
    2. Per coordinate, the mean of the β = θ − 2f selected values closest to the median of
       the θ selected values (even θ: mean of the two middle ones, as ``numpy.median``).

    ``accepted``: the θ selected rows. ``weights`` (num-examples) are validated but not used.

    Intended difference from Flower's ``Bulyan``: Flower selects the θ updates in one shot,
    the θ lowest Krum scores on the full set (``select_multikrum``). Removing a selected
    update changes the others' neighbours, so the paper's iterated selection can pick a
    different set."""
    check_updates(updates, weights)
    n = updates.shape[0]
    f = require_int("bulyan", "f", f)
    if n < 4 * f + 3:
        raise ValueError(f"bulyan: f={f} needs n >= 4f + 3 = {4 * f + 3} clients, got n={n}")
    theta, beta = n - 2 * f, n - 4 * f

    dist = squared_distances(updates)
    remaining, selected = list(range(n)), []
    for _ in range(theta):
        r = len(remaining)
        ranking, _ = krum_order(dist[remaining][:, remaining], min(max(1, r - f - 2), r - 1))
        selected.append(remaining.pop(int(ranking[0])))

    ordered = coordinate_sort(updates[selected])
    med = sorted_median(ordered)
    # The β values nearest the median form a contiguous window of the sorted column; pick the
    # window whose farther end is nearest the median (the lowest window on ties).
    starts = theta - beta + 1
    reach = torch.maximum(med - ordered[:starts], ordered[beta - 1 :] - med)
    start = reach.argmin(dim=0)
    rows = torch.arange(theta, device=ordered.device)[:, None]
    window = (rows >= start) & (rows < start + beta)
    aggregate = torch.where(window, ordered, 0).sum(dim=0) / beta
    return AggregationResult(
        aggregate=aggregate,
        accepted=torch.tensor(sorted(selected), dtype=torch.long),
        info={"f": f, "theta": theta, "beta": beta, "selection_order": selected},
    )
