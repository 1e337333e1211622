"""Which replies the server counts: only nodes sent a message this round, once each, with the
integer partition id they were sent as; and which nodes may take part at all (exactly one per
partition id 0..num_partitions − 1)."""

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Error, MessageType, MetricRecord, RecordDict

import strategies.robust_strategy as robust_strategy
from strategies import fedavg
from strategies.inputs import takes
from strategies.result import AggregationResult, all_accepted
from strategies.robust_strategy import MAX_NUM_EXAMPLES, RobustStrategy
from tests.conftest import make_reply, reply_from
from tests.strategies.test_strategy import SHAPES, FakeGrid, _record, _start, _state


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


# --------------------------------------------------------------------------- what each round records


class Spy:
    """A mean rule that remembers what it was given."""

    def __init__(self):
        self.calls = []

    def __call__(self, updates, *, weights=None, **kwargs):
        self.calls.append({"updates": updates.clone(), "weights": weights, **kwargs})
        return AggregationResult(aggregate=updates.mean(0), accepted=all_accepted(len(updates)))


@pytest.fixture
def logged(monkeypatch):
    """The strategy's log lines, formatted."""
    lines = []
    monkeypatch.setattr(robust_strategy, "log", lambda level, fmt, *args, **kw: lines.append((level, fmt % args)))
    return lines


def _reply(state, pid, **metrics):
    return make_reply(state, {"num-examples": 1, "partition-id": pid, **metrics}, 100 + pid)


def _spy_strategy(rng, n=4, **kw):
    spy = Spy()
    strategy = RobustStrategy(spy, num_partitions=n, per_round=n, seed=0, **kw)
    glob = _state(rng)
    _start(strategy, n, glob)
    return strategy, spy, glob


@pytest.mark.parametrize("make, key, reason", [
    (lambda c: make_reply(c, {"num-examples": 1, "partition-id": 0}, 999), "node-999",
     "node was not sent a message this round"),
    (lambda c: reply_from(100, RecordDict({"arrays": _record(c), "extra": _record(c),
                                           "metrics": MetricRecord({"num-examples": 1, "partition-id": 0})})),
     "0", "reply must hold one ArrayRecord and one MetricRecord"),
    (lambda c: reply_from(100, RecordDict({"arrays": _record(c), "metrics": MetricRecord({"num-examples": 1, "partition-id": 0}),
                                           "more": MetricRecord({"x": 1})})),
     "0", "reply must hold one ArrayRecord and one MetricRecord"),
    (lambda c: _reply(c, 0, **{"num-examples": MAX_NUM_EXAMPLES + 1}), "0",
     f"num-examples {MAX_NUM_EXAMPLES + 1} not an int in [1, {MAX_NUM_EXAMPLES}]"),
    (lambda c: _reply({**c, "a": np.full((3, 4), np.nan, np.float32)}, 0), "0", "update has NaN or Inf"),
    (lambda c: _reply({**c, "c1": c["b"], "c2": c["b"], "c3": c["b"], "c4": c["b"]}, 0), "0",
     "array keys differ (missing [], extra ['c1', 'c2', 'c3'])"),
    (lambda c: reply_from(100, Error(code=3, reason="boom")), "0", "client error: boom"),
])
def test_each_rejection_is_recorded_and_logged_with_its_reason(flower_task, logged, make, key, reason):
    rng = np.random.default_rng(30)
    strategy, spy, _ = _spy_strategy(rng)
    clients = [_state(rng) for _ in range(4)]
    replies = [_reply(clients[p], p) for p in range(1, 4)] + [make(clients[0])]
    strategy.aggregate_train(1, replies)
    rejected = strategy.last_round["rejected"]
    assert rejected[key] == reason
    assert (30, f"round 1: rejected reply from {key}: {reason}") in logged  # WARNING
    assert strategy.last_round["replies"] == 3


