"""The geometry the rules share (strategies/geometry.py): squared distances, row norms, Gram
matrices and cosines against explicit differences in float64 (large d, near-duplicates, a zero
row, the direct path for rows whose Gram expansion cancels), and both paths of the column-wise
lower median against a sort."""

import numpy as np
import pytest
import torch

import strategies.geometry as geometry
from strategies.geometry import cosine_similarities, gram, row_norms, squared_distances
from tests.strategies.seeded import randn


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


def test_cosines_of_a_zero_row_are_zero():
    x = randn(4, 6, seed=67, dtype=torch.float64)
    x[2] = 0
    cos = cosine_similarities(gram(x))
    assert torch.isfinite(cos).all() and (cos[2] == 0).all() and (cos[:, 2] == 0).all()
    torch.testing.assert_close(cos[0, 1], x[0] @ x[1] / x[0].norm() / x[1].norm())


def test_squared_distances_direct_path_over_several_column_blocks(monkeypatch):
    # Three near-duplicate rows far from four honest ones: their Gram-expansion distances
    # cancel, so they are recomputed from explicit differences, here over blocks of 2 columns.
    monkeypatch.setattr(geometry, "_BLOCK", 2)
    rng = np.random.default_rng(0)
    d = 7
    honest = rng.normal(size=(4, d))
    base = 1e4 + rng.normal(size=d)
    sybils = base + 1e-3 * rng.normal(size=(3, d))
    x = np.vstack([honest, sybils])
    got = geometry.squared_distances(torch.from_numpy(x))
    expected = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    for i in range(4, 7):
        for j in range(4, 7):
            if i != j:
                assert got[i, j].item() == pytest.approx(expected[i, j], rel=1e-8)
    # the sybil pairs differ, so a wrong reduction cannot pass by symmetry
    assert abs(expected[4, 5] - expected[4, 6]) > 1e-3 * expected[4, 5]


@pytest.mark.parametrize("n", [1, 2, 5, 6])
def test_both_kth_smallest_paths_give_the_sorted_column_entry(n):
    g = torch.Generator().manual_seed(n)
    block = torch.randint(-3, 4, (n, 7), generator=g).to(torch.float32)  # ties on purpose
    for k in range(n):
        expected = block.sort(dim=0).values[k]
        assert torch.equal(geometry._kth_smallest_numpy(block, k), expected)
        assert torch.equal(geometry._kth_smallest_torch(block, k), expected)
    assert torch.equal(geometry._lower_median(block), block.sort(dim=0).values[(n - 1) // 2])
