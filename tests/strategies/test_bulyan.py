"""Bulyan (El Mhamdi et al., ICML 2018, strategies/bulyan.py) against a naive implementation of
the paper: iterated Krum selection, then the β values closest to each coordinate's median."""

import numpy as np
import pytest
import torch

from strategies import bulyan
from tests.strategies.seeded import randn
from tests.strategies.test_krum import naive_krum_scores


def naive_bulyan(x: np.ndarray, f: int) -> tuple[np.ndarray, list[int]]:
    """El Mhamdi et al. 2018: iterated Krum selection of θ = n − 2f (neighbours clamped to
    ≥ 1 once |R| − f − 2 < 1), then per coordinate the mean of the β = θ − 2f values closest
    to the median."""
    n, d = x.shape
    theta, beta = n - 2 * f, n - 4 * f
    remaining, selected = list(range(n)), []
    while len(selected) < theta:
        r = len(remaining)
        k = min(max(1, r - f - 2), r - 1)
        sub = x[remaining]
        scores = naive_krum_scores(sub, f, neighbours=k)
        # exact ties (the closest pair when k = 1): nearer to all of R wins, then index
        totals = [sum(float(np.sum((a - b) ** 2)) for b in sub) for a in sub]
        selected.append(remaining.pop(min(range(r), key=lambda i: (scores[i], totals[i], i))))
    chosen = x[selected]
    out = np.empty(d)
    for j in range(d):
        col = chosen[:, j]
        med = np.median(col)
        closest = sorted(col, key=lambda v: abs(v - med))[:beta]
        out[j] = np.mean(closest)
    return out, selected


@pytest.mark.parametrize("n,f,seed", [(7, 1, 0), (8, 1, 1), (11, 2, 2), (15, 3, 3), (12, 2, 4), (5, 0, 5)])
def test_bulyan_matches_naive_paper_implementation(n, f, seed):
    x = randn(n, 17, seed=seed, dtype=torch.float64)
    expected, selected = naive_bulyan(x.numpy(), f)
    result = bulyan(x, f=f)
    assert result.info["selection_order"] == selected
    assert result.accepted.tolist() == sorted(selected)
    np.testing.assert_allclose(result.aggregate.numpy(), expected, rtol=1e-12)


def test_bulyan_float32_matches_float64_reference():
    x = randn(11, 300, seed=9)
    expected, _ = naive_bulyan(x.double().numpy(), 2)
    np.testing.assert_allclose(bulyan(x, f=2).aggregate.numpy(), expected, atol=1e-6)


def test_bulyan_names_itself_and_f_in_a_bad_f():
    from strategies import bulyan

    with pytest.raises(ValueError, match=r"^bulyan: f=1\.5 must be an integer >= 0$"):
        bulyan(torch.randn(9, 3), f=1.5)