def test_a_missing_key_list_names_at_most_three(flower_task):
    strategy = RobustStrategy(fedavg, num_partitions=2, per_round=2, seed=0)
    glob = {f"k{i}": np.zeros(2, np.float32) for i in range(6)}
    _start(strategy, 2, glob)
    strategy.aggregate_train(1, [_reply(glob, 0), _reply({"k0": glob["k0"]}, 1)])
    assert strategy.last_round["rejected"]["1"] == "array keys differ (missing ['k1', 'k2', 'k3'], extra [])"


def test_num_examples_at_the_bound_counts(flower_task):
    rng = np.random.default_rng(32)
    strategy, spy, _ = _spy_strategy(rng, n=2)
    strategy.aggregate_train(1, [_reply(_state(rng), 0, **{"num-examples": MAX_NUM_EXAMPLES}), _reply(_state(rng), 1)])
    assert strategy.last_round["rejected"] == {}
    assert spy.calls[0]["weights"].tolist() == [float(MAX_NUM_EXAMPLES), 1.0]


def test_bytes_norms_order_dtype_and_loss_of_a_round(flower_task):
    """bytes_up counts every reply that carried arrays (rejected ones too); the rule sees rows
    in partition order as float32 whatever the clients sent; update_norms are ‖w_i − w‖ to 5
    decimals; train_loss averages the finite losses."""
    rng = np.random.default_rng(33)
    strategy, spy, glob = _spy_strategy(rng)
    clients = [_state(rng) for _ in range(4)]
    as64 = {k: v.astype(np.float64) for k, v in clients[2].items()}
    replies = [_reply(clients[3], 3, **{"train-loss": 1.0}), _reply(as64, 2, **{"train-loss": 3.0}),
               _reply(clients[1], 1, **{"train-loss": float("nan")}), _reply(clients[0], 0, **{"num-examples": 0})]
    strategy.aggregate_train(1, replies)
    stats = strategy.last_round
    per_reply = sum(r.count_bytes() for r in replies[0].content.array_records.values())
    assert stats["bytes_up"] == 3 * per_reply + sum(r.count_bytes() for r in replies[1].content.array_records.values())
    assert stats["replies"] == 3
    updates = spy.calls[0]["updates"]
    assert updates.dtype == torch.float32
    expected = np.stack([np.concatenate([(clients[p][k].astype(np.float32) - glob[k]).ravel() for k in SHAPES])
                         for p in (1, 2, 3)])
    np.testing.assert_allclose(updates.numpy(), expected, rtol=0, atol=1e-6)
    assert stats["update_norms"] == {str(p): round(float(np.linalg.norm(expected[i])), 5)
                                     for i, p in enumerate((1, 2, 3))}
    assert stats["train_loss"] == 2.0



def test_a_reply_rejected_after_its_arrays_were_read_leaves_nothing_in_the_updates(flower_task):
    """Updates are parsed straight into one buffer, row after row: a reply found bad only
    after part of it was written there (NaN in its last array, a shape error in its second)
    must not leave that part in the rows the rule sees, and the next reply takes its row."""
    rng = np.random.default_rng(36)
    strategy, spy, glob = _spy_strategy(rng, n=5)
    clients = [_state(rng) for _ in range(5)]
    nan_last = {k: v.copy() for k, v in clients[1].items()}
    nan_last[list(SHAPES)[-1]].flat[-1] = np.nan
    bad_shape = dict(clients[3])
    bad_shape[list(SHAPES)[1]] = np.zeros(7, np.float32)
    replies = [_reply(c, p) for p, c in ((4, clients[4]), (3, bad_shape), (0, clients[0]), (1, nan_last), (2, clients[2]))]
    strategy.aggregate_train(1, replies)
    assert set(strategy.last_round["rejected"]) == {"1", "3"}
    expected = np.stack([np.concatenate([(clients[p][k] - glob[k]).ravel() for k in SHAPES]) for p in (0, 2, 4)])
    np.testing.assert_array_equal(spy.calls[0]["updates"].numpy(), expected.astype(np.float32))

