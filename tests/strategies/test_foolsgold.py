"""FoolsGold (Fung et al., RAID 2020, strategies/foolsgold.py) against the authors' algorithm
written here in numpy: sybils zeroed, κ, normalised weights or the paper's sum, small norms,
and every client weighted 0 refused with a message."""

import numpy as np
import pytest
import torch

from strategies import foolsgold
from tests.strategies.seeded import gen, randn


def naive_foolsgold(h: np.ndarray, kappa: float = 1.0) -> np.ndarray:
    """The authors' FoolsGold code (cs − I, pardoning, 1 − max, normalise, logit)."""
    n = len(h)
    cs = np.array([[h[i] @ h[j] / (np.linalg.norm(h[i]) * np.linalg.norm(h[j])) for j in range(n)]
                   for i in range(n)]) - np.eye(n)
    maxcs = cs.max(axis=1)
    for i in range(n):
        for j in range(n):
            if i != j and maxcs[i] < maxcs[j]:
                cs[i][j] = cs[i][j] * maxcs[i] / maxcs[j]
    wv = np.clip(1 - cs.max(axis=1), 0, 1)
    wv = wv / wv.max()
    with np.errstate(divide="ignore"):
        wv = kappa * (np.log(wv / (1 - wv)) + 0.5)
    return np.clip(wv, 0, 1)


def test_foolsgold_matches_authors_algorithm_and_zeroes_sybils():
    g = gen(15)
    honest = torch.randn(6, 30, generator=g, dtype=torch.float64)
    sybil = torch.randn(30, generator=g, dtype=torch.float64)
    sybil = sybil + 0.01 * torch.randn(4, 30, generator=g, dtype=torch.float64)
    history = torch.cat([honest[:3], sybil, honest[3:]])
    updates = history / 3 + 0.1 * torch.randn(10, 30, generator=g, dtype=torch.float64)
    result = foolsgold(updates, history=history)
    alpha = np.array(result.info["alpha"])
    np.testing.assert_allclose(alpha, naive_foolsgold(history.numpy()), atol=1e-9)
    assert (alpha[3:7] < 1e-6).all() and (alpha[[0, 1, 2, 7, 8, 9]] > 0.5).all()
    assert result.accepted.tolist() == [i for i in range(10) if alpha[i] > 0]
    expected = (torch.from_numpy(alpha)[:, None] * updates).sum(0) / alpha.sum()
    torch.testing.assert_close(result.aggregate, expected)


def test_foolsgold_kappa_and_all_zero_weights():
    h = randn(8, 12, seed=16, dtype=torch.float64)
    for kappa in (0.5, 2.0):
        np.testing.assert_allclose(foolsgold(h, history=h, kappa=kappa).info["alpha"],
                                   naive_foolsgold(h.numpy(), kappa), atol=1e-9)
    same = randn(12, seed=17).repeat(5, 1)
    with pytest.raises(ValueError, match="foolsgold: every client has weight 0"):
        foolsgold(same, history=same)


def test_foolsgold_normalize_hand_case():
    # histories (1,0), (1,0), (0,1), (−1,1): the two parallel sybils have cs = 1 → α = 0;
    # clients 2 and 3 have max cs = cos 45° (no pardoning: equal maxima) → α = 1 − 1/√2,
    # normalised by the max to 1, logit(1) = +∞ → clipped to 1.
    history = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
    updates = randn(4, 2, seed=63, dtype=torch.float64)
    paper = foolsgold(updates, history=history, normalize=False)
    assert paper.info["alpha"] == [0.0, 0.0, 1.0, 1.0]
    torch.testing.assert_close(paper.aggregate, updates[2] + updates[3])
    torch.testing.assert_close(paper.weights, torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64))
    normalised = foolsgold(updates, history=history)
    torch.testing.assert_close(normalised.aggregate, (updates[2] + updates[3]) / 2)
    assert normalised.accepted.tolist() == paper.accepted.tolist() == [2, 3]
    with pytest.raises(ValueError, match="foolsgold: normalize='no' must be true or false"):
        foolsgold(updates, history=history, normalize="no")


def test_foolsgold_paper_sum_against_reference_alphas():
    g = gen(64)
    history = torch.randn(7, 20, generator=g, dtype=torch.float64)
    updates = torch.randn(7, 20, generator=g, dtype=torch.float64)
    alpha = torch.from_numpy(naive_foolsgold(history.numpy(), 0.3))
    assert ((0 < alpha) & (alpha < 1)).sum() >= 3  # intermediate weights, Σ α ≠ 1
    torch.testing.assert_close(foolsgold(updates, history=history, kappa=0.3, normalize=False).aggregate,
                               alpha @ updates)
    torch.testing.assert_close(foolsgold(updates, history=history, kappa=0.3).aggregate,
                               alpha @ updates / alpha.sum())


def test_foolsgold_with_no_similar_pair_weighs_everyone_equally():
    # pairwise orthogonal or opposed histories: every max similarity v_i is 0, nothing to
    # pardon (0/0 must not appear), α = 1 − 0 = 1 for all → logit(1) = +∞ → 1: the plain mean
    h = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]])
    x = randn(4, 3, seed=83)
    result = foolsgold(x, history=h)
    assert result.info["alpha"] == [1.0, 1.0, 1.0, 1.0]
    torch.testing.assert_close(result.aggregate, x.mean(0))


def test_foolsgold_cosines_at_small_norms():
    h = 1e-3 * randn(8, 12, seed=87, dtype=torch.float64)
    np.testing.assert_allclose(foolsgold(h, history=h).info["alpha"], naive_foolsgold(h.numpy()), atol=1e-9)


def test_foolsgold_all_alike_error_message():
    # parallel histories: cos = 1, alpha = 1 - 1 = 0 for both
    updates = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    with pytest.raises(ValueError, match=r"^foolsgold: every client has weight 0 .*nothing to aggregate$"):
        foolsgold(updates, history=updates.clone())


def test_foolsgold_identical_histories_have_zero_weight():
    updates = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match="every client has weight 0"):
        foolsgold(updates, history=updates.clone())
