"""The rules and attacks that derive distances or cosines from Gram matrices, at magnitudes
from 1e3 to 1e20 (a far attacker, far sybils, a large common offset), against references
computed here from explicit differences x_i − x_j in float64 numpy. Also the point of RFA:
the geometric median's influence of one client stays bounded however far it goes."""

import numpy as np
import pytest
import torch

from clients.attacks.byzantine import _ray_terms, min_max, min_sum
from strategies import bulyan, dnc, flame, fltrust, foolsgold, geometric_median, krum, multi_krum
from strategies.geometry import cosine_similarities, gram, squared_distances
from tests.strategies.test_bulyan import naive_bulyan
from tests.strategies.test_dnc import draws, reference_accepted
from tests.strategies.test_foolsgold import naive_foolsgold
from tests.strategies.test_krum import naive_krum_scores

MAGNITUDES = [1e3, 1e6, 1e10, 1e15, 1e20]
OFFSETS = [1e3, 1e5, 1e7]  # float64 rows at offset 1e7 hold unit-scale detail to ~1e-9


def gen(seed):
    return torch.Generator().manual_seed(seed)


def direct_squared_distances(x: torch.Tensor) -> np.ndarray:
    x = x.double().numpy()
    return np.array([[np.sum((a - b) ** 2) for b in x] for a in x])


def direct_cosines(x: torch.Tensor) -> np.ndarray:
    x = x.double().numpy()
    return np.array([[a @ b / np.linalg.norm(a) / np.linalg.norm(b) for b in x] for a in x])


def far_attackers(magnitude: float, *, n_honest=9, d=40, sybils=False, dtype=torch.float64, seed=0):
    """Two attackers at ``magnitude`` (near-duplicates when ``sybils``) then unit-scale honest
    rows around 1."""
    g = gen(seed)
    honest = 1 + 0.1 * torch.randn(n_honest, d, generator=g, dtype=torch.float64)
    attackers = magnitude * torch.randn(2, d, generator=g, dtype=torch.float64)
    if sybils:
        attackers[1] = attackers[0] + torch.randn(d, generator=g, dtype=torch.float64)
    return torch.cat([attackers, honest]).to(dtype)


def offset_rows(offset: float, *, n=11, d=40, seed=1) -> torch.Tensor:
    g = gen(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) + offset * torch.randn(d, generator=g, dtype=torch.float64)


