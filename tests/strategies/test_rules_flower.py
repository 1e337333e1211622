"""Our rules against Flower's built-in strategies (flwr.serverapp.strategy) on the same
replies. Flower aggregates full weights, so each client replies global + Δ_i and Flower's
result minus global is compared with our aggregate of the Δ_i. Where we differ on purpose
(Multi-Krum's num-examples weighting, Bulyan's one-shot selection, preconditions) the
test shows the difference."""

import gc

import numpy as np
import pytest
import torch
from flwr.serverapp.strategy import Bulyan, FedMedian, FedTrimmedAvg, Krum, MultiKrum
from flwr.serverapp.strategy.multikrum import select_multikrum

from strategies import bulyan, krum, median, multi_krum, trimmed_mean
from strategies.geometry import squared_distances
from tests.conftest import make_reply

SHAPES = {"w": (3, 4), "b": (5,)}  # d = 17, two arrays so flattening order matters
D = 17


@pytest.fixture(autouse=True, scope="module")
def _cheap_gc():
    """Flower's Bulyan calls gc.collect() for every reply it converts; with torch loaded each
    takes ~0.2 s. Freezing the objects alive now keeps those collections short."""
    gc.freeze()
    yield
    gc.unfreeze()


def _global(seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}


def _updates(n, seed) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


def _replies(glob, updates, num_examples=None):
    """One reply per row: global + Δ_i as Flower's clients would send it."""
    flat = np.concatenate([a.ravel() for a in glob.values()])
    out = []
    for i, u in enumerate(updates.numpy()):
        w, arrays = flat + u, {}
        for k, a in glob.items():
            arrays[k], w = w[: a.size].reshape(a.shape), w[a.size :]
        ne = 10 if num_examples is None else int(num_examples[i])
        out.append(make_reply(arrays, {"num-examples": ne}, src_node_id=i + 1))
    return out


def _flower(strategy, glob, updates, num_examples=None) -> torch.Tensor:
    """Flower's aggregate as an update (its result minus the global weights)."""
    arrays, _ = strategy.aggregate_train(1, _replies(glob, updates, num_examples))
    assert arrays is not None
    flat = np.concatenate([arrays[k].numpy().ravel() for k in glob])
    return torch.from_numpy(flat - np.concatenate([a.ravel() for a in glob.values()]))