def test_without_weighing_the_rule_gets_no_weights(flower_task):
    rng = np.random.default_rng(34)
    strategy, spy, _ = _spy_strategy(rng, n=2, weigh_by_examples=False)
    strategy.aggregate_train(1, [_reply(_state(rng), 0, **{"num-examples": 5}), _reply(_state(rng), 1)])
    assert spy.calls[0]["weights"] is None


def test_the_adversary_sees_the_round_after_a_resume_and_the_row_ids(flower_task):
    seen = []

    def adversary(server_round, pids, updates, mal):
        seen.append((server_round, list(pids), mal.tolist()))
        return updates

    rng = np.random.default_rng(35)
    strategy = RobustStrategy(fedavg, num_partitions=3, per_round=3, seed=0, malicious=[1], adversary=adversary)
    strategy.load_state_dict({"rounds_done": 2, "history": {}, "previous": None, "last_sent": {}})
    _start(strategy, 3, _state(rng))
    strategy.aggregate_train(1, [_reply(_state(rng), p) for p in (2, 0, 1)])
    assert seen == [(3, [0, 1, 2], [False, True, False])]
    assert strategy.last_round["round"] == 3


def test_an_adversary_that_cannot_craft_is_skipped_and_said(flower_task, logged):
    def adversary(server_round, pids, updates, mal):
        raise ValueError("too few honest updates")

    rng = np.random.default_rng(36)
    strategy = RobustStrategy(fedavg, num_partitions=2, per_round=2, seed=0, malicious=[0], adversary=adversary)
    _start(strategy, 2, _state(rng))
    out, _ = strategy.aggregate_train(1, [_reply(_state(rng), 0), _reply(_state(rng), 1)])
    assert out is not None
    assert strategy.last_round["attack_skipped"] == "too few honest updates"
    assert (30, "round 1: adversary not applied: too few honest updates") in logged


def test_rows_the_attack_made_non_finite_leave_with_their_weights(flower_task, logged):
    def adversary(server_round, pids, updates, mal):
        updates = updates.clone()
        updates[mal] = float("nan")
        return updates

    rng = np.random.default_rng(37)
    spy = Spy()
    strategy = RobustStrategy(spy, num_partitions=3, per_round=3, seed=0, malicious=[1], adversary=adversary)
    _start(strategy, 3, _state(rng))
    strategy.aggregate_train(1, [_reply(_state(rng), p, **{"num-examples": 10 * (p + 1)}) for p in range(3)])
    assert strategy.last_round["rejected"] == {"1": "update has NaN or Inf (written by the attack)"}
    assert spy.calls[0]["weights"].tolist() == [10.0, 30.0]
    assert (30, "round 1: rejected 1: the attack made it NaN or Inf") in logged
    # every row non-finite: no finite update, the round is skipped
    strategy = RobustStrategy(spy, num_partitions=1, per_round=1, seed=0, malicious=[0], adversary=adversary)
    _start(strategy, 1, _state(rng))
    out, _ = strategy.aggregate_train(1, [_reply(_state(rng), 0)])
    assert out is None and strategy.last_round["skipped"] == "no finite update"


