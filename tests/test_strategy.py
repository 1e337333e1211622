"""The Flower adapter around the rules: FedAvg equals Flower's FedAvg on the same replies,
participants are seeded, reply order does not matter, bad replies are rejected not fatal."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from strategies import fedavg
from strategies.robust_strategy import RobustStrategy
from tests.conftest import make_reply, reply_from

SHAPES = {"a": (3, 4), "b": (5,)}


class FakeGrid:
    """Just enough of a Grid for partition-id discovery: node 100 + pid holds partition pid."""

    def __init__(self, n):
        self.n = n

    def get_node_ids(self):
        return [100 + p for p in range(self.n)]

    def send_and_receive(self, messages, timeout=None):
        return [
            reply_from(m.metadata.dst_node_id,
                       RecordDict({"info": MetricRecord({"partition-id": m.metadata.dst_node_id - 100})}),
                       MessageType.QUERY)
            for m in messages
        ]


def _state(rng):
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}


def _record(state):
    return ArrayRecord({k: Array(v) for k, v in state.items()})


def _start(strategy, n, global_state, server_round=1):
    return list(strategy.configure_train(server_round, _record(global_state), ConfigRecord(), FakeGrid(n)))


def test_fedavg_rule_is_the_weighted_mean():
    g = torch.Generator().manual_seed(0)
    updates = torch.randn(4, 6, generator=g)
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0])
    expected = sum(weights[i] * updates[i] for i in range(4)) / 10.0
    result = fedavg(updates, weights=weights)
    torch.testing.assert_close(result.aggregate, expected)
    assert result.accepted.tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(fedavg(updates).aggregate, updates.mean(0))


def test_fedavg_strategy_equals_flower_fedavg(flower_task):
    rng = np.random.default_rng(1)
    n = 5
    global_state = _state(rng)
    strategy = RobustStrategy(fedavg, per_round=n, seed=0)
    _start(strategy, n, global_state)
    clients = [_state(rng) for _ in range(n)]
    examples = [10, 20, 5, 40, 25]

    def replies():
        return [make_reply(c, {"num-examples": e, "partition-id": p}, 100 + p)
                for p, (c, e) in enumerate(zip(clients, examples))]

    ours, _ = strategy.aggregate_train(1, replies())
    theirs, _ = FedAvg().aggregate_train(1, replies())
    for k in SHAPES:
        np.testing.assert_allclose(ours[k].numpy(), theirs[k].numpy(), rtol=1e-5, atol=1e-6)
    hand = sum(e * c["a"] for c, e in zip(clients, examples)) / sum(examples)
    np.testing.assert_allclose(ours["a"].numpy(), hand, rtol=1e-5, atol=1e-6)


def test_participants_are_seeded_and_reply_order_does_not_matter(flower_task):
    rng = np.random.default_rng(2)
    global_state = _state(rng)
    a = RobustStrategy(fedavg, per_round=3, seed=7)
    b = RobustStrategy(fedavg, per_round=3, seed=7)
    sent_a = sorted(m.metadata.dst_node_id for m in _start(a, 10, global_state))
    sent_b = sorted(m.metadata.dst_node_id for m in _start(b, 10, global_state))
    assert sent_a == sent_b and len(sent_a) == 3
    clients = {node: _state(rng) for node in sent_a}
    replies = [make_reply(c, {"num-examples": 3, "partition-id": node - 100}, node) for node, c in clients.items()]
    out_a, _ = a.aggregate_train(1, replies)
    replies = [make_reply(c, {"num-examples": 3, "partition-id": node - 100}, node) for node, c in clients.items()]
    out_b, _ = b.aggregate_train(1, replies[::-1])
    for k in SHAPES:
        np.testing.assert_array_equal(out_a[k].numpy(), out_b[k].numpy())


@pytest.mark.parametrize(
    "corrupt, reason",
    [
        (lambda s, m: s.__setitem__("a", np.full((3, 4), np.nan, np.float32)), "NaN"),
        (lambda s, m: s.__setitem__("a", np.zeros((4, 3), np.float32)), "shape"),
        (lambda s, m: s.pop("b"), "keys"),
        (lambda s, m: s.__setitem__("c", np.zeros(2, np.float32)), "keys"),
        (lambda s, m: s.__setitem__("a", np.zeros((3, 4), np.int64)), "shape"),
        (lambda s, m: m.__setitem__("num-examples", -5), "num-examples"),
        (lambda s, m: m.__setitem__("num-examples", 10**12), "num-examples"),
        (lambda s, m: m.__setitem__("partition-id", 3), "partition-id"),
    ],
)
def test_malformed_reply_is_rejected_and_the_rest_aggregated(flower_task, corrupt, reason):
    rng = np.random.default_rng(3)
    global_state = _state(rng)
    strategy = RobustStrategy(fedavg, per_round=4, seed=0)
    _start(strategy, 4, global_state)
    clients = [_state(rng) for _ in range(4)]
    metrics = [{"num-examples": 10, "partition-id": p} for p in range(4)]
    bad_state = dict(clients[0])
    corrupt(bad_state, metrics[0])
    replies = [make_reply(bad_state, metrics[0], 100)] + [
        make_reply(clients[p], metrics[p], 100 + p) for p in range(1, 4)
    ]
    out, _ = strategy.aggregate_train(1, replies)
    assert set(strategy.last_round["rejected"]) == {"0"}
    assert reason in strategy.last_round["rejected"]["0"]
    expected = np.mean([clients[p]["a"] for p in range(1, 4)], axis=0)
    np.testing.assert_allclose(out["a"].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_error_replies_and_silence_are_counted(flower_task):
    from flwr.app import Error

    rng = np.random.default_rng(4)
    strategy = RobustStrategy(fedavg, per_round=3, seed=0)
    _start(strategy, 3, _state(rng))
    err = reply_from(100, Error(code=0, reason="client crashed"))
    ok = make_reply(_state(rng), {"num-examples": 1, "partition-id": 1}, 101)
    out, _ = strategy.aggregate_train(1, [err, ok])
    assert out is not None
    assert "client crashed" in strategy.last_round["rejected"]["0"]
    assert strategy.last_round["rejected"]["2"] == "no reply"


def test_no_valid_reply_keeps_the_global_model(flower_task):
    rng = np.random.default_rng(5)
    strategy = RobustStrategy(fedavg, per_round=2, seed=0)
    _start(strategy, 2, _state(rng))
    out, _ = strategy.aggregate_train(1, [])
    assert out is None and strategy.last_round["skipped"] == "no valid replies"


def test_missing_losses_are_skipped_in_the_round_loss(flower_task):
    rng = np.random.default_rng(6)
    strategy = RobustStrategy(fedavg, per_round=2, seed=0)
    _start(strategy, 2, _state(rng))
    replies = [make_reply(_state(rng), {"num-examples": 1, "partition-id": 0, "train-loss": 2.0}, 100),
               make_reply(_state(rng), {"num-examples": 1, "partition-id": 1}, 101)]
    _, metrics = strategy.aggregate_train(1, replies)
    assert strategy.last_round["train_loss"] == 2.0 and metrics["train-loss"] == 2.0