# -- shared geometry ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("magnitude", MAGNITUDES)
def test_squared_distances_with_far_rows_match_direct_differences(magnitude, dtype):
    x = far_attackers(magnitude, dtype=dtype)
    np.testing.assert_allclose(squared_distances(x).numpy(), direct_squared_distances(x), rtol=1e-9)
    np.testing.assert_allclose(cosine_similarities(gram(x)).numpy(), direct_cosines(x), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("offset", OFFSETS)
def test_squared_distances_with_a_common_offset_match_direct_differences(offset):
    x = offset_rows(offset)
    np.testing.assert_allclose(squared_distances(x).numpy(), direct_squared_distances(x), rtol=1e-9)
    # float32 rows: the offset that still leaves unit-scale detail is ~1e5
    x32 = (torch.randn(8, 300, generator=gen(2)) + 3e4).float()
    np.testing.assert_allclose(squared_distances(x32).numpy(), direct_squared_distances(x32), rtol=1e-9)


# -- geometric median: bounded influence ----------------------------------------------------


def reference_geometric_median(x: torch.Tensor, iters: int = 100_000) -> np.ndarray:
    """Weiszfeld from the mean with explicit distances ‖v − x_i‖, to convergence."""
    x = x.double().numpy()
    v = x.mean(axis=0)
    for _ in range(iters):
        dist = np.sqrt(np.sum((x - v) ** 2, axis=1))
        beta = 1 / np.maximum(dist, 1e-12)
        new = (beta[:, None] * x).sum(axis=0) / beta.sum()
        if np.linalg.norm(new - v) <= 1e-8 * np.median(dist):
            return new
        v = new
    raise AssertionError("reference Weiszfeld did not converge")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("magnitude", MAGNITUDES + [3e37])
def test_geometric_median_influence_is_bounded_at_any_magnitude(magnitude, dtype):
    g = gen(3)
    honest = 1 + 0.1 * torch.randn(6, 17, generator=g, dtype=dtype)
    x = torch.cat([torch.full((1, 17), magnitude, dtype=dtype), honest])
    result = geometric_median(x)
    assert torch.isfinite(result.aggregate).all() and result.info["converged"]
    np.testing.assert_allclose(result.aggregate.double().numpy(), reference_geometric_median(x), atol=1e-4)
    # the limit for a point at infinity is a fixed point near the honest ones
    assert float((result.aggregate.double() - honest.double().mean(0)).abs().max()) < 0.1
    assert float(result.weights[0]) * magnitude < 1.0


@pytest.mark.parametrize("offset", OFFSETS)
def test_geometric_median_with_a_common_offset_matches_reference(offset):
    x = offset_rows(offset, n=7, d=17)
    x[0] += 50.0
    result = geometric_median(x, tol=1e-10, max_iter=1000)
    np.testing.assert_allclose(result.aggregate.numpy(), reference_geometric_median(x), atol=1e-6, rtol=0)


# -- Krum, Multi-Krum, Bulyan -----------------------------------------------------------------


# Sybils one unit apart: beyond 1e15 float64 cannot hold them apart (they become exact
# duplicates, and then Bulyan's one-neighbour last step rightly prefers them).
FAR = [(m, False) for m in MAGNITUDES] + [(m, True) for m in MAGNITUDES if m <= 1e15]


@pytest.mark.parametrize("magnitude,sybils", FAR)
def test_krum_family_with_far_attackers_matches_direct_reference(magnitude, sybils):
    x = far_attackers(magnitude, sybils=sybils)
    expected = naive_krum_scores(x.numpy(), f=2)
    result = krum(x, f=2)
    np.testing.assert_allclose(result.info["scores"], expected, rtol=1e-9)
    assert result.accepted.tolist() == [int(np.argmin(expected))]
    chosen = sorted(np.argsort(expected, kind="stable")[:5].tolist())
    assert multi_krum(x, f=2, m=5).accepted.tolist() == chosen
    assert not {0, 1} & set(chosen)
    # Bulyan's last picks compare one-neighbour scores: a far sybil pair's own distance
    # must not come out as 0 (the Gram expansion's cancellation) and win them a seat.
    result = bulyan(x, f=2)
    assert not {0, 1} & set(result.accepted.tolist())
    if not sybils:
        aggregate, selected = naive_bulyan(x.numpy(), 2)
        assert result.info["selection_order"] == selected
        np.testing.assert_allclose(result.aggregate.numpy(), aggregate, rtol=1e-12)


@pytest.mark.parametrize("offset", OFFSETS)
def test_krum_family_with_a_common_offset_matches_direct_reference(offset):
    x = offset_rows(offset)
    expected = naive_krum_scores(x.numpy(), f=2)
    result = krum(x, f=2)
    np.testing.assert_allclose(result.info["scores"], expected, rtol=1e-9)
    assert result.accepted.tolist() == [int(np.argmin(expected))]
    assert multi_krum(x, f=2).accepted.tolist() == sorted(np.argsort(expected, kind="stable")[:9].tolist())
    assert bulyan(x, f=2).info["selection_order"] == naive_bulyan(x.numpy(), 2)[1]


# -- DnC ------------------------------------------------------------------------------------


@pytest.mark.parametrize("magnitude,sybils", FAR)
def test_dnc_with_far_attackers_drops_them_and_matches_reference(magnitude, sybils):
    x = far_attackers(magnitude, sybils=sybils)
    coords = draws(x.shape[1], 20, 3, 0)
    expected = reference_accepted(x.numpy(), 2, 1.0, coords)
    result = dnc(x, f=2, niters=3, b=20, generator=gen(0))
    assert result.accepted.tolist() == expected == list(range(2, 11))
    torch.testing.assert_close(result.aggregate, x[2:].mean(0))


# -- FLAME, FoolsGold, FLTrust (cosines) ----------------------------------------------------


def _cosine_case(magnitude: float):
    g = gen(4)
    base = torch.randn(40, generator=g, dtype=torch.float64)
    honest = base + 0.3 * torch.randn(8, 40, generator=g, dtype=torch.float64)
    attackers = -magnitude * (base + 0.3 * torch.randn(3, 40, generator=g, dtype=torch.float64))
    return torch.cat([attackers, honest]), honest


@pytest.mark.parametrize("magnitude", MAGNITUDES)
def test_flame_with_far_attackers_drops_them_and_clips_to_the_median_norm(magnitude):
    x, honest = _cosine_case(magnitude)
    reference = flame(torch.cat([x[:3] / magnitude, honest]), lam=0.0)  # same cosines
    result = flame(x, lam=0.0)
    assert result.accepted.tolist() == reference.accepted.tolist()
    assert set(result.accepted.tolist()) <= set(range(3, 11))
    norms = np.linalg.norm(x.numpy(), axis=1)
    s_t = float(np.median(norms))
    assert result.info["S_t"] == pytest.approx(s_t, rel=1e-12)
    kept = x[result.accepted].numpy()
    expected = (kept * np.minimum(1, s_t / np.linalg.norm(kept, axis=1))[:, None]).mean(axis=0)
    np.testing.assert_allclose(result.aggregate.numpy(), expected, rtol=1e-9)


@pytest.mark.parametrize("magnitude", MAGNITUDES)
def test_foolsgold_and_fltrust_cosines_are_scale_free(magnitude):
    x, honest = _cosine_case(1.0)
    history = x.clone()
    history[[0, 5]] *= magnitude
    np.testing.assert_allclose(foolsgold(x, history=history).info["alpha"], naive_foolsgold(history.numpy()),
                               atol=1e-9)
    scaled = x.clone()
    scaled[[1, 6]] *= magnitude
    root = honest.mean(0)
    a, b = fltrust(x, root_update=root), fltrust(scaled, root_update=root)
    np.testing.assert_allclose(b.info["trust"], a.info["trust"], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(b.aggregate, a.aggregate, rtol=1e-12, atol=1e-12)


# -- MinMax / MinSum ------------------------------------------------------------------------


@pytest.mark.parametrize("offset", OFFSETS)
def test_ray_terms_with_a_common_offset_match_direct_differences(offset):
    x = offset_rows(offset, n=8)
    p = -x.std(0)
    distances, b, to_mean = _ray_terms(x, p)
    xn, pn = x.numpy(), p.numpy()
    mu = xn.mean(axis=0)
    np.testing.assert_allclose(distances.numpy(), direct_squared_distances(x), rtol=1e-9)
    # μ itself rounds at ~1e-16 · offset in both
    np.testing.assert_allclose(b.numpy(), (mu - xn) @ pn, rtol=1e-7)
    np.testing.assert_allclose(to_mean.numpy(), np.sum((mu - xn) ** 2, axis=1), rtol=1e-7)


@pytest.mark.parametrize("offset", OFFSETS)
def test_min_max_and_min_sum_meet_their_constraint_with_equality(offset):
    x = offset_rows(offset, n=8)
    d = direct_squared_distances(x)
    mal = min_max(x, 2)[0].numpy()
    np.testing.assert_allclose(np.max(np.sum((mal - x.numpy()) ** 2, axis=1)), d.max(), rtol=1e-7)
    mal = min_sum(x, 2)[0].numpy()
    np.testing.assert_allclose(np.sum((mal - x.numpy()) ** 2), d.sum(axis=1).max(), rtol=1e-7)
