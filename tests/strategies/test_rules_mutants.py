"""Cases the other rule tests left open, found by mutation testing (docs/mutants.md): each is
checked against a hand computation or an independent reference, like the rest of the suite."""

import math

import numpy as np
import pytest
import torch

from strategies import (
    bulyan,
    centered_clipping,
    dnc,
    flame,
    fltrust,
    foolsgold,
    geometric_median,
    krum,
    median,
    multi_krum,
    norm_clipping,
    rlr,
    trimmed_mean,
)
from tests.strategies.test_rules import gen, naive_foolsgold, randn, reference_rfa

# -- order statistics in low precision ---------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_median_of_half_precision_updates_is_an_exact_element(dtype):
    # odd n: the median is one of the values, so it is exact in any dtype
    x = randn(7, 30, seed=80).to(dtype)
    expected = np.median(x.float().numpy(), axis=0)
    result = median(x)
    assert result.aggregate.dtype == dtype
    np.testing.assert_array_equal(result.aggregate.float().numpy(), expected)


# -- geometric median ---------------------------------------------------------------------


def test_geometric_median_of_one_update_is_that_update():
    x = randn(1, 9, seed=81, dtype=torch.float64)
    result = geometric_median(x)
    torch.testing.assert_close(result.aggregate, x[0], rtol=0, atol=0)
    assert result.weights.tolist() == [1.0]
    # the first step moves v by 0 ≤ tol · 0: converged at once, not after max_iter
    assert result.info["iterations"] == 1 and result.info["converged"] is True


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


# -- FoolsGold -----------------------------------------------------------------------------


def test_foolsgold_with_no_similar_pair_weighs_everyone_equally():
    # pairwise orthogonal or opposed histories: every max similarity v_i is 0, nothing to
    # pardon (0/0 must not appear), α = 1 − 0 = 1 for all → logit(1) = +∞ → 1: the plain mean
    h = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]])
    x = randn(4, 3, seed=83)
    result = foolsgold(x, history=h)
    assert result.info["alpha"] == [1.0, 1.0, 1.0, 1.0]
    torch.testing.assert_close(result.aggregate, x.mean(0))


# -- info: what every rule records in rounds.jsonl, by hand -----------------------------


def test_krum_family_and_bulyan_record_their_parameters():
    x = randn(11, 6, seed=84)
    k = krum(x, f=2)
    assert k.info["f"] == 2 and k.info["selected"] == int(k.accepted[0])
    assert k.info["selected"] == int(np.argmin(k.info["scores"]))
    mk = multi_krum(x, f=2, m=4)
    assert (mk.info["f"], mk.info["m"]) == (2, 4) and len(mk.accepted) == 4
    assert multi_krum(x, f=3).info["m"] == 8  # default n − f
    b = bulyan(x, f=2)
    assert (b.info["f"], b.info["theta"], b.info["beta"]) == (2, 7, 3)


def test_trimmed_mean_rlr_and_dnc_record_their_parameters():
    x = randn(10, 8, seed=85)
    assert trimmed_mean(x, beta=0.25).info == {"beta": 0.25, "trimmed_each_side": 2}
    r = rlr(x, theta=3, eta=0.5)
    votes = torch.sign(x).sum(0).abs()
    assert r.info == {"theta": 3, "eta": 0.5, "flipped": int((votes < 3).sum()), "d": 8}
    assert dnc(x, f=2, c=1.5, niters=2, b=5, generator=gen(1)).info == {
        "removed_per_iter": 3, "b": 5, "niters": 2
    }


def test_clipping_rules_record_their_parameters():
    x = torch.tensor([[3.0, 4.0], [0.6, 0.8], [0.0, 0.0]])
    assert norm_clipping(x, tau=1.0, sigma=0.5, generator=gen(0)).info == {
        "tau": 1.0, "sigma": 0.5, "clipped": 1, "max_norm": 5.0
    }
    # from v = 0, L = 2: Δ − v has norms 5, 1, 0 → one clipped; v1 = ((0.6, 0.8) + (0.6, 0.8)) / 3
    # then Δ − v1 = (2.6, 3.47), (0.2, 0.27), (−0.4, −0.53): one norm above 1 in the last iteration
    result = centered_clipping(x, tau=1.0, L=2)
    assert result.info == {"tau": 1.0, "L": 2, "clipped_last_iter": 1}


def test_flame_fltrust_and_foolsgold_record_their_parameters():
    x = randn(6, 10, seed=86, dtype=torch.float64)
    x[:, 0] += 3.0
    fl = flame(x, lam=0.01, generator=gen(0))
    assert len(fl.info["labels"]) == 6 and fl.info["all_noise"] is False
    s_t = float(np.median(np.linalg.norm(x.numpy(), axis=1)))
    assert fl.info["S_t"] == pytest.approx(s_t, rel=1e-12) and fl.info["sigma"] == pytest.approx(0.01 * s_t)
    root = torch.tensor([3.0, 4.0] + [0.0] * 8, dtype=torch.float64)
    assert fltrust(x, root_update=root).info["root_norm"] == 5.0
    fg = foolsgold(x, history=x, kappa=2.0, normalize=False)
    assert fg.info["kappa"] == 2.0 and fg.info["normalize"] is False


# -- scale: cosines and norms below 1 -------------------------------------------------------


def test_fltrust_is_the_same_rule_at_small_norms():
    # the hand case of test_rules scaled by 0.1 (every norm, ‖g0‖ included, below 1): trust is
    # unchanged and the aggregate scales with g0
    g0 = torch.tensor([0.2, 0.0])
    x = 0.1 * torch.tensor([[3.0, 0.0], [0.0, 5.0], [1.0, 1.0], [-1.0, 0.0]])
    r = 1 / math.sqrt(2)
    expected = (torch.tensor([0.2, 0.0]) + r * torch.tensor([0.1 * math.sqrt(2)] * 2)) / (1 + r)
    result = fltrust(x, root_update=g0)
    torch.testing.assert_close(result.aggregate, expected)
    np.testing.assert_allclose(result.info["trust"], [1.0, 0.0, r, 0.0], atol=1e-7)


def test_foolsgold_cosines_at_small_norms():
    h = 1e-3 * randn(8, 12, seed=87, dtype=torch.float64)
    np.testing.assert_allclose(foolsgold(h, history=h).info["alpha"], naive_foolsgold(h.numpy()), atol=1e-9)


# -- noise ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.3, 1.0])
def test_noise_is_drawn_in_the_aggregates_dtype_from_the_generator(sigma):
    # float64 updates: the noise is torch.randn(d, dtype=float64) from the generator, scaled by σ
    x = randn(4, 64, seed=88, dtype=torch.float64)
    clean = norm_clipping(x, tau=1.0).aggregate
    noisy = norm_clipping(x, tau=1.0, sigma=sigma, generator=gen(5)).aggregate
    expected = clean + sigma * torch.randn(64, generator=gen(5), dtype=torch.float64)
    torch.testing.assert_close(noisy, expected, rtol=1e-14, atol=1e-14)