def _close(ours: torch.Tensor, flower: torch.Tensor):
    torch.testing.assert_close(ours, flower.to(ours.dtype), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n", [7, 8, 12])
def test_median_equals_fedmedian(flower_task, n):
    glob, x = _global(n), _updates(n, seed=n)
    _close(median(x).aggregate, _flower(FedMedian(), glob, x))


@pytest.mark.parametrize("n,beta", [(10, 0.1), (10, 0.25), (9, 0.2), (12, 0.4), (7, 0.0)])
def test_trimmed_mean_equals_fedtrimmedavg(flower_task, n, beta):
    glob, x = _global(n), _updates(n, seed=100 + n)
    _close(trimmed_mean(x, beta=beta).aggregate, _flower(FedTrimmedAvg(beta=beta), glob, x))


@pytest.mark.parametrize("n,f", [(7, 1), (10, 2), (13, 3), (9, 0)])
def test_krum_equals_flower_krum(flower_task, n, f):
    glob, x = _global(n), _updates(n, seed=200 + n)
    _close(krum(x, f=f).aggregate, _flower(Krum(num_malicious_nodes=f), glob, x))


def test_krum_with_duplicate_updates_agrees_with_flower(flower_task):
    """Flower drops position 0 of each sorted distance row as "self"; with exact duplicates
    the skipped zero may be the duplicate's, but the values are equal so its scores still
    agree with ours (which exclude self by index)."""
    x = _updates(9, seed=210)
    x[1], x[5], x[6] = x[0], x[4], x[4]
    glob = _global(3)
    _close(krum(x, f=2).aggregate, _flower(Krum(num_malicious_nodes=2), glob, x))
    _close(multi_krum(x, f=2, m=4).aggregate,
           _flower(MultiKrum(num_malicious_nodes=2, num_nodes_to_select=4), glob, x))


@pytest.mark.parametrize("n,f,m", [(7, 1, 3), (10, 2, 5), (13, 3, 10), (10, 2, 1)])
def test_multi_krum_equals_flower_multikrum_with_equal_num_examples(flower_task, n, f, m):
    glob, x = _global(n), _updates(n, seed=300 + n)
    flower = _flower(MultiKrum(num_malicious_nodes=f, num_nodes_to_select=m), glob, x)
    _close(multi_krum(x, f=f, m=m).aggregate, flower)


def test_multi_krum_ignores_num_examples_unlike_flower(flower_task):
    """Intended difference: Flower weights the selected replies by the client-reported
    num-examples; ours averages them uniformly (an attacker can inflate num-examples)."""
    n, f, m = 10, 2, 5
    glob, x = _global(1), _updates(n, seed=301)
    num_examples = np.arange(1, n + 1) ** 2
    ours = multi_krum(x, weights=torch.tensor(num_examples, dtype=torch.float32), f=f, m=m)
    flower = _flower(MultiKrum(num_malicious_nodes=f, num_nodes_to_select=m), glob, x, num_examples)
    chosen = ours.accepted
    w = torch.tensor(num_examples[chosen.numpy()], dtype=torch.float32)
    _close(ours.aggregate, x[chosen].mean(0))
    _close((w @ x[chosen]) / w.sum(), flower)  # same selection, weighted by Flower
    assert not torch.allclose(ours.aggregate, flower, atol=1e-3)


def _one_shot_selection(x: torch.Tensor, f: int) -> list[int]:
    """Flower's Bulyan selection: the θ = n − 2f lowest Krum scores on the full set."""
    n = len(x)
    dist = squared_distances(x.double()).numpy()
    k = max(1, n - f - 2)
    scores = [np.sort(np.delete(dist[i], i))[:k].sum() for i in range(n)]
    return sorted(np.argsort(scores, kind="stable")[: n - 2 * f].tolist())


def _find_seed(n, f, *, same: bool) -> int:
    """A data seed on which the paper's iterated selection and the one-shot one agree
    (``same``) or differ — both are common on random data."""
    for seed in range(1000):
        x = _updates(n, seed=seed)
        if (bulyan(x, f=f).accepted.tolist() == _one_shot_selection(x, f)) == same:
            return seed
    raise AssertionError("no such seed")


@pytest.mark.parametrize("n,f", [(7, 1), (11, 2), (15, 3), (9, 1)])
def test_bulyan_equals_flower_bulyan_when_selections_agree(flower_task, n, f):
    x = _updates(n, seed=_find_seed(n, f, same=True))
    ours = bulyan(x, f=f)
    assert ours.accepted.tolist() == _one_shot_selection(x, f)
    _close(ours.aggregate, _flower(Bulyan(num_malicious_nodes=f), _global(n), x))


@pytest.mark.parametrize("n,f", [(7, 1), (11, 2), (15, 3)])
def test_bulyan_follows_paper_iterated_krum_not_flower_one_shot(flower_task, n, f):
    """Intended difference: Flower picks θ updates by one-shot Multi-Krum scores; the paper
    (and ours) re-scores after each pick. On this data the selected sets differ."""
    x = _updates(n, seed=_find_seed(n, f, same=False))
    ours = bulyan(x, f=f)
    one_shot = _one_shot_selection(x, f)
    assert ours.accepted.tolist() != one_shot
    # our selection is the iterated one: re-score R after every pick
    dist = squared_distances(x.double()).numpy()
    remaining, picked = list(range(n)), []
    for _ in range(n - 2 * f):
        sub = dist[np.ix_(remaining, remaining)]
        k = max(1, len(remaining) - f - 2)
        scores = [np.sort(np.delete(sub[i], i))[:k].sum() for i in range(len(remaining))]
        totals = sub.sum(axis=1)
        picked.append(remaining.pop(min(range(len(remaining)), key=lambda i: (scores[i], totals[i], i))))
    assert ours.info["selection_order"] == picked
    # Flower's result is the same coordinate stage on its one-shot set
    flower = _flower(Bulyan(num_malicious_nodes=f), _global(n), x)
    flower_replayed = _flower(Bulyan(num_malicious_nodes=f, selection_rule=_keep(one_shot)), _global(n), x)
    _close(flower, flower_replayed)
    assert not torch.allclose(ours.aggregate, flower, atol=1e-4)


def _keep(rows: list[int]):
    """A Flower selection rule that returns the replies at ``rows`` (for replaying a set)."""
    def select(contents, num_malicious_nodes, num_nodes_to_select):
        assert num_nodes_to_select == len(rows)
        return [contents[i] for i in rows]

    return select


def test_bulyan_precondition_raises_where_flower_skips(flower_task):
    """Both refuse n < 4f + 3: Flower logs and returns (None, None), ours raises ValueError
    (the strategy then keeps the global model and records why)."""
    x = _updates(10, seed=5)
    assert Bulyan(num_malicious_nodes=2).aggregate_train(1, _replies(_global(), x)) == (None, None)
    with pytest.raises(ValueError, match="bulyan: f=2 needs n >= 4f"):
        bulyan(x, f=2)


def test_flower_one_shot_helper_matches_select_multikrum(flower_task):
    """Guard for the helper above: it is Flower's own select_multikrum on the replies."""
    n, f = 11, 2
    x = _updates(n, seed=7)
    contents = [r.content for r in _replies(_global(), x)]
    picked = select_multikrum(contents, num_malicious_nodes=f, num_nodes_to_select=n - 2 * f)
    assert sorted(contents.index(c) for c in picked) == _one_shot_selection(x, f)
