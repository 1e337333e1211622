"""Coordinate-wise median (Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed
Learning: Towards Optimal Statistical Rates", ICML 2018), and the per-coordinate sort that the
order-statistic rules (median, trimmed mean, Bulyan) share."""

from __future__ import annotations

import numpy as np
import torch

from strategies.result import AggregationResult, all_accepted, check_updates


def coordinate_sort(updates: torch.Tensor) -> torch.Tensor:
    """The (n, d) updates with every column sorted ascending (a copy)."""
    if updates.device.type == "cpu" and updates.dtype in (torch.float32, torch.float64):
        # numpy's vectorised sort along axis 0 is much faster than torch's on CPU: 0.6 s
        # against 7 s for torch.sort(dim=0) on a (50, 3.5M) float32 tensor, 2 cores.
        return torch.from_numpy(np.sort(updates.detach().numpy(), axis=0))
    return torch.sort(updates, dim=0).values


def sorted_median(ordered: torch.Tensor) -> torch.Tensor:
    """Per-column median of column-sorted rows; even n: the mean of the two middle values
    (as ``numpy.median``; ``torch.median`` would return the lower one)."""
    n = ordered.shape[0]
    if n % 2:
        return ordered[n // 2].clone()
    return (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def median(updates: torch.Tensor, *, weights: torch.Tensor | None = None) -> AggregationResult:
    """Coordinate-wise median of the updates (Yin et al., ICML 2018); for even n each
    coordinate is the mean of its two middle values. Nothing is filtered: every client is
    accepted. ``weights`` (num-examples) are validated but not used.

    Robust while fewer than half the clients are malicious in every coordinate; no f to
    set. Same rule as Flower's ``FedMedian`` (``numpy.median`` over the replies)."""
    check_updates(updates, weights)
    return AggregationResult(
        aggregate=sorted_median(coordinate_sort(updates)), accepted=all_accepted(updates.shape[0])
    )
