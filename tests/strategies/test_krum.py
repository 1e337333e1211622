"""Krum and Multi-Krum (Blanchard et al., NeurIPS 2017, strategies/krum.py) against a brute-force
loop over the n − f − 2 nearest neighbours: scores, duplicates and ties, the n > 2f + 2
precondition, and Multi-Krum's mean of the m lowest scores."""

import numpy as np
import pytest
import torch

from strategies import bulyan, krum, multi_krum
from tests.strategies.seeded import gen, randn


def naive_krum_scores(x: np.ndarray, f: int, neighbours: int | None = None) -> list[float]:
    n = len(x)
    k = n - f - 2 if neighbours is None else neighbours
    scores = []
    for i in range(n):
        d = sorted(float(np.sum((x[i] - x[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(d[:k]))
    return scores


@pytest.mark.parametrize("n,f", [(7, 1), (10, 2), (15, 4), (5, 0)])
def test_krum_scores_match_brute_force(n, f):
    x = randn(n, 12, seed=n + f, dtype=torch.float64)
    expected = naive_krum_scores(x.numpy(), f)
    result = krum(x, f=f)
    np.testing.assert_allclose(result.info["scores"], expected, rtol=1e-10)
    best = int(np.argmin(expected))
    assert result.accepted.tolist() == [best]
    torch.testing.assert_close(result.aggregate, x[best])


def test_krum_with_duplicate_updates_excludes_self_by_index():
    x = randn(9, 8, seed=3, dtype=torch.float64)
    x[1] = x[0]
    x[5] = x[4]
    x[6] = x[4]
    expected = naive_krum_scores(x.numpy(), f=2)
    np.testing.assert_allclose(krum(x, f=2).info["scores"], expected, rtol=1e-9, atol=1e-12)
    assert krum(x, f=2).accepted.tolist() == [int(np.argmin(expected))]


def test_krum_score_ties_do_not_depend_on_row_order():
    # One neighbour (Krum with n = 3, f = 0; Bulyan's last picks): the two ends of the
    # closest pair always tie exactly; the tie-break must not be the row index.
    x = randn(3, 6, seed=80)
    scores = krum(x, f=0).info["scores"]
    assert sorted(scores)[0] == sorted(scores)[1]
    y = randn(7, 6, seed=81)
    picks, aggregates = set(), []
    for s in range(8):
        perm = torch.randperm(3, generator=gen(s))
        picks.add(int(perm[krum(x[perm], f=0).accepted[0]]))
        aggregates.append(bulyan(y[torch.randperm(7, generator=gen(s))], f=1).aggregate)
    assert len(picks) == 1
    for a in aggregates[1:]:
        torch.testing.assert_close(a, aggregates[0])


def test_krum_needs_strictly_more_than_2f_plus_2():
    with pytest.raises(ValueError, match="krum: f=3 needs n > 2f \\+ 2 = 8 clients, got n=8"):
        krum(randn(8, 4, seed=66), f=3)
    assert krum(randn(9, 4, seed=66), f=3).accepted.numel() == 1


def test_multi_krum_averages_the_m_lowest_scores():
    x = randn(11, 20, seed=4, dtype=torch.float64)
    scores = naive_krum_scores(x.numpy(), f=3)
    for m in (1, 4, None):
        mm = 11 - 3 if m is None else m
        chosen = sorted(np.argsort(scores, kind="stable")[:mm].tolist())
        result = multi_krum(x, f=3, m=m)
        assert result.accepted.tolist() == chosen
        torch.testing.assert_close(result.aggregate, x[chosen].mean(0))
    torch.testing.assert_close(multi_krum(x, f=3, m=1).aggregate, krum(x, f=3).aggregate)
