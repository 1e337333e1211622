"""The geometric median by smoothed Weiszfeld — RFA (Pillutla et al., IEEE TSP 2022,
strategies/geometric_median.py): the objective, the Fermat point, one step by hand, and the
documented stop rule against a numpy reference with explicit distances."""

import math

import numpy as np
import pytest
import torch

from strategies import geometric_median, median
from tests.strategies.seeded import randn


def _objective(points: torch.Tensor, v: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(points.double() - v.double(), dim=1).sum())


def test_geometric_median_beats_mean_and_median_on_the_objective():
    x = randn(12, 15, seed=5)
    x[:3] += 20.0  # a few far points pull the mean away
    gm = geometric_median(x, max_iter=500, tol=1e-10)
    assert gm.info["converged"]
    obj = _objective(x, gm.aggregate)
    assert obj < _objective(x, x.mean(0))
    assert obj < _objective(x, median(x).aggregate)
    # a local minimum of a convex function: no small step improves it
    for seed in range(5):
        step = 1e-3 * randn(15, seed=100 + seed)
        assert obj <= _objective(x, gm.aggregate + step) + 1e-6


def test_geometric_median_of_isosceles_triangle_is_the_fermat_point():
    # A = (−1, 0), B = (1, 0), C = (0, 3): all angles < 120°, so the geometric median is the
    # Fermat point, on the axis where ∠AFB = 120°, i.e. (0, 1/√3); the mean is (0, 1).
    tri = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    d = 10
    q, _ = torch.linalg.qr(randn(d, d, seed=6, dtype=torch.float64))
    embed = q[:, :2]  # random orthonormal 2-plane in R^10, plus an offset
    offset = randn(d, seed=7, dtype=torch.float64)
    points = tri @ embed.T + offset
    gm = geometric_median(points, max_iter=2000, tol=1e-14, nu=1e-12)
    expected = torch.tensor([0.0, 1 / math.sqrt(3)], dtype=torch.float64) @ embed.T + offset
    torch.testing.assert_close(gm.aggregate, expected, atol=1e-6, rtol=0)


def test_geometric_median_weights_are_alphas():
    # A point holding more than half of the total weight is the weighted geometric median.
    x = randn(7, 9, seed=8, dtype=torch.float64)
    w = torch.tensor([6.0, 1, 1, 1, 1, 1, 1])
    gm = geometric_median(x, weights=w, max_iter=1000, tol=1e-14, nu=1e-10)
    torch.testing.assert_close(gm.aggregate, x[0], atol=1e-6, rtol=0)


def test_geometric_median_of_one_update_is_that_update():
    x = randn(1, 9, seed=81, dtype=torch.float64)
    result = geometric_median(x)
    torch.testing.assert_close(result.aggregate, x[0], rtol=0, atol=0)
    assert result.weights.tolist() == [1.0]
    # the first step moves v by 0 ≤ tol · 0: converged at once, not after max_iter
    assert result.info["iterations"] == 1 and result.info["converged"] is True


def test_geometric_median_one_step_from_the_coordinate_median():
    # max_iter = 1: one smoothed Weiszfeld step from the lower coordinate-wise median m,
    # β_i = α_i / max(ν, ‖m − x_i‖) — computed here by hand with numpy.
    x = randn(6, 9, seed=69, dtype=torch.float64)
    x[2] = torch.sort(x, dim=0).values[2]  # a row equal to m: its distance is 0 → ν
    w = torch.tensor([1.0, 2.0, 1.0, 3.0, 1.0, 2.0], dtype=torch.float64)
    xn, alpha = x.numpy(), (w / w.sum()).numpy()
    m = np.sort(xn, axis=0)[2]
    beta = alpha / np.maximum(1e-3, np.linalg.norm(xn - m, axis=1))
    result = geometric_median(x, weights=w, nu=1e-3, max_iter=1)
    assert result.info["iterations"] == 1
    np.testing.assert_allclose(result.weights.numpy(), beta / beta.sum(), rtol=1e-12)
    np.testing.assert_allclose(result.aggregate.numpy(), beta @ xn / beta.sum(), rtol=1e-12)
    v = beta @ xn / beta.sum()
    assert result.info["objective"] == pytest.approx(float(alpha @ np.linalg.norm(xn - v, axis=1)), rel=1e-12)


