"""The partitioners' arithmetic (``fedsim.data.partition``) on cases small enough to count by
hand: the cut points, balanced IID parts, Dirichlet shares at a huge concentration, the
disjoint samples, and the exact messages of what cannot be split."""

import numpy as np
import pytest

from fedsim.data import dirichlet, iid, pathological, quantity_skew, sample
from fedsim.data.partition import _DRAWS, _cuts


def _once(parts, n):
    joined = np.concatenate(parts)
    return len(joined) == n and np.array_equal(np.sort(joined), np.arange(n))


def test_cuts_are_the_floors_of_the_cumulative_shares():
    assert _cuts(np.array([0.25, 0.26, 0.49]), 10).tolist() == [2, 5]
    assert _cuts(np.array([0.5, 0.5]), 7).tolist() == [3]
    assert _cuts(np.array([1.0]), 5).tolist() == []
    assert _DRAWS == 1000


def test_iid_cuts_a_seeded_permutation_into_balanced_sorted_parts():
    parts = iid(10, 3, seed=4)
    assert [len(p) for p in parts] == [4, 3, 3]
    assert all(np.array_equal(p, np.sort(p)) for p in parts) and _once(parts, 10)
    perm = np.random.default_rng(4).permutation(10)
    assert [set(p.tolist()) for p in parts] == [set(perm[:4]), set(perm[4:7]), set(perm[7:])]
    assert [p.tolist() for p in iid(10, 3, seed=4)] == [p.tolist() for p in parts]
    assert [p.tolist() for p in iid(10, 3, seed=5)] != [p.tolist() for p in parts]
    # the edges: one client holds all, as many clients as samples hold one each
    assert [p.tolist() for p in iid(5, 1, seed=0)] == [[0, 1, 2, 3, 4]]
    assert sorted(len(p) for p in iid(5, 5, seed=0, min_size=1)) == [1] * 5


@pytest.mark.parametrize("n, clients, min_size, message", [
    (10, 0, 1, r"num_clients must be in \[1, 10\], got 0"),
    (10, 11, 1, r"num_clients must be in \[1, 10\], got 11"),
    (10, 3, 4, r"min_size=4 × num_clients=3 exceeds 10 samples"),
])
def test_what_cannot_be_split_is_named(n, clients, min_size, message):
    for split in (lambda: iid(n, clients, 0, min_size), lambda: quantity_skew(n, clients, 1.0, 0, min_size),
                  lambda: dirichlet(np.arange(n) % 2, clients, 1.0, 0, min_size)):
        with pytest.raises(ValueError, match=f"^{message}$"):
            split()


def test_min_size_times_clients_equal_to_the_samples_is_allowed():
    assert [len(p) for p in iid(9, 3, 0, min_size=3)] == [3, 3, 3]


@pytest.mark.parametrize("alpha", [0, -1.0, float("nan")])
def test_dirichlet_needs_a_positive_alpha(alpha):
    with pytest.raises(ValueError, match=f"^alpha must be > 0, got {alpha}$"):
        dirichlet(np.arange(10) % 2, 2, alpha, seed=0)


@pytest.mark.parametrize("beta", [0, -0.5])
def test_quantity_skew_needs_a_positive_beta(beta):
    with pytest.raises(ValueError, match=f"^beta must be > 0, got {beta}$"):
        quantity_skew(10, 2, beta, seed=0)


def test_dirichlet_at_a_huge_alpha_gives_each_client_an_equal_share_of_every_class():
    labels = np.repeat([0, 1, 2], [40, 80, 20])
    parts = dirichlet(labels, 4, 1e9, seed=1)
    assert _once(parts, len(labels))
    for p in parts:
        assert p.dtype == np.int64 and np.array_equal(p, np.sort(p))
        counts = np.bincount(labels[p], minlength=3)
        assert np.all(np.abs(counts - np.array([10, 20, 5])) <= 1)


def test_dirichlet_is_seeded_and_skews_labels_at_a_small_alpha():
    labels = np.arange(400) % 4
    a = dirichlet(labels, 5, 0.1, seed=2, min_size=5)
    assert all(np.array_equal(x, y) for x, y in zip(a, dirichlet(labels, 5, 0.1, seed=2, min_size=5)))
    assert not all(np.array_equal(x, y) for x, y in zip(a, dirichlet(labels, 5, 0.1, seed=3, min_size=5)))
    assert _once(a, 400) and min(len(p) for p in a) >= 5
    # at α = 0.1 most clients are dominated by one class
    dominated = [np.bincount(labels[p], minlength=4).max() / len(p) > 0.6 for p in a]
    assert sum(dominated) >= 3


def test_dirichlet_redraws_until_every_client_holds_min_size():
    labels = np.arange(60) % 3
    parts = dirichlet(labels, 6, 0.3, seed=0, min_size=6)
    assert min(len(p) for p in parts) >= 6 and _once(parts, 60)


def test_an_impossible_dirichlet_split_is_refused_naming_alpha():
    with pytest.raises(ValueError, match=r"^no Dirichlet\(alpha=0.001\) split gave every one of 10 clients "
                                         r"9\+ samples in 1000 draws; raise alpha$"):
        dirichlet(np.arange(100) % 10, 10, 0.001, seed=0, min_size=9)


