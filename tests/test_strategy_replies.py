"""Which replies the server counts: only nodes sent a message this round, once each, with the
integer partition id they were sent as; and which nodes may take part at all (exactly one per
partition id 0..num_partitions − 1)."""

import numpy as np
import pytest
from flwr.app import ConfigRecord, Error, MessageType, MetricRecord, RecordDict

from strategies import fedavg
from strategies.robust_strategy import RobustStrategy
from tests.conftest import make_reply, reply_from
from tests.test_strategy import SHAPES, _record, _start, _state


def _round_of_four(rng):
    strategy = RobustStrategy(fedavg, num_partitions=4, per_round=4, seed=0)
    _start(strategy, 4, _state(rng))
    clients = [_state(rng) for _ in range(4)]
    valid = [make_reply(clients[p], {"num-examples": 1, "partition-id": p}, 100 + p) for p in range(4)]
    return strategy, clients, valid


def _mean_of(clients, pids):
    return np.mean([clients[p]["a"] for p in pids], axis=0)


def test_two_replies_from_one_node_are_both_rejected(flower_task):
    rng = np.random.default_rng(20)
    strategy, clients, valid = _round_of_four(rng)
    twin = make_reply(_state(rng), {"num-examples": 1, "partition-id": 0}, 100)
    out, _ = strategy.aggregate_train(1, valid + [twin])
    assert strategy.last_round["accepted"] == [1, 2, 3]
    assert "2 replies" in strategy.last_round["rejected"]["0"]
    np.testing.assert_allclose(out["a"].numpy(), _mean_of(clients, [1, 2, 3]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pid", [0.0, [0]])
def test_a_partition_id_must_be_the_integer_the_node_was_sent(flower_task, pid):
    rng = np.random.default_rng(21)
    strategy, clients, valid = _round_of_four(rng)
    valid[0] = make_reply(clients[0], {"num-examples": 1, "partition-id": pid}, 100)
    out, _ = strategy.aggregate_train(1, valid)
    assert strategy.last_round["accepted"] == [1, 2, 3]
    assert set(strategy.last_round["rejected"]) == {"0"} and "partition-id" in strategy.last_round["rejected"]["0"]
    np.testing.assert_allclose(out["a"].numpy(), _mean_of(clients, [1, 2, 3]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("metrics", [{"num-examples": 1}, {"num-examples": 1, "partition-id": 1}])
def test_a_node_not_sent_a_message_never_counts(flower_task, metrics):
    rng = np.random.default_rng(22)
    strategy, clients, valid = _round_of_four(rng)
    stranger = lambda: make_reply(_state(rng), metrics, 999)  # noqa: E731
    out, _ = strategy.aggregate_train(1, valid + [stranger()])
    assert strategy.last_round["accepted"] == [0, 1, 2, 3]
    assert set(strategy.last_round["rejected"]) == {"node-999"}
    np.testing.assert_allclose(out["a"].numpy(), _mean_of(clients, range(4)), rtol=1e-5, atol=1e-6)
    # alone, it is no valid reply at all
    out, _ = strategy.aggregate_train(1, [stranger()])
    assert out is None and strategy.last_round["skipped"] == "no valid replies"
    assert set(strategy.last_round["rejected"]) == {"node-999", "0", "1", "2", "3"}


def test_array_order_does_not_matter(flower_task):
    rng = np.random.default_rng(23)
    strategy, clients, valid = _round_of_four(rng)
    valid[0] = make_reply({k: clients[0][k] for k in reversed(SHAPES)}, {"num-examples": 1, "partition-id": 0}, 100)
    out, _ = strategy.aggregate_train(1, valid)
    assert strategy.last_round["rejected"] == {} and strategy.last_round["accepted"] == [0, 1, 2, 3]
    for k in SHAPES:
        np.testing.assert_allclose(out[k].numpy(), np.mean([c[k] for c in clients], axis=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("malicious, value", [([1], float("inf")), ([0, 1, 2, 3], float("nan"))])
def test_updates_the_attack_made_non_finite_are_rejected(flower_task, malicious, value):
    def adversary(server_round, pids, updates, mal):
        updates = updates.clone()
        updates[mal] = value
        return updates

    rng = np.random.default_rng(24)
    strategy = RobustStrategy(fedavg, num_partitions=4, per_round=4, seed=0, malicious=malicious, adversary=adversary)
    _start(strategy, 4, _state(rng))
    clients = [_state(rng) for _ in range(4)]
    out, _ = strategy.aggregate_train(
        1, [make_reply(clients[p], {"num-examples": 1, "partition-id": p}, 100 + p) for p in range(4)])
    rejected = strategy.last_round["rejected"]
    assert set(rejected) == {str(p) for p in malicious}
    assert all("NaN or Inf" in rejected[str(p)] for p in malicious)
    honest = [p for p in range(4) if p not in malicious]
    if honest:
        assert strategy.last_round["accepted"] == honest
        np.testing.assert_allclose(out["a"].numpy(), _mean_of(clients, honest), rtol=1e-5, atol=1e-6)
    else:
        assert out is None and strategy.last_round["skipped"]


class QueryGrid:
    """Node 100 + i answers the partition-id query with ``answers[i]`` (an Error, or a value)."""

    def __init__(self, answers):
        self.answers = answers

    def get_node_ids(self):
        return [100 + i for i in range(len(self.answers))]

    def send_and_receive(self, messages, timeout=None):
        replies = []
        for m in messages:
            a = self.answers[m.metadata.dst_node_id - 100]
            content = a if isinstance(a, Error) else RecordDict({"info": MetricRecord({"partition-id": a})})
            replies.append(reply_from(m.metadata.dst_node_id, content, MessageType.QUERY))
        return replies


@pytest.mark.parametrize(
    "answers, message",
    [
        (list(range(10)), r"missing \[\], extra \[4, 5, 6, 7, 8, 9\]"),
        ([0, 1, 2], r"missing \[3\], extra \[\]"),
        ([0, 1.0, 2, 3], r"node 101 reported partition-id 1.0"),
        ([0, 1, 2, 3, 3], r"partition 3 is held by nodes \[103, 104\]"),
        ([0, 1, 2, 3, Error(code=0, reason="no partition-id")], r"node 104 failed: no partition-id"),
    ],
)
def test_nodes_must_hold_exactly_the_configured_partitions(flower_task, answers, message):
    strategy = RobustStrategy(fedavg, num_partitions=4, per_round=4, seed=0)
    with pytest.raises(RuntimeError, match=r"0\.\.3.*" + message):
        strategy.configure_train(1, _record(_state(np.random.default_rng(25))), ConfigRecord(), QueryGrid(answers))