def test_geometric_median_tolerance_bounds_the_last_step():
    x = randn(9, 7, seed=70, dtype=torch.float64)
    exact = geometric_median(x, tol=1e-13, max_iter=10_000, nu=1e-12)
    assert exact.info["converged"]
    iterations = []
    for tol in (1e-1, 1e-3, 1e-6):
        result = geometric_median(x, tol=tol, max_iter=10_000, nu=1e-12)
        iterations.append(result.info["iterations"])
        spread = float(np.median(np.linalg.norm(x.numpy() - result.aggregate.numpy(), axis=1)))
        # Weiszfeld contracts; the distance left is within a few last steps of tol · spread
        assert float((result.aggregate - exact.aggregate).norm()) <= 20 * tol * spread
    assert iterations == sorted(iterations) and iterations[0] < iterations[-1]
    assert not geometric_median(x, tol=1e-13, max_iter=3).info["converged"]


# -- the stop rule against a reference -----------------------------------------------------


def reference_rfa(x: np.ndarray, alpha: np.ndarray, nu: float, tol: float, max_iter: int):
    """The documented rule with explicit distances: smoothed Weiszfeld from the lower
    coordinate-wise median; stop once ‖v_new − v‖ ≤ tol · (α-weighted median of ‖v_new − x_i‖)."""
    alpha = alpha / alpha.sum()
    v = np.sort(x, axis=0)[(len(x) - 1) // 2]
    for iteration in range(1, max_iter + 1):
        beta = alpha / np.maximum(nu, np.linalg.norm(x - v, axis=1))
        new = beta @ x / beta.sum()
        dist = np.linalg.norm(x - new, axis=1)
        order = np.argsort(dist)
        wmed = dist[order[np.searchsorted(np.cumsum(alpha[order]), 0.5)]]
        step, v = np.linalg.norm(new - v), new
        if step <= tol * wmed:
            return v, iteration
    return v, max_iter


@pytest.mark.parametrize("seed,tol", [(71, 1e-2), (72, 1e-4), (73, 1e-6)])
def test_geometric_median_follows_the_documented_stop_rule(seed, tol):
    x = randn(9, 11, seed=seed, dtype=torch.float64)
    x[:4] += 3.0  # a heavy group, so the weighted median distance is not the plain one
    w = torch.tensor([5.0, 5, 5, 5, 1, 1, 1, 1, 1], dtype=torch.float64)
    expected, iterations = reference_rfa(x.numpy(), w.numpy(), 1e-6, tol, 100)
    result = geometric_median(x, weights=w, tol=tol)
    assert result.info["iterations"] == iterations
    np.testing.assert_allclose(result.aggregate.numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("tol", [1e-2, 1e-4])
def test_geometric_median_stops_on_the_weighted_median_distance_not_another_quantile(tol):
    # A tight core of 3 of 9 points among widely spread ones: the 1/2-quantile of the
    # distances (a spread point) is far from the 1/3-quantile (a core point) and from the
    # largest, so another quantile in the stop rule moves the stopping iteration.
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((9, 11)))
    x[:3] *= 0.01
    x[3:] *= 5
    expected, iterations = reference_rfa(x.numpy(), np.ones(9), 1e-6, tol, 100)
    result = geometric_median(x, tol=tol)
    assert result.info["iterations"] == iterations
    np.testing.assert_allclose(result.aggregate.numpy(), expected, rtol=1e-10, atol=1e-12)
    # uniform α = 1/n: the objective is the mean distance to the result
    mean_distance = float(np.linalg.norm(x.numpy() - expected, axis=1).mean())
    assert result.info["objective"] == pytest.approx(mean_distance, rel=1e-12)


def test_geometric_median_weighted_median_can_be_the_farthest_distance():
    # one far client holds 7/13 > 1/2 of the weight: the α-weighted median distance is its
    # own, the largest one (the last index of the sorted distances)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((7, 5)))
    x[6] += 50
    w = torch.tensor([1.0] * 6 + [7.0], dtype=torch.float64)
    expected, iterations = reference_rfa(x.numpy(), w.numpy(), 1e-6, 0.1, 100)
    result = geometric_median(x, weights=w, tol=0.1)
    assert result.info["iterations"] == iterations
    np.testing.assert_allclose(result.aggregate.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_geometric_median_with_a_majority_of_one_far_from_the_attackers():
    # 6 honest rows near 0, 5 attackers at 1e8 in every coordinate: the lower median of each
    # column is the largest honest value, any higher order statistic is an attacker's, whose
    # centring would lose the honest rows' unit-scale distances in the Gram expansion.
    x = randn(11, 20, seed=82, dtype=torch.float64)
    x[6:] += 1e8
    expected, iterations = reference_rfa(x.numpy(), np.ones(11), 1e-6, 1e-6, 100)
    result = geometric_median(x)
    assert result.info["iterations"] == iterations
    np.testing.assert_allclose(result.aggregate.numpy(), expected, rtol=1e-9, atol=1e-6)