def test_a_history_rule_gets_every_clients_running_sum(flower_task):
    spy = Spy()
    rule = takes("history")(lambda updates, *, weights=None, history: spy(updates, weights=weights, history=history))
    rng = np.random.default_rng(38)
    strategy = RobustStrategy(rule, num_partitions=2, per_round=2, seed=0)
    glob = _state(rng)
    sums = np.zeros((2, 17), np.float32)
    for r in (1, 2):
        _start(strategy, 2, glob, server_round=r)
        clients = [_state(rng) for _ in range(2)]
        strategy.aggregate_train(r, [_reply(clients[p], p) for p in range(2)])
        sums += np.stack([np.concatenate([(clients[p][k] - glob[k]).ravel() for k in SHAPES]) for p in range(2)])
        np.testing.assert_allclose(spy.calls[-1]["history"].numpy(), sums, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- what each train message holds
def test_train_messages_hold_the_arrays_the_round_and_the_round_config(flower_task):
    rng = np.random.default_rng(40)
    strategy = RobustStrategy(fedavg, num_partitions=5, per_round=3, seed=2,
                              round_config_fn=lambda r: {"lr": 0.5 / r, "tag": f"r{r}"})
    glob = _state(rng)
    msgs = list(strategy.configure_train(4, _record(glob), ConfigRecord({"kept": 7}), FakeGrid(5)))
    assert len(msgs) == 3
    for m in msgs:
        assert set(m.content.array_records) == {"arrays"} and set(m.content.config_records) == {"config"}
        cfg = m.content.config_records["config"]
        assert dict(cfg) == {"kept": 7, "server-round": 4, "lr": 0.125, "tag": "r4"}
        for k in SHAPES:
            np.testing.assert_array_equal(m.content.array_records["arrays"][k].numpy(), glob[k])
    stats = strategy.last_round
    assert set(stats) == {"round", "t0", "participants", "bytes_down"}
    assert stats["round"] == 4 and isinstance(stats["t0"], float)
    assert stats["participants"] == sorted(m.metadata.dst_node_id - 100 for m in msgs)
    assert stats["bytes_down"] == 3 * _record(glob).count_bytes()


def test_only_remembered_nodes_have_their_last_global_kept(flower_task):
    rng = np.random.default_rng(41)
    strategy = RobustStrategy(fedavg, num_partitions=5, per_round=5, seed=0, remember=[3])
    strategy.configure_train(1, _record(_state(rng)), ConfigRecord(), FakeGrid(5))
    assert set(strategy.last_sent) == {3}
    restored = {k: np.full(s, 9.0, np.float32) for k, s in SHAPES.items()}
    strategy.load_state_dict({"rounds_done": 1, "history": {}, "previous": None,
                              "last_sent": {"3": {k: torch.from_numpy(v) for k, v in restored.items()}}})
    glob = _state(rng)
    msgs = {m.metadata.dst_node_id - 100: m for m in strategy.configure_train(1, _record(glob), ConfigRecord(), FakeGrid(5))}
    memory = msgs[3].content
    assert set(memory.array_records) == {"arrays", robust_strategy.NODE_MEMORY}
    assert dict(memory.config_records["config"]) == {"server-round": 2}
    for k in SHAPES:
        np.testing.assert_array_equal(memory.array_records["arrays"][k].numpy(), glob[k])
        np.testing.assert_array_equal(memory.array_records[robust_strategy.NODE_MEMORY][k].numpy(), restored[k])
    for k in SHAPES:  # what node 3 was sent this round is what it remembers next
        np.testing.assert_array_equal(strategy.last_sent[3][k].numpy(), glob[k])


# --------------------------------------------------------------------------- rules that need the server
def test_root_update_and_embed_come_from_the_round_s_global_model(flower_task):
    seen = {}

    def root_update_fn(global_state, server_round):
        seen["root"] = ({k: v.copy() for k, v in global_state.items()}, server_round)
        return torch.ones(17)

    def embed_fn(global_state):
        seen["embed"] = {k: v.copy() for k, v in global_state.items()}
        return "probe-embedder"

    def rule(updates, *, weights=None, root_update, embed):
        seen["rule"] = (root_update.clone(), embed)
        return AggregationResult(aggregate=updates.mean(0), accepted=all_accepted(len(updates)))

    takes("root_update", "embed")(rule)
    rng = np.random.default_rng(42)
    strategy = RobustStrategy(rule, num_partitions=2, per_round=2, seed=0,
                              root_update_fn=root_update_fn, embed_fn=embed_fn)
    glob = _state(rng)
    _start(strategy, 2, glob, server_round=3)
    strategy.aggregate_train(3, [_reply(_state(rng), p) for p in range(2)])
    assert seen["root"][1] == 3
    for k in SHAPES:
        np.testing.assert_array_equal(seen["root"][0][k], glob[k])
        np.testing.assert_array_equal(seen["embed"][k], glob[k])
    assert torch.equal(seen["rule"][0], torch.ones(17)) and seen["rule"][1] == "probe-embedder"


def test_the_rule_s_generator_is_seeded_seed_times_1000003_plus_the_round(flower_task):
    drawn = []

    def rule(updates, *, weights=None, generator):
        drawn.append(torch.rand(3, generator=generator))
        return AggregationResult(aggregate=updates.mean(0), accepted=all_accepted(len(updates)))

    takes("generator")(rule)
    rng = np.random.default_rng(43)
    strategy = RobustStrategy(rule, num_partitions=2, per_round=2, seed=5)
    strategy.load_state_dict({"rounds_done": 2, "history": {}, "previous": None, "last_sent": {}})
    _start(strategy, 2, _state(rng))
    strategy.aggregate_train(1, [_reply(_state(rng), p) for p in range(2)])  # round 3
    assert torch.equal(drawn[0], torch.rand(3, generator=torch.Generator().manual_seed(5 * 1_000_003 + 3)))


# --------------------------------------------------------------------------- what a round returns
def test_the_new_global_model_has_every_array_in_place(flower_task):
    """Three arrays of different sizes: each gets its own slice of global + aggregate."""
    shapes = {"x": (2, 3), "y": (4,), "z": (1, 5)}
    rng = np.random.default_rng(44)
    glob = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    clients = [{k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()} for _ in range(2)]
    strategy = RobustStrategy(fedavg, num_partitions=2, per_round=2, seed=0)
    _start(strategy, 2, glob)
    out, metrics = strategy.aggregate_train(1, [_reply(clients[p], p, **{"train-loss": 2.0 + p}) for p in range(2)])
    for k in shapes:
        np.testing.assert_allclose(out[k].numpy(), (clients[0][k] + clients[1][k]) / 2, rtol=1e-5, atol=1e-6)
        assert out[k].numpy().dtype == np.float32
    assert dict(metrics) == {"num-clients": 2, "train-loss": 2.5}
    assert strategy.last_round["rule_info"] == {}


@pytest.mark.parametrize("error, traceback", [(ValueError("needs n > 2f + 2"), False), (RuntimeError("singular"), True)])
def test_a_rule_that_raises_is_logged_with_its_name_and_error(flower_task, logged, monkeypatch, error, traceback):
    calls = []
    monkeypatch.setattr(robust_strategy, "log", lambda level, fmt, *args, **kw: calls.append((fmt % args, kw)))

    def krumish(updates, *, weights=None):
        raise error

    rng = np.random.default_rng(45)
    strategy = RobustStrategy(krumish, num_partitions=2, per_round=2, seed=0)
    _start(strategy, 2, _state(rng))
    assert strategy.aggregate_train(1, [_reply(_state(rng), p) for p in range(2)]) == (None, None)
    assert calls == [(f"round 1: krumish not applied: {error}", {"exc_info": traceback})]
    assert strategy.last_round["skipped"] == f"krumish raised {type(error).__name__}: {error}"


def test_a_skipped_round_logs_why(flower_task, logged):
    def nan_rule(updates, *, weights=None):
        return AggregationResult(aggregate=torch.full((updates.shape[1],), float("nan")),
                                 accepted=all_accepted(len(updates)))

    rng = np.random.default_rng(46)
    strategy = RobustStrategy(nan_rule, num_partitions=2, per_round=2, seed=0)
    _start(strategy, 2, _state(rng))
    strategy.aggregate_train(1, [_reply(_state(rng), p) for p in range(2)])
    assert (30, "round 1: nan_rule returned a NaN or Inf aggregate") in logged
    overflow = RobustStrategy(fedavg, num_partitions=1, per_round=1, seed=0, server_lr=1e38)
    glob = {k: np.full(s, 3e38, np.float32) for k, s in SHAPES.items()}
    _start(overflow, 1, glob)
    overflow.aggregate_train(1, [_reply({k: np.full(s, 3.3e38, np.float32) for k, s in SHAPES.items()}, 0)])
    assert overflow.last_round["skipped"] == "the new global model would hold NaN or Inf"
    assert (30, "round 1: the new global model would hold NaN or Inf") in logged


def test_undecodable_arrays_and_a_list_loss_never_crash_the_round(flower_task):
    from flwr.app import Array, ArrayRecord

    rng = np.random.default_rng(47)
    strategy, spy, glob = _spy_strategy(rng, n=3)
    broken = ArrayRecord({k: Array(np.zeros(s, np.float32)) for k, s in SHAPES.items()})
    for array in broken.values():
        array.data = b"\x00\x01"  # bytes no reader can decode
    bad_bytes = reply_from(100, RecordDict({"arrays": broken, "metrics": MetricRecord({"num-examples": 1, "partition-id": 0})}))
    listed = _reply(_state(rng), 1, **{"train-loss": [1.0, 2.0]})
    out, _ = strategy.aggregate_train(1, [bad_bytes, listed, _reply(_state(rng), 2, **{"train-loss": 4.0})])
    assert out is not None
    assert strategy.last_round["rejected"]["0"].startswith("array 'a' cannot be read: ")
    assert strategy.last_round["accepted"] == [1, 2]
    assert strategy.last_round["train_loss"] == 4.0  # the list is no loss


def test_state_dict_right_after_a_resume_keeps_the_rounds_done(flower_task):
    strategy = RobustStrategy(fedavg, num_partitions=2, per_round=2, seed=0)
    strategy.load_state_dict({"rounds_done": 4, "history": {}, "previous": None, "last_sent": {}})
    assert strategy.state_dict()["rounds_done"] == 4
    assert RobustStrategy(fedavg, num_partitions=2, per_round=2, seed=0).state_dict()["rounds_done"] == 0


def test_replies_from_several_nodes_never_sent_a_message_are_each_rejected(flower_task):
    rng = np.random.default_rng(25)
    strategy, clients, valid = _round_of_four(rng)
    strangers = [make_reply(_state(rng), {"num-examples": 1, "partition-id": p}, 900 + p) for p in (0, 1)]
    out, _ = strategy.aggregate_train(1, strangers + valid)
    assert strategy.last_round["accepted"] == [0, 1, 2, 3]
    assert strategy.last_round["rejected"] == {"node-900": "node was not sent a message this round",
                                               "node-901": "node was not sent a message this round"}
    np.testing.assert_allclose(out["a"].numpy(), _mean_of(clients, [0, 1, 2, 3]), rtol=1e-5, atol=1e-6)


def test_an_attack_made_non_finite_row_is_dropped_when_replies_are_not_weighted(flower_task):
    def adversary(server_round, pids, updates, mal):
        updates = updates.clone()
        updates[mal] = float("nan")
        return updates

    rng = np.random.default_rng(26)
    strategy = RobustStrategy(fedavg, num_partitions=4, per_round=4, seed=0, malicious=[2], adversary=adversary,
                              weigh_by_examples=False)
    _start(strategy, 4, _state(rng))
    clients = [_state(rng) for _ in range(4)]
    out, _ = strategy.aggregate_train(
        1, [make_reply(clients[p], {"num-examples": 1 + 10 * p, "partition-id": p}, 100 + p) for p in range(4)])
    assert strategy.last_round["accepted"] == [0, 1, 3]
    np.testing.assert_allclose(out["a"].numpy(), _mean_of(clients, [0, 1, 3]), rtol=1e-5, atol=1e-6)


def test_a_skipped_rounds_warning_names_the_round_and_the_reason(flower_task, logged):
    def bad_rule(updates, *, weights=None):
        return AggregationResult(torch.ones(1), all_accepted(len(updates)))

    rng = np.random.default_rng(27)
    strategy = RobustStrategy(bad_rule, num_partitions=2, per_round=2, seed=0)
    _start(strategy, 2, _state(rng), server_round=3)
    strategy.aggregate_train(3, [_reply(_state(rng), p) for p in range(2)])
    reason = "bad_rule returned an aggregate of shape (1,), expected (17,)"
    assert strategy.last_round["skipped"] == reason
    assert logged[-1][1] == f"round 3: {reason}"
