"""DnC (Shejwalkar & Houmansadr, NDSS 2021, Algorithm 2) against an independent reference
written here with numpy's SVD, driven by the same coordinate draws, on cases built so that each
plausible slip — scoring by row norm instead of the top singular vector, no centring, keeping
only the last iteration instead of the intersection, reusing one coordinate draw — gives a
different answer. And ties: duplicated rows must not make the result depend on row order; and
a shifted group is dropped."""

import math

import numpy as np
import pytest
import torch

from strategies import dnc
from tests.strategies.seeded import gen


def draws(d: int, b: int, niters: int, seed: int) -> list[np.ndarray]:
    """The coordinate sub-samples DnC draws from a generator seeded with ``seed``: one
    ``torch.randperm(d)[:b]`` per iteration (its documented draw)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(d, generator=g)[: min(b, d)].numpy() for _ in range(niters)]


def reference_removed(x: np.ndarray, f: int, c: float, coords: list[np.ndarray]) -> list[set[int]]:
    """Per iteration, the rows DnC removes: centre the sub-matrix on its mean, take the top right
    singular vector v (numpy SVD), score ⟨x_i − μ, v⟩², remove the ⌊c·f⌋ highest."""
    removed = []
    for r in coords:
        centred = x[:, r] - x[:, r].mean(axis=0)
        v = np.linalg.svd(centred, full_matrices=False)[2][0]
        scores = (centred @ v) ** 2
        removed.append(set(np.argsort(-scores, kind="stable")[: math.floor(c * f)].tolist()))
    return removed


def reference_accepted(x: np.ndarray, f: int, c: float, coords: list[np.ndarray]) -> list[int]:
    dropped = set().union(*reference_removed(x, f, c, coords))
    return [i for i in range(len(x)) if i not in dropped]


def check_against_reference(x: torch.Tensor, *, f, c=1.0, niters=5, b=10000, seed=0) -> list[int]:
    coords = draws(x.shape[1], b, niters, seed)
    expected = reference_accepted(x.double().numpy(), f, c, coords)
    result = dnc(x, f=f, c=c, niters=niters, b=b, generator=torch.Generator().manual_seed(seed))
    assert result.accepted.tolist() == expected
    torch.testing.assert_close(result.aggregate, x[expected].mean(0))
    return expected


@pytest.mark.parametrize(
    "n,d,f,c,niters,b,seed",
    [(15, 80, 3, 1.0, 5, 30, 0), (20, 50, 4, 1.5, 3, 20, 1), (9, 12, 2, 1.0, 4, 100, 2), (30, 200, 6, 0.5, 7, 64, 3)],
)
def test_dnc_matches_numpy_svd_reference(n, d, f, c, niters, b, seed):
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.rand(n, 1, generator=g, dtype=torch.float64)
    x[:f] += 2.0 * torch.randn(d, generator=g, dtype=torch.float64)
    check_against_reference(x, f=f, c=c, niters=niters, b=b, seed=seed)


def test_dnc_scores_along_the_top_singular_vector_not_by_norm():
    # 6 attackers shifted along one direction, with less spread than the honest updates:
    # smaller norms (centred or not) than every honest update, yet their shift is the top
    # singular direction. Scoring by norm would drop 6 honest clients instead.
    g = torch.Generator().manual_seed(1)
    n, d, f = 20, 400, 6
    honest = torch.randn(n - f, d, generator=g, dtype=torch.float64)
    direction = torch.nn.functional.normalize(torch.randn(d, generator=g, dtype=torch.float64), dim=0)
    attackers = 16.0 * direction + 0.01 * torch.randn(f, d, generator=g, dtype=torch.float64)
    x = torch.cat([honest[:5], attackers, honest[5:]])
    centred = x - x.mean(0)
    assert centred[5:11].norm(dim=1).max() < torch.cat([centred[:5], centred[11:]]).norm(dim=1).min()
    assert x[5:11].norm(dim=1).max() < torch.cat([x[:5], x[11:]]).norm(dim=1).min()
    accepted = check_against_reference(x, f=f, niters=3, b=d)
    assert accepted == list(range(5)) + list(range(11, n))


def test_dnc_centres_before_the_singular_vector():
    # A common offset much larger than the spread: uncentred, the top singular vector is the
    # offset, and the scores rank the clients by their noise along it, not the attackers.
    g = torch.Generator().manual_seed(2)
    n, d, f = 15, 60, 3
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    offset = 1e3 * torch.randn(d, generator=g, dtype=torch.float64)
    shift = torch.randn(d, generator=g, dtype=torch.float64)
    shift -= (shift @ offset) / (offset @ offset) * offset  # orthogonal to the offset
    x[-f:] = 8.0 * shift / shift.norm() + 0.01 * x[-f:]
    x += offset
    accepted = check_against_reference(x, f=f, niters=3, b=d)
    assert accepted == list(range(n - f))


def test_dnc_keeps_the_intersection_of_iterations_with_fresh_draws():
    # The attacker deviates only on coordinates of the first draw that no later draw holds:
    # removed in iteration 1, kept in the last. Keeping only the last iteration would accept
    # it; reusing the first draw every iteration would miss the honest clients that later
    # iterations remove.
    n, d, b, niters, f, seed = 12, 60, 20, 3, 1, 4
    coords = draws(d, b, niters, seed)
    only_first = np.setdiff1d(coords[0], np.concatenate(coords[1:]))
    assert len(only_first) >= 3
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x[7, only_first] += 30.0
    removed = reference_removed(x.numpy(), f, 1.0, coords)
    assert removed[0] == {7} and 7 not in removed[-1]
    assert set().union(*removed) != removed[0]  # later iterations drop other clients
    accepted = check_against_reference(x, f=f, niters=niters, b=b, seed=seed)
    assert 7 not in accepted and len(accepted) < n - 1


def test_dnc_uses_all_coordinates_when_b_is_at_least_d():
    x = torch.randn(10, 15, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    results = [dnc(x, f=2, b=15, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    assert all(r.accepted.tolist() == results[0].accepted.tolist() for r in results)
    assert results[0].info["b"] == 15
    check_against_reference(x, f=2, b=15)


def _with_duplicates() -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(12, 30, generator=g)
    x[[1, 4, 9]] = 5.0 + torch.randn(30, generator=g)  # three sybils, f = 2 assumed
    x[[3, 10]] = x[6].clone()  # honest duplicates
    return x


def test_dnc_tied_rows_are_removed_together_whatever_the_row_order():
    x = _with_duplicates()
    base = dnc(x, f=2, b=20, generator=torch.Generator().manual_seed(0))
    # the three identical sybils tie at the cut of ⌊c·f⌋ = 2: all three go
    assert not {1, 4, 9} & set(base.accepted.tolist())
    for s in range(100):
        perm = torch.randperm(12, generator=torch.Generator().manual_seed(1000 + s))
        result = dnc(x[perm], f=2, b=20, generator=torch.Generator().manual_seed(0))
        assert sorted(perm[result.accepted].tolist()) == base.accepted.tolist()
        torch.testing.assert_close(result.aggregate, base.aggregate)


def test_dnc_all_identical_updates_raise_value_error():
    x = torch.ones(6, 8)
    with pytest.raises(ValueError, match="dnc: no client was kept"):
        dnc(x, f=1)
    assert dnc(x, f=0).accepted.tolist() == list(range(6))


def test_dnc_drops_a_shifted_group():
    g = gen(18)
    honest = torch.randn(12, 60, generator=g)
    shifted = torch.randn(3, 60, generator=g) + 3.0 * torch.randn(60, generator=g)
    x = torch.cat([honest[:5], shifted, honest[5:]])
    result = dnc(x, f=3, b=40, generator=gen(0))
    assert result.accepted.tolist() == [0, 1, 2, 3, 4] + list(range(8, 15))
    torch.testing.assert_close(result.aggregate, honest.mean(0))
