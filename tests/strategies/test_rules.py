"""Every aggregation rule against something independent: a hand-computed case, a naive loop
implementation of the paper written here, a closed form, or a property only the right rule
has. Data is non-collinear random (fixed generators) unless a hand case needs otherwise."""

import importlib
import math

import numpy as np
import pytest
import scipy.stats
import torch

from strategies import (
    RULES,
    bulyan,
    centered_clipping,
    dnc,
    fedavg,
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
from strategies.geometry import cosine_similarities, gram, row_norms, squared_distances


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- naive reference implementations (loops, numpy, float64) -------------------------------


def naive_krum_scores(x: np.ndarray, f: int, neighbours: int | None = None) -> list[float]:
    n = len(x)
    k = n - f - 2 if neighbours is None else neighbours
    scores = []
    for i in range(n):
        d = sorted(float(np.sum((x[i] - x[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(d[:k]))
    return scores


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


# -- shared geometry ----------------------------------------------------------------------


def test_geometry_is_accurate_for_large_d_and_near_duplicates():
    x = randn(4, 300_000, seed=70)
    x[1] = x[0] + 1e-3 * randn(300_000, seed=71)  # a near-duplicate (sybil-like) pair
    ref = x.double().numpy()
    dist = squared_distances(x).numpy()
    for i in range(4):
        for j in range(4):
            np.testing.assert_allclose(dist[i, j], np.sum((ref[i] - ref[j]) ** 2), rtol=1e-6)
    np.testing.assert_allclose(row_norms(x).numpy(), np.linalg.norm(ref, axis=1), rtol=1e-6)
    cos = cosine_similarities(gram(x)).numpy()
    np.testing.assert_allclose(cos[0, 1], ref[0] @ ref[1] / np.linalg.norm(ref[0]) / np.linalg.norm(ref[1]),
                               rtol=1e-12)
    assert (gram(x) == gram(x).T).all()


# -- median, trimmed mean ------------------------------------------------------------------


def test_median_even_n_is_mean_of_two_middle_values():
    x = torch.tensor([[1.0, -4.0], [2.0, 10.0], [3.0, 0.0], [10.0, 1.0]])
    torch.testing.assert_close(median(x).aggregate, torch.tensor([2.5, 0.5]))
    for n in (7, 8):
        x = randn(n, 30, seed=n)
        torch.testing.assert_close(median(x).aggregate, torch.from_numpy(np.median(x.numpy(), axis=0)))
        assert median(x).accepted.tolist() == list(range(n))


def test_trimmed_mean_hand_case_and_scipy():
    x = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0], [100.0, -100.0]])
    # β = 0.2 of n = 5 → 1 cut at each end: (2+3+4)/3 and (10+20+30)/3
    result = trimmed_mean(x, beta=0.2)
    torch.testing.assert_close(result.aggregate, torch.tensor([3.0, 20.0]))
    assert result.info["trimmed_each_side"] == 1
    x = randn(13, 25, seed=1)
    for beta in (0.0, 0.1, 0.25, 0.3, 0.49):  # 0.3 · 13 = 3.9: k = 3, not rounded to 4
        expected = scipy.stats.trim_mean(x.numpy().astype(np.float64), beta, axis=0)
        torch.testing.assert_close(trimmed_mean(x, beta=beta).aggregate, torch.from_numpy(expected).float())


# -- Krum, Multi-Krum ----------------------------------------------------------------------


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


# -- Bulyan --------------------------------------------------------------------------------


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


# -- geometric median ----------------------------------------------------------------------


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


# -- clipping ------------------------------------------------------------------------------


def test_norm_clipping_bounds_norms_and_weights_like_fedavg():
    x = randn(9, 20, seed=10) * torch.linspace(0.1, 5, 9)[:, None]
    tau = 1.5
    w = torch.arange(1.0, 10.0)
    clipped = torch.stack([u * min(1.0, tau / float(u.norm())) for u in x])
    assert (clipped.norm(dim=1) <= tau + 1e-5).all()
    expected = (w[:, None] * clipped).sum(0) / w.sum()
    result = norm_clipping(x, weights=w, tau=tau)
    torch.testing.assert_close(result.aggregate, expected)
    assert float(result.aggregate.norm()) <= tau + 1e-5
    assert result.info["clipped"] == int((x.norm(dim=1) > tau).sum())


def test_norm_clipping_noise_has_std_sigma_and_follows_the_generator():
    x = randn(5, 50_000, seed=11)
    clean = norm_clipping(x, tau=1.0).aggregate
    a = norm_clipping(x, tau=1.0, sigma=0.1, generator=gen(3)).aggregate
    b = norm_clipping(x, tau=1.0, sigma=0.1, generator=gen(3)).aggregate
    torch.testing.assert_close(a, b)
    noise = a - clean
    assert abs(float(noise.std()) - 0.1) < 0.002 and abs(float(noise.mean())) < 0.002


def test_centered_clipping_hand_case_with_previous():
    x = torch.tensor([[1.0, 0.0], [4.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
    v0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    # Δ − v0 = (0,0), (3,0) → clipped to (1,0), (0,2) → clipped to (0,1); v = v0 + mean
    result = centered_clipping(x, tau=1.0, previous=v0)
    torch.testing.assert_close(result.aggregate, torch.tensor([4 / 3, 1 / 3], dtype=torch.float64))
    # L = 2 by a naive loop
    v = v0.clone()
    for _ in range(2):
        v = v + sum((u - v) * min(1.0, 1.0 / float((u - v).norm())) if float((u - v).norm()) > 0 else u - v
                    for u in x) / 3
    torch.testing.assert_close(centered_clipping(x, tau=1.0, L=2, previous=v0).aggregate, v)
    # no previous aggregate: v0 = 0
    torch.testing.assert_close(
        centered_clipping(x, tau=1.0).aggregate,
        centered_clipping(x, tau=1.0, previous=torch.zeros(2, dtype=torch.float64)).aggregate,
    )


# -- FLAME ---------------------------------------------------------------------------------


def _flame_case():
    g = gen(12)
    base = torch.randn(40, generator=g)
    honest = base + 0.3 * torch.randn(10, 40, generator=g)
    malicious = -base + 0.3 * torch.randn(4, 40, generator=g)
    x = torch.cat([malicious[:2], honest, malicious[2:]])
    return x, list(range(2, 12))


def test_flame_drops_the_opposite_group_and_clips_to_median_norm():
    x, honest = _flame_case()
    x[3] *= 10.0  # a scaled honest update: same direction, clipped not dropped
    result = flame(x, lam=0.0)
    accepted = result.accepted.tolist()
    # HDBSCAN may also call the edge of the honest cluster noise; the kept cluster is a
    # majority (⌊n/2⌋ + 1) and holds no opposite-direction update.
    assert set(accepted) <= set(honest) and len(accepted) >= len(x) // 2 + 1
    assert 3 in accepted and not result.info["all_noise"]
    norms = x.norm(dim=1)
    s_t = float(np.median(norms.numpy().astype(np.float64)))
    assert result.info["S_t"] == pytest.approx(s_t)
    expected = torch.stack([x[i] * min(1.0, s_t / float(norms[i])) for i in accepted]).mean(0)
    torch.testing.assert_close(result.aggregate, expected)


def test_flame_noise_is_lambda_times_median_norm():
    x = randn(6, 40_000, seed=13)
    clean = flame(x, lam=0.0)
    noisy = flame(x, lam=0.01, generator=gen(1))
    assert noisy.accepted.tolist() == clean.accepted.tolist()
    assert noisy.info["sigma"] == pytest.approx(0.01 * clean.info["S_t"])
    std = float((noisy.aggregate - clean.aggregate).std())
    assert std == pytest.approx(noisy.info["sigma"], rel=0.03)


def test_flame_all_noise_keeps_everyone_and_says_so(monkeypatch):
    class AllNoise:
        def __init__(self, **kwargs):
            pass

        def fit_predict(self, distances):
            return np.full(len(distances), -1)

    monkeypatch.setattr(importlib.import_module("sklearn.cluster"), "HDBSCAN", AllNoise)
    result = flame(randn(5, 8, seed=14), lam=0.0)
    assert result.info["all_noise"] and result.accepted.tolist() == [0, 1, 2, 3, 4]


# -- FoolsGold -----------------------------------------------------------------------------


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


# -- FLTrust -------------------------------------------------------------------------------


def test_fltrust_hand_case():
    g0 = torch.tensor([2.0, 0.0])
    x = torch.tensor([[3.0, 0.0], [0.0, 5.0], [1.0, 1.0], [-1.0, 0.0]])
    # trust: 1, 0, 1/√2, 0 — rescaled to ‖g0‖ = 2: (2, 0) and (√2, √2)
    r = 1 / math.sqrt(2)
    expected = (1.0 * torch.tensor([2.0, 0.0]) + r * torch.tensor([math.sqrt(2), math.sqrt(2)])) / (1 + r)
    result = fltrust(x, root_update=g0)
    torch.testing.assert_close(result.aggregate, expected)
    assert result.accepted.tolist() == [0, 2]
    np.testing.assert_allclose(result.info["trust"], [1.0, 0.0, r, 0.0], atol=1e-7)


def test_fltrust_all_zero_trust_raises():
    x = torch.tensor([[-1.0, 0.0], [0.0, 1.0], [-2.0, -3.0]])
    with pytest.raises(ValueError, match="fltrust: every client has zero trust"):
        fltrust(x, root_update=torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="fltrust: every client has zero trust"):
        fltrust(x, root_update=torch.zeros(2))


# -- RLR -----------------------------------------------------------------------------------


def test_rlr_hand_case_on_signs():
    x = torch.tensor([
        [1.0, 1.0, 2.0, 0.0],
        [2.0, -1.0, 1.0, 0.0],
        [1.0, 1.0, 3.0, 1.0],
        [4.0, -3.0, -2.0, 1.0],
    ])
    # Σ sign per coordinate: 4, 0, 2, 2 → with θ = 2: +, −, +, +; with θ = 3: +, −, −, −
    mean = x.mean(0)
    torch.testing.assert_close(rlr(x, theta=2).aggregate, mean * torch.tensor([1.0, -1, 1, 1]))
    result = rlr(x, theta=3, eta=0.5)
    torch.testing.assert_close(result.aggregate, 0.5 * mean * torch.tensor([1.0, -1, -1, -1]))
    assert result.info["flipped"] == 3
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    torch.testing.assert_close(rlr(x, weights=w, theta=2).aggregate,
                               (w @ x) / 10 * torch.tensor([1.0, -1, 1, 1]))


# -- DnC -----------------------------------------------------------------------------------


def test_dnc_drops_a_shifted_group():
    g = gen(18)
    honest = torch.randn(12, 60, generator=g)
    shifted = torch.randn(3, 60, generator=g) + 3.0 * torch.randn(60, generator=g)
    x = torch.cat([honest[:5], shifted, honest[5:]])
    result = dnc(x, f=3, b=40, generator=gen(0))
    assert result.accepted.tolist() == [0, 1, 2, 3, 4] + list(range(8, 15))
    torch.testing.assert_close(result.aggregate, honest.mean(0))


# -- properties shared by all rules --------------------------------------------------------

N, D = 11, 24


def _params(name: str, x: torch.Tensor, seed: int = 0) -> dict:
    """Paper parameters and stateful inputs for every rule in RULES (a missing rule fails)."""
    return {
        "fedavg": {},
        "median": {},
        "trimmed_mean": {"beta": 0.2},
        "krum": {"f": 2},
        "multi_krum": {"f": 2, "m": 5},
        "bulyan": {"f": 2},
        "geometric_median": {},
        "norm_clipping": {"tau": 2.0, "sigma": 0.0, "generator": gen(seed)},
        "centered_clipping": {"tau": 2.0, "L": 3, "previous": x.mean(0) * 0.5},
        "flame": {"lam": 0.0, "generator": gen(seed)},
        "foolsgold": {"history": x * 2 + 0.5},
        "fltrust": {"root_update": x.mean(0)},
        "rlr": {"theta": 4},
        "dnc": {"f": 2, "b": 10, "generator": gen(seed)},
        # a linear "model" with 4 probe inputs and 8-d embeddings
        "eminspector": {"embed": lambda u: (randn(32, D, seed=seed + 1, dtype=u.dtype) @ u).view(4, 8)},
    }[name]


def _permuted(params: dict, perm: torch.Tensor) -> dict:
    return {k: v[perm] if k == "history" else v for k, v in params.items()}


@pytest.mark.parametrize("name", sorted(RULES))
def test_contract_shape_dtype_accepted(name):
    x = randn(N, D, seed=19)
    x[:, 0] += 1.0  # shared direction so every rule has something to agree on
    result = RULES[name](x, weights=torch.arange(1.0, N + 1), **_params(name, x))
    assert result.aggregate.shape == (D,) and result.aggregate.dtype == x.dtype
    assert torch.isfinite(result.aggregate).all()
    acc = result.accepted
    assert acc.dtype == torch.int64 and acc.ndim == 1 and len(acc) >= 1
    assert acc.tolist() == sorted(set(acc.tolist())) and 0 <= acc.min() and acc.max() < N
    if result.weights is not None:
        assert result.weights.shape == (N,)
    for v in result.info.values():
        assert isinstance(v, (int, float, bool, str, list, type(None)))


@pytest.mark.parametrize("name", sorted(RULES))
def test_permutation_invariance(name):
    x = randn(N, D, seed=20)
    x[:, 0] += 1.0
    perm = torch.randperm(N, generator=gen(21))
    a = RULES[name](x, **_params(name, x))
    b = RULES[name](x[perm], **_permuted(_params(name, x), perm))
    torch.testing.assert_close(b.aggregate, a.aggregate, atol=1e-5, rtol=1e-5)
    assert sorted(perm[b.accepted].tolist()) == a.accepted.tolist()


@pytest.mark.parametrize("name", ["krum", "multi_krum", "bulyan", "flame", "dnc"])
def test_far_outlier_is_never_accepted(name):
    for seed in range(5):
        x = randn(N, D, seed=30 + seed)
        x[:, 0] += 2.0
        bad = seed % N
        x[bad] = 1e3 * randn(D, seed=40 + seed)
        assert bad not in RULES[name](x, **_params(name, x, seed)).accepted.tolist()


@pytest.mark.parametrize(
    "rule,n,kwargs,message",
    [
        (krum, 7, {"f": 3}, "krum: f=3 needs n > 2f + 2 = 8 clients, got n=7"),
        (krum, 7, {"f": -1}, "krum: f=-1 must be an integer >= 0"),
        (krum, 7, {"f": 1.5}, "krum: f=1.5 must be an integer"),
        (krum, 7, {"f": True}, "krum: f=True must be an integer"),
        (multi_krum, 8, {"f": 3}, "multi_krum: f=3 needs n > 2f + 2 = 8 clients, got n=8"),
        (multi_krum, 8, {"f": 1, "m": 0}, "multi_krum: m=0 must be an integer in [1, 8]"),
        (multi_krum, 8, {"f": 1, "m": 9}, "multi_krum: m=9 must be an integer in [1, 8]"),
        (bulyan, 10, {"f": 2}, "bulyan: f=2 needs n >= 4f + 3 = 11 clients, got n=10"),
        (trimmed_mean, 8, {"beta": 0.5}, "trimmed_mean: beta=0.5 must be a finite number >= 0.0 and < 0.5"),
        (trimmed_mean, 8, {"beta": -0.1}, "trimmed_mean: beta=-0.1"),
        (geometric_median, 5, {"nu": 0.0}, "geometric_median: nu=0.0 must be a finite number > 0"),
        (geometric_median, 5, {"max_iter": 0}, "geometric_median: max_iter=0 must be an integer >= 1"),
        (geometric_median, 5, {"tol": -1.0}, "geometric_median: tol=-1.0"),
        (norm_clipping, 5, {"tau": 0.0}, "norm_clipping: tau=0.0 must be a finite number > 0"),
        (norm_clipping, 5, {"tau": 1.0, "sigma": -0.1}, "norm_clipping: sigma=-0.1 must be a finite"),
        (norm_clipping, 5, {"tau": float("inf")}, "norm_clipping: tau=inf"),
        (centered_clipping, 5, {"tau": -1.0}, "centered_clipping: tau=-1.0"),
        (centered_clipping, 5, {"tau": 1.0, "L": 0}, "centered_clipping: L=0 must be an integer >= 1"),
        (centered_clipping, 5, {"tau": 1.0, "previous": torch.zeros(3)}, "centered_clipping: previous has"),
        (flame, 5, {"lam": -1.0}, "flame: lam=-1.0 must be a finite number >= 0"),
        (flame, 1, {}, "flame: needs n >= 2 clients"),
        (foolsgold, 5, {"history": torch.zeros(5, 16), "kappa": 0.0}, "foolsgold: kappa=0.0"),
        (foolsgold, 5, {"history": torch.zeros(4, 16)}, "foolsgold: history has shape"),
        (fltrust, 5, {"root_update": torch.zeros(15)}, "fltrust: root_update has shape"),
        (rlr, 5, {"theta": 6}, "rlr: theta=6 must be an integer in [0, 5]"),
        (rlr, 5, {"theta": 2, "eta": 0.0}, "rlr: eta=0.0"),
        (dnc, 5, {"f": 5}, "dnc: c*f = 1.0*5 removes 5 of n=5 clients"),
        (dnc, 5, {"f": 1, "c": 0.0}, "dnc: c=0.0"),
        (dnc, 5, {"f": 1, "niters": 0}, "dnc: niters=0"),
        (dnc, 5, {"f": 1, "b": 0}, "dnc: b=0"),
    ],
)
def test_bad_parameters_and_preconditions_raise_value_error(rule, n, kwargs, message):
    with pytest.raises(ValueError) as error:
        rule(randn(n, 16, seed=50), **kwargs)
    assert message in str(error.value)


@pytest.mark.parametrize("name", sorted(RULES))
def test_bad_input_raises_value_error(name):
    x = randn(N, D, seed=60)
    with pytest.raises(ValueError, match="weights"):
        RULES[name](x, weights=-torch.ones(N), **_params(name, x))


# -- non-finite input ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name", sorted(RULES))
def test_non_finite_updates_and_weights_raise_value_error_naming_the_rows(name, bad):
    x = randn(N, D, seed=61)
    params = _params(name, x)
    y = x.clone()
    y[[3, 7], 5] = bad
    with pytest.raises(ValueError, match=r"updates contains (NaN|Inf) in row\(s\) \[3, 7\]"):
        RULES[name](y, **params)
    w = torch.ones(N)
    w[2] = bad
    with pytest.raises(ValueError, match=r"weights contains (NaN|Inf) in entries \[2\]"):
        RULES[name](x, weights=w, **params)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize(
    "name,key,message",
    [
        ("foolsgold", "history", r"foolsgold: history contains \w+ in row\(s\) \[4\]"),
        ("fltrust", "root_update", r"fltrust: root_update contains \w+ in entries \[4\]"),
        ("centered_clipping", "previous", r"centered_clipping: previous contains \w+ in entries \[4\]"),
    ],
)
def test_non_finite_state_inputs_raise_value_error(name, key, message, bad):
    x = randn(N, D, seed=62)
    params = _params(name, x)
    params[key] = params[key].clone()
    params[key][4] = bad
    with pytest.raises(ValueError, match=message):
        RULES[name](x, **params)


# -- FoolsGold: normalised or the paper's sum ----------------------------------------------


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


# -- boundaries and constants a mutant could change unnoticed -------------------------------


def test_fedavg_weights_by_num_examples():
    x = randn(3, 5, seed=65, dtype=torch.float64)
    result = fedavg(x, weights=torch.tensor([1.0, 2.0, 5.0]))
    torch.testing.assert_close(result.aggregate, (x[0] + 2 * x[1] + 5 * x[2]) / 8)
    torch.testing.assert_close(result.weights, torch.tensor([1 / 8, 2 / 8, 5 / 8], dtype=torch.float64))
    torch.testing.assert_close(fedavg(x).aggregate, x.mean(0))


def test_norm_clipping_counts_only_norms_above_tau():
    x = torch.tensor([[3.0, 4.0], [6.0, 8.0], [0.3, 0.4], [0.0, 0.0]])  # norms 5, 10, 0.5, 0
    result = norm_clipping(x, tau=5.0)
    assert result.info["clipped"] == 1 and result.info["max_norm"] == 10.0
    torch.testing.assert_close(result.aggregate, torch.tensor([3 + 3 + 0.3, 4 + 4 + 0.4]) / 4)


def test_krum_needs_strictly_more_than_2f_plus_2():
    with pytest.raises(ValueError, match="krum: f=3 needs n > 2f \\+ 2 = 8 clients, got n=8"):
        krum(randn(8, 4, seed=66), f=3)
    assert krum(randn(9, 4, seed=66), f=3).accepted.numel() == 1


def test_cosines_of_a_zero_row_are_zero():
    x = randn(4, 6, seed=67, dtype=torch.float64)
    x[2] = 0
    cos = cosine_similarities(gram(x))
    assert torch.isfinite(cos).all() and (cos[2] == 0).all() and (cos[:, 2] == 0).all()
    torch.testing.assert_close(cos[0, 1], x[0] @ x[1] / x[0].norm() / x[1].norm())


def test_fltrust_gives_a_zero_update_zero_trust():
    x = torch.tensor([[1.0, 1.0], [0.0, 0.0], [2.0, 0.0]])
    result = fltrust(x, root_update=torch.tensor([1.0, 0.0]))
    r = 1 / math.sqrt(2)
    np.testing.assert_allclose(result.info["trust"], [r, 0.0, 1.0], atol=1e-7)
    assert result.accepted.tolist() == [0, 2]
    # rescaled to ‖g0‖ = 1: (r, r) and (1, 0)
    torch.testing.assert_close(result.aggregate, (r * torch.tensor([r, r]) + torch.tensor([1.0, 0.0])) / (1 + r))


class RecordingHDBSCAN:
    """Stands in for sklearn's HDBSCAN: records its parameters and input, returns set labels."""

    calls: list = []
    labels: np.ndarray | None = None

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def fit_predict(self, distances):
        RecordingHDBSCAN.calls.append((self.kwargs, distances))
        return RecordingHDBSCAN.labels


@pytest.mark.parametrize("n", [7, 8])
def test_flame_hdbscan_parameters_input_and_largest_cluster(monkeypatch, n):
    monkeypatch.setattr(importlib.import_module("sklearn.cluster"), "HDBSCAN", RecordingHDBSCAN)
    RecordingHDBSCAN.calls = []
    RecordingHDBSCAN.labels = np.array([1, 0, 1, -1, 1, 0, 1, 0][:n])
    x = randn(n, 12, seed=68, dtype=torch.float64)
    result = flame(x, lam=0.0)
    (kwargs, distances), = RecordingHDBSCAN.calls
    assert kwargs["metric"] == "precomputed" and kwargs["min_samples"] == 1
    assert kwargs["allow_single_cluster"] is True and kwargs["min_cluster_size"] == n // 2 + 1
    xn = x.numpy()
    cos = xn @ xn.T / np.outer(np.linalg.norm(xn, axis=1), np.linalg.norm(xn, axis=1))
    np.testing.assert_allclose(distances, 1 - cos, atol=1e-12)
    assert result.accepted.tolist() == [0, 2, 4, 6]  # label 1: four members
    s_t = float(np.median(np.linalg.norm(xn, axis=1)))
    kept = xn[[0, 2, 4, 6]]
    expected = (kept * np.minimum(1, s_t / np.linalg.norm(kept, axis=1))[:, None]).mean(axis=0)
    np.testing.assert_allclose(result.aggregate.numpy(), expected, rtol=1e-12)


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
