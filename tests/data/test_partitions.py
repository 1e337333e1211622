"""The partitioners of ``fedsim.data.PARTITIONS``: every sample once, the skew each one names,
determinism in the seed, and infeasible configs refused before anything starts."""

import numpy as np
import pytest

from fedsim.app.data_plan import client_parts
from fedsim.config import ConfigError
from fedsim.runner import load
from fedsim.data import PARTITIONS, pathological, quantity_skew


def _unbalanced_labels(n: int, classes: int, seed: int) -> np.ndarray:
    """Labels with unequal class sizes (not round-robin), every class present."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(classes, size=n, p=rng.dirichlet(np.full(classes, 2.0)))
    labels[:classes] = np.arange(classes)
    return rng.permutation(labels)


def _assigned_once(parts, n: int) -> bool:
    joined = np.concatenate(parts)
    return len(joined) == n and np.array_equal(np.sort(joined), np.arange(n))


@pytest.mark.parametrize(("n", "classes", "clients", "k"), [
    (500, 10, 10, 2), (500, 10, 7, 3), (300, 5, 20, 1), (400, 10, 3, 4), (250, 6, 4, 6),
])
def test_pathological_gives_every_client_exactly_k_classes_and_every_sample_once(n, classes, clients, k):
    labels = _unbalanced_labels(n, classes, seed=n + k)
    parts = pathological(labels, clients, k, seed=3, min_size=2)
    assert len(parts) == clients and _assigned_once(parts, n)
    assert all(len(np.unique(labels[p])) == k for p in parts)
    # each class's samples go to ⌊Nk/C⌋ or ⌈Nk/C⌉ clients, in parts differing by at most one
    for c in range(classes):
        shares = [int((labels[p] == c).sum()) for p in parts if (labels[p] == c).any()]
        assert len(shares) in (clients * k // classes, -(-clients * k // classes))
        assert max(shares) - min(shares) <= 1
    again = pathological(labels, clients, k, seed=3, min_size=2)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    other = pathological(labels, clients, k, seed=4, min_size=2)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other))


@pytest.mark.parametrize(("clients", "k", "message"), [
    (4, 11, r"classes_per_client=11 must be an int in \[1, 10\]"),
    (4, 0, r"classes_per_client=0 must be an int in \[1, 10\]"),
    (4, 2, r"4 clients × classes_per_client=2 hold fewer than the 10 classes"),
])
def test_pathological_refuses_what_it_cannot_split(clients, k, message):
    with pytest.raises(ValueError, match=message):
        pathological(np.arange(100) % 10, clients, k, seed=0)


def test_pathological_refuses_a_class_with_fewer_samples_than_holders():
    labels = np.array([0] * 50 + [1] * 50 + [2])  # class 2: one sample, but 2 of 3 clients hold it
    with pytest.raises(ValueError, match=r"^class 2 has 1 samples for 2 clients holding it; lower classes_per_client$"):
        pathological(labels, 3, 2, seed=0)


def test_quantity_skew_covers_every_sample_once_and_its_spread_grows_as_beta_shrinks():
    n, clients = 2000, 10
    spread = {}
    for beta in (100.0, 1.0, 0.3):
        cvs = []
        for seed in range(20):
            parts = quantity_skew(n, clients, beta, seed=seed, min_size=2)
            assert _assigned_once(parts, n) and min(len(p) for p in parts) >= 2
            sizes = np.array([len(p) for p in parts])
            cvs.append(sizes.std() / sizes.mean())
        spread[beta] = float(np.mean(cvs))
    assert spread[100.0] < spread[1.0] < spread[0.3]
    # Dir(β·1) shares have CV √((N−1)/(Nβ+1)): ≈ 0.095 at β = 100 and ≈ 0.90 at β = 1
    assert spread[100.0] == pytest.approx(np.sqrt(9 / 1001), rel=0.3)
    assert spread[1.0] == pytest.approx(np.sqrt(9 / 11), rel=0.3)


def test_quantity_skew_keeps_labels_iid_and_is_seeded():
    labels = np.arange(6000) % 3
    parts = quantity_skew(len(labels), 4, 1.0, seed=5, min_size=100)
    for p in parts:  # every client, large or small, holds about a third of each class
        np.testing.assert_allclose(np.bincount(labels[p], minlength=3) / len(p), 1 / 3, atol=0.08)
    assert all(np.array_equal(a, b) for a, b in zip(parts, quantity_skew(len(labels), 4, 1.0, seed=5, min_size=100)))
    with pytest.raises(ValueError, match=r"no Dirichlet\(beta=0.01\) split gave every one of 50 clients 2\+"):
        quantity_skew(200, 50, 0.01, seed=0, min_size=2)


def test_the_registry_names_what_each_partitioner_reads():
    assert set(PARTITIONS) == {"iid", "dirichlet", "pathological", "quantity_skew"}
    assert {k for k, p in PARTITIONS.items() if p.by_label} == {"dirichlet", "pathological"}


def test_clients_materialise_the_split_the_config_check_drew():
    from fedsim.app import _partition
    from fedsim.data import load_split

    cfg = load(None, ["data.partition='pathological'", "data.classes_per_client=3", "data.train_size=200"])
    labels = load_split("shapes", "train", 200, cfg.seed).labels
    parts = client_parts(cfg, 200, labels)
    assert _assigned_once(parts, 200)
    for pid, part in enumerate(parts):
        mine = _partition(cfg.model_dump_json(), pid, 32)
        assert len(mine) == len(part) and len(set(mine.labels.tolist())) == 3
        assert mine.labels.tolist() == labels[part].tolist()


@pytest.mark.parametrize(("overrides", "fragments"), [
    (["data.partition='pathological'", "data.classes_per_client=11"],
     ["data.partition='pathological' data.classes_per_client=11", "must be an int in [1, 10]"]),
    (["data.partition='pathological'", "data.classes_per_client=1", "clients.num=5", "clients.per_round=5"],
     ["data.classes_per_client=1", "clients.num=5", "5 clients × classes_per_client=1 hold fewer than the 10 classes"]),
    (["data.partition='quantity_skew'", "data.beta=0.001", "clients.num=50", "clients.per_round=5",
      "data.train_size=200"],
     ["data.partition='quantity_skew' data.beta=0.001", "clients.num=50", "data.train_size=200", "raise beta"]),
    (["data.partition='pathological'", "data.classes_per_client=0"],
     ["data.classes_per_client=0", "greater than or equal to 1"]),
    (["data.partition='shards'"], ["data.partition", "'shards'", "allowed: iid, dirichlet, pathological, quantity_skew"]),
])
def test_infeasible_partitions_fail_before_anything_starts_naming_the_field(overrides, fragments):
    with pytest.raises(ConfigError) as e:
        load(None, overrides)
    for fragment in fragments:
        assert fragment in str(e.value), (fragment, str(e.value))