def test_an_impossible_quantity_skew_is_refused_naming_beta():
    with pytest.raises(ValueError, match=r"^no Dirichlet\(beta=0.001\) split gave every one of 10 clients "
                                         r"9\+ samples in 1000 draws; raise beta$"):
        quantity_skew(100, 10, 0.001, seed=0, min_size=9)


def test_quantity_skew_at_a_huge_beta_gives_equal_sizes_of_a_seeded_permutation():
    parts = quantity_skew(100, 4, 1e9, seed=6)
    assert [len(p) for p in parts] in ([25, 25, 25, 25], [24, 26, 25, 25], [25, 24, 26, 25], [25, 25, 24, 26])
    assert all(p.dtype == np.int64 and np.array_equal(p, np.sort(p)) for p in parts) and _once(parts, 100)
    perm = np.random.default_rng(6).permutation(100)
    assert set(parts[0].tolist()) == set(perm[: len(parts[0])].tolist())


def test_quantity_skew_redraws_until_every_client_holds_min_size():
    parts = quantity_skew(60, 5, 0.5, seed=0, min_size=8)
    assert min(len(p) for p in parts) >= 8 and _once(parts, 60)


def test_pathological_refuses_a_smallest_client_below_min_size():
    labels = np.array([0] * 20 + [1] * 2)
    # 2 clients, 1 class each: one holds class 1's two samples
    with pytest.raises(ValueError, match=r"^the smallest client gets 2 samples, fewer than 3; "
                                         r"raise classes_per_client$"):
        pathological(labels, 2, 1, seed=0, min_size=3)
    parts = pathological(labels, 2, 1, seed=0, min_size=2)
    assert sorted(len(p) for p in parts) == [2, 20]
    assert all(p.dtype == np.int64 for p in parts)


@pytest.mark.parametrize("k", [True, 1.0, "1"])
def test_pathological_needs_an_int_classes_per_client(k):
    with pytest.raises(ValueError, match=r"must be an int in \[1, 2\] \(the labels' classes\)"):
        pathological(np.arange(10) % 2, 2, k, seed=0)


def test_pathological_with_k_equal_to_the_classes_shares_every_class():
    labels = np.arange(12) % 3
    parts = pathological(labels, 2, 3, seed=0)
    assert [np.bincount(labels[p], minlength=3).tolist() for p in parts] == [[2, 2, 2], [2, 2, 2]]


def test_pathological_clients_times_k_equal_to_the_classes_is_enough():
    labels = np.arange(12) % 4
    parts = pathological(labels, 2, 2, seed=1)
    assert sorted(sorted(np.unique(labels[p]).tolist()) for p in parts) in (
        [[0, 1], [2, 3]], [[0, 2], [1, 3]], [[0, 3], [1, 2]])


def test_pathological_deals_the_seeded_class_order_k_consecutive_classes_per_slot():
    # the docstring's exact rule: classes in a seeded order c_0 … c_4, slot s holds
    # c_(2s mod 5), c_(2s+1 mod 5), the clients take the slots in a seeded order; with 3 clients
    # × 2 classes over 5 classes, c_0 is the class dealt twice (slots 0 and 2)
    labels = np.arange(40) % 5
    parts = pathological(labels, 3, 2, seed=3)
    rng = np.random.default_rng(3)
    order, slot_of = rng.permutation(5), rng.permutation(3)
    dealt = [{order[(2 * slot_of[i] + j) % 5] for j in range(2)} for i in range(3)]
    assert [set(np.unique(labels[p]).tolist()) for p in parts] == dealt
    held = np.bincount(np.concatenate([np.unique(labels[p]) for p in parts]), minlength=5)
    assert np.flatnonzero(held == 2).tolist() == [order[0]]


def test_sample_gives_disjoint_sorted_seeded_choices_in_turn():
    a, b, c = sample(10, (3, 4, 5), seed=2)
    perm = np.random.default_rng(2).permutation(10)
    assert a.tolist() == sorted(perm[:3]) and b.tolist() == sorted(perm[3:7])
    assert c.tolist() == sorted(perm[7:])  # cut to the 3 left
    (whole,) = sample(5, (8,), seed=0)
    assert whole.tolist() == [0, 1, 2, 3, 4]
    first, rest = sample(4, (4, 2), seed=0)
    assert first.tolist() == [0, 1, 2, 3] and rest.tolist() == []
    first, rest = sample(4, (6, 2), seed=0)
    assert rest.tolist() == []  # the start is capped at the samples, not past them


def test_min_size_defaults_to_one_sample_per_client():
    assert sorted(len(p) for p in iid(3, 3, seed=0)) == [1, 1, 1]
    assert sorted(len(p) for p in quantity_skew(3, 3, 1e9, seed=0)) == [1, 1, 1]
    assert sorted(len(p) for p in dirichlet(np.zeros(3, dtype=int), 3, 1e9, seed=0)) == [1, 1, 1]
    assert sorted(len(p) for p in pathological(np.array([0, 1, 2]), 3, 1, seed=0)) == [1, 1, 1]
