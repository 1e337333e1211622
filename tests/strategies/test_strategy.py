"""The Flower adapter around the rules: FedAvg equals Flower's FedAvg on the same replies,
participants are seeded, reply order does not matter, bad replies are rejected not fatal, and a
rule gets exactly the inputs it declares (strategies/inputs.py)."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from strategies import fedavg
from strategies.inputs import takes
from strategies.result import AggregationResult, all_accepted
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


def test_fedavg_strategy_equals_flower_fedavg(flower_task):
    rng = np.random.default_rng(1)
    n = 5
    global_state = _state(rng)
    strategy = RobustStrategy(fedavg, num_partitions=n, per_round=n, seed=0)
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
    a = RobustStrategy(fedavg, num_partitions=10, per_round=3, seed=7)
    b = RobustStrategy(fedavg, num_partitions=10, per_round=3, seed=7)
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
    strategy = RobustStrategy(fedavg, num_partitions=4, per_round=4, seed=0)
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
    strategy = RobustStrategy(fedavg, num_partitions=3, per_round=3, seed=0)
    _start(strategy, 3, _state(rng))
    err = reply_from(100, Error(code=0, reason="client crashed"))
    ok = make_reply(_state(rng), {"num-examples": 1, "partition-id": 1}, 101)
    out, _ = strategy.aggregate_train(1, [err, ok])
    assert out is not None
    assert "client crashed" in strategy.last_round["rejected"]["0"]
    assert strategy.last_round["rejected"]["2"] == "no reply"


def test_no_valid_reply_keeps_the_global_model(flower_task):
    rng = np.random.default_rng(5)
    strategy = RobustStrategy(fedavg, num_partitions=2, per_round=2, seed=0)
    _start(strategy, 2, _state(rng))
    out, _ = strategy.aggregate_train(1, [])
    assert out is None and strategy.last_round["skipped"] == "no valid replies"


def test_missing_losses_are_skipped_in_the_round_loss(flower_task):
    rng = np.random.default_rng(6)
    strategy = RobustStrategy(fedavg, num_partitions=2, per_round=2, seed=0)
    _start(strategy, 2, _state(rng))
    replies = [make_reply(_state(rng), {"num-examples": 1, "partition-id": 0, "train-loss": 2.0}, 100),
               make_reply(_state(rng), {"num-examples": 1, "partition-id": 1}, 101)]
    _, metrics = strategy.aggregate_train(1, replies)
    assert strategy.last_round["train_loss"] == 2.0 and metrics["train-loss"] == 2.0


# -- state the strategy keeps for the rules, and what it does when a round cannot apply ------
def _flat(state):
    return np.concatenate([state[k].reshape(-1) for k in SHAPES]).astype(np.float64)


def _play(strategy, n, global_state, server_round, rng):
    """One round: every node sent a message replies global + a random Δ. Returns the new
    global state (the old one if the round was skipped) and {partition: Δ sent (flat)}."""
    sent = _start(strategy, n, global_state, server_round)
    replies, deltas = [], {}
    for m in sent:
        pid = m.metadata.dst_node_id - 100
        state = {k: (global_state[k] + rng.standard_normal(s)).astype(np.float32) for k, s in SHAPES.items()}
        deltas[pid] = _flat(state) - _flat(global_state)
        replies.append(make_reply(state, {"num-examples": 1, "partition-id": pid}, 100 + pid))
    out, _ = strategy.aggregate_train(server_round, replies)
    return ({k: out[k].numpy() for k in SHAPES} if out is not None else global_state), deltas


def test_history_is_the_cumulative_sum_of_each_clients_updates_this_round_included(flower_task):
    seen = []

    @takes("history")
    def recorder(updates, *, weights=None, history):
        seen.append(history.clone())
        return AggregationResult(updates.mean(0), all_accepted(len(updates)))

    rng = np.random.default_rng(10)
    strategy = RobustStrategy(recorder, num_partitions=5, per_round=3, seed=0)
    global_state, sums, expected, participations = _state(rng), {}, [], []
    for r in (1, 2, 3):
        global_state, deltas = _play(strategy, 5, global_state, r, rng)
        for p, d in deltas.items():
            sums[p] = sums.get(p, 0.0) + d
        expected.append(np.stack([sums[p] for p in sorted(deltas)]))
        participations.append(sorted(deltas))
    # the test means something only if some client comes back after sitting a round out
    assert any(p in participations[0] and p not in participations[1] and p in participations[2] for p in range(5))
    for got, want in zip(seen, expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)


def test_previous_is_the_last_applied_aggregate(flower_task):
    seen, aggregates = [], []

    @takes("previous")
    def recorder(updates, *, weights=None, previous):
        seen.append(None if previous is None else previous.clone())
        if len(seen) == 3:
            raise ValueError("this round cannot apply")
        aggregates.append(updates.mean(0) * 0.5)
        return AggregationResult(aggregates[-1], all_accepted(len(updates)))

    rng = np.random.default_rng(11)
    strategy = RobustStrategy(recorder, num_partitions=3, per_round=3, seed=0)
    global_state = _state(rng)
    for r in (1, 2, 3, 4):
        global_state, _ = _play(strategy, 3, global_state, r, rng)
    assert seen[0] is None
    torch.testing.assert_close(seen[1], aggregates[0])
    torch.testing.assert_close(seen[2], aggregates[1])
    torch.testing.assert_close(seen[3], aggregates[1])  # round 3 was skipped: nothing applied


def test_server_lr_scales_the_applied_aggregate(flower_task):
    rng = np.random.default_rng(12)
    strategy = RobustStrategy(fedavg, num_partitions=3, per_round=3, seed=0, server_lr=0.5)
    global_state = _state(rng)
    new_state, deltas = _play(strategy, 3, global_state, 1, rng)
    expected = _flat(global_state) + 0.5 * np.mean(list(deltas.values()), axis=0)
    np.testing.assert_allclose(_flat(new_state), expected, rtol=1e-5, atol=1e-5)


def test_generator_is_seeded_by_seed_and_round(flower_task):
    def draws(seed, server_round):
        out = []

        @takes("generator")
        def recorder(updates, *, weights=None, generator):
            out.append(torch.rand(4, generator=generator))
            return AggregationResult(updates.mean(0), all_accepted(len(updates)))

        rng = np.random.default_rng(13)
        _play(RobustStrategy(recorder, num_partitions=2, per_round=2, seed=seed), 2, _state(rng), server_round, rng)
        return out[0]

    torch.testing.assert_close(draws(3, 2), draws(3, 2))
    assert not torch.equal(draws(3, 1), draws(3, 2))
    assert not torch.equal(draws(3, 1), draws(4, 1))


def test_detection_counts_use_the_rows_the_rule_accepted(flower_task):
    from flwr.app import Error

    def first_three(updates, *, weights=None):
        return AggregationResult(updates[:3].mean(0), torch.tensor([0, 1, 2]))

    rng = np.random.default_rng(14)
    strategy = RobustStrategy(first_three, num_partitions=5, per_round=5, seed=0, malicious=[0, 2, 4])
    _start(strategy, 5, _state(rng))
    # partition 0 fails, so rows are partitions 1..4 and a row index is not a partition id
    replies = [reply_from(100, Error(code=0, reason="crashed"))] + [
        make_reply(_state(rng), {"num-examples": 1, "partition-id": p}, 100 + p) for p in range(1, 5)
    ]
    strategy.aggregate_train(1, replies)
    s = strategy.last_round
    assert (s["accepted"], s["flagged"]) == ([1, 2, 3], [4])
    # malicious rows: 2 (accepted: FN) and 4 (flagged: TP); honest 1, 3 accepted (TN)
    assert (s["tp"], s["fn"], s["fp"], s["tn"]) == (1, 1, 0, 2)
    assert (s["tpr"], s["fpr"], s["precision"]) == (0.5, 0.0, 1.0)


@pytest.mark.parametrize("error", [ValueError("n too small"), RuntimeError("boom"),
                                   torch.linalg.LinAlgError("singular")])
def test_a_rule_that_raises_skips_the_round(flower_task, error):
    def broken(updates, *, weights=None):
        raise error

    rng = np.random.default_rng(15)
    strategy = RobustStrategy(broken, num_partitions=3, per_round=3, seed=0)
    global_state = _state(rng)
    new_state, _ = _play(strategy, 3, global_state, 1, rng)
    assert new_state is global_state  # aggregate_train returned None: Flower keeps the model
    assert type(error).__name__ in strategy.last_round["skipped"] and str(error) in strategy.last_round["skipped"]
    assert "accepted" not in strategy.last_round


def test_a_non_finite_aggregate_is_never_applied(flower_task):
    @takes("previous")
    def nan_rule(updates, *, weights=None, previous):
        return AggregationResult(torch.full_like(updates[0], float("nan")), all_accepted(len(updates)))

    rng = np.random.default_rng(16)
    strategy = RobustStrategy(nan_rule, num_partitions=3, per_round=3, seed=0)
    global_state = _state(rng)
    new_state, _ = _play(strategy, 3, global_state, 1, rng)
    assert new_state is global_state and "NaN" in strategy.last_round["skipped"]
    assert strategy.previous is None


@pytest.mark.parametrize("shape", [(), (1,), (2, 7)])
def test_an_aggregate_of_the_wrong_shape_is_never_applied(flower_task, shape):
    def bad_rule(updates, *, weights=None):
        return AggregationResult(torch.ones(shape), all_accepted(len(updates)))

    rng = np.random.default_rng(18)
    strategy = RobustStrategy(bad_rule, num_partitions=3, per_round=3, seed=0)
    global_state = _state(rng)
    new_state, _ = _play(strategy, 3, global_state, 1, rng)
    assert new_state is global_state and "shape" in strategy.last_round["skipped"]


def test_a_global_model_that_would_overflow_is_never_applied(flower_task):
    # finite updates, but global + server_lr · aggregate does not fit the model's float16
    strategy = RobustStrategy(fedavg, num_partitions=2, per_round=2, seed=0, server_lr=2.0)
    global_state = {k: np.zeros(s, np.float16) for k, s in SHAPES.items()}
    _start(strategy, 2, global_state)
    replies = [make_reply({k: np.full(s, 6e4, np.float16) for k, s in SHAPES.items()},
                          {"num-examples": 1, "partition-id": p}, 100 + p) for p in range(2)]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the overflow is caught and said, not warned about on the way
        out, _ = strategy.aggregate_train(1, replies)
    assert out is None and "NaN or Inf" in strategy.last_round["skipped"]


def test_the_server_step_is_float32_arithmetic_on_the_global_model(flower_task):
    """global + server_lr · aggregate is computed as the global model's float32 arrays would
    compute it (each operation rounded to float32), whatever dtype the rule returns."""
    def float64_mean(updates, *, weights=None):
        return AggregationResult(updates.double().mean(0), all_accepted(len(updates)))

    rng = np.random.default_rng(23)
    strategy = RobustStrategy(float64_mean, num_partitions=2, per_round=2, seed=0, server_lr=0.3)
    global_state = _state(rng)
    _start(strategy, 2, global_state)
    clients = [{k: (v + rng.standard_normal(v.shape)).astype(np.float32) for k, v in global_state.items()}
               for _ in range(2)]
    out, _ = strategy.aggregate_train(1, [make_reply(c, {"num-examples": 1, "partition-id": p}, 100 + p)
                                          for p, c in enumerate(clients)])
    for k in SHAPES:
        deltas = np.stack([c[k] - global_state[k] for c in clients]).astype(np.float64)
        aggregate = torch.from_numpy(deltas.mean(0)).float()
        expected = torch.from_numpy(global_state[k]) + 0.3 * aggregate  # float32, rounded per operation
        assert out[k].numpy().dtype == np.float32
        np.testing.assert_array_equal(out[k].numpy(), expected.numpy())


def test_post_aggregate_step_maps_the_new_global_model(flower_task):
    # a fake server-side step: halve every array, and remember the round it was called in
    calls = []

    def halve(arrays, server_round):
        calls.append((server_round, {k: v.copy() for k, v in arrays.items()}))
        return {k: v * 0.5 for k, v in arrays.items()}, {"halved": True}

    rng = np.random.default_rng(19)
    plain = RobustStrategy(fedavg, num_partitions=3, per_round=3, seed=0)
    stepped = RobustStrategy(fedavg, num_partitions=3, per_round=3, seed=0, post_aggregate=halve)
    global_state = _state(rng)
    aggregated, _ = _play(plain, 3, global_state, 2, np.random.default_rng(20))
    sent, _ = _play(stepped, 3, global_state, 2, np.random.default_rng(20))
    assert [r for r, _ in calls] == [2]
    for k in SHAPES:
        np.testing.assert_array_equal(calls[0][1][k], aggregated[k])  # the step sees the aggregate
        np.testing.assert_array_equal(sent[k], aggregated[k] * 0.5)  # and its output is what is sent
    assert stepped.last_round["halved"] is True  # its metrics go into the round's record


def test_a_non_finite_post_aggregate_step_is_never_applied(flower_task):
    rng = np.random.default_rng(21)
    strategy = RobustStrategy(fedavg, num_partitions=2, per_round=2, seed=0,
                              post_aggregate=lambda arrays, r: ({k: v * np.nan for k, v in arrays.items()}, {}))
    global_state = _state(rng)
    new_state, _ = _play(strategy, 2, global_state, 1, rng)
    assert new_state is global_state and "NaN or Inf" in strategy.last_round["skipped"]


def test_a_rule_gets_exactly_the_inputs_it_declares(flower_task):
    seen = []

    def undeclared(updates, *, weights=None, **extra):
        seen.append(set(extra))
        return AggregationResult(updates.mean(0), all_accepted(len(updates)))

    rng = np.random.default_rng(22)
    _play(RobustStrategy(undeclared, num_partitions=2, per_round=2, seed=0), 2, _state(rng), 1, rng)
    _play(RobustStrategy(takes("history", "generator")(undeclared), num_partitions=2, per_round=2, seed=0),
          2, _state(rng), 1, rng)
    assert seen == [set(), {"history", "generator"}]
    with pytest.raises(ValueError, match="unknown rule inputs"):
        takes("server_model")
    with pytest.raises(ValueError, match="root_update_fn"):
        RobustStrategy(takes("root_update")(undeclared), num_partitions=2, per_round=2)


def test_every_rule_declares_the_inputs_its_signature_takes():
    import inspect

    from strategies import RULES
    from strategies.inputs import INPUTS, inputs_of

    for name, rule in RULES.items():
        keywords = set(inspect.signature(rule).parameters) & set(INPUTS)
        assert inputs_of(rule) == keywords, name


def test_takes_unknown_input_lists_the_allowed_inputs():
    with pytest.raises(ValueError, match=r"unknown rule inputs \['bogus'\]; allowed: history, previous, root_update"):
        takes("bogus")


def test_fltrust_root_update_trains_at_the_rounds_learning_rate(monkeypatch):
    from fedsim.app import build
    from fedsim.config import load_config
    from fedsim.models import create_model_and_transforms
    from fedsim.records import float_state

    lrs = []
    monkeypatch.setattr(build, "train_epochs", lambda *a, lr, **k: lrs.append(lr))
    cfg = load_config(None, ["rounds=5", "clients.lr_schedule='cosine'", "data.root_size=4"])
    model, preprocess, tokenizer = create_model_and_transforms(cfg.model.name)
    fn = build.root_update_fn(cfg, model, preprocess, tokenizer)
    arrays = {k: v.numpy() for k, v in float_state(model).items()}
    fn(arrays, 1)
    fn(arrays, 5)
    assert lrs == [pytest.approx(cfg.clients.lr), pytest.approx(build.round_lr(cfg, 5))]
    assert build.round_lr(cfg, 5) == pytest.approx(0.1 * cfg.clients.lr)


def test_summary_logs_the_rule_its_parameters_and_the_round_size(monkeypatch):
    # Flower prints this when a run starts: it is how a user sees which rule really ran.
    import strategies.robust_strategy as rs
    from strategies import krum

    lines = []
    monkeypatch.setattr(rs, "log", lambda level, msg, *args: lines.append((level, msg % args)))
    RobustStrategy(krum, {"f": 2}, num_partitions=10, per_round=7, seed=0, server_lr=0.5).summary()
    assert [level for level, _ in lines] == [rs.INFO, rs.INFO]
    assert lines[0][1] == "\t├──> rule: krum {'f': 2}"
    assert lines[1][1] == "\t└──> 7 clients per round, server lr 0.5"


# --------------------------------------------------------------------------- assigned partitions
class SilentGrid:
    """Nodes that must not be asked anything: ``send_and_receive`` fails the test."""

    def __init__(self, node_ids):
        self.node_ids = node_ids

    def get_node_ids(self):
        return list(self.node_ids)

    def send_and_receive(self, messages, timeout=None):
        raise AssertionError("assign_partitions must not message the nodes before round 1")


def test_assigned_partitions_go_to_the_nodes_in_id_order_with_no_query_and_name_the_partition(flower_task):
    from strategies.robust_strategy import PARTITION_ID

    rng = np.random.default_rng(40)
    nodes = [907, 12, 555, 3_000_000_000, 48]  # as Flower draws them: unordered, any size
    strategy = RobustStrategy(fedavg, num_partitions=5, per_round=3, seed=7, assign_partitions=True)
    msgs = list(strategy.configure_train(1, _record(_state(rng)), ConfigRecord({"x": 1}), SilentGrid(nodes)))
    assert strategy.node_of == {0: 12, 1: 48, 2: 555, 3: 907, 4: 3_000_000_000}
    # the same partitions as discovery would sample (the sampling is over partition ids)
    discovered = RobustStrategy(fedavg, num_partitions=5, per_round=3, seed=7)
    expected = sorted(m.metadata.dst_node_id - 100 for m in _start(discovered, 5, _state(rng)))
    got = sorted(m.content.config_records["config"][PARTITION_ID] for m in msgs)
    assert got == expected
    for m in msgs:
        p = m.content.config_records["config"][PARTITION_ID]
        assert m.metadata.dst_node_id == strategy.node_of[p]
        assert m.content.config_records["config"]["x"] == 1
    # without assignment the messages name no partition (a deployment's node holds its own)
    assert all(PARTITION_ID not in m.content.config_records["config"] for m in _start(discovered, 5, _state(rng)))
    # a reply must still carry the partition its node was given
    replies = [make_reply(_state(rng), {"num-examples": 1, "partition-id": (p + 1) % 5 if i == 0 else p},
                          strategy.node_of[p])
               for i, p in enumerate(got)]
    strategy.aggregate_train(1, replies)
    assert list(strategy.last_round["rejected"]) == [str(got[0])]


def test_assigned_partitions_need_one_node_per_partition(flower_task):
    strategy = RobustStrategy(fedavg, num_partitions=4, per_round=2, seed=0, assign_partitions=True)
    with pytest.raises(RuntimeError) as e:
        strategy.configure_train(1, _record(_state(np.random.default_rng(41))), ConfigRecord(), SilentGrid([5, 6, 7]))
    assert str(e.value) == "partition assignment: 3 nodes for num_partitions=4; one node per partition id 0..3"


def test_discovery_names_every_problem_of_the_nodes_replies(flower_task):
    """Partition discovery (deployment: the server asks each node for its partition id) fails
    with one message naming each bad reply, the ids seen, and the missing and extra ones."""
    from flwr.app import Error

    class Grid:
        def get_node_ids(self):
            return [103, 100, 101, 102, 104, 105]

        def send_and_receive(self, messages, timeout=None):
            assert sorted(m.metadata.dst_node_id for m in messages) == [100, 101, 102, 103, 104, 105]
            assert timeout == 600  # a node that never answers stops discovery after 10 minutes, not never
            info = lambda pid: RecordDict({"info": MetricRecord({"partition-id": pid})})  # noqa: E731
            return [reply_from(100, info(0), MessageType.QUERY),
                    reply_from(101, Error(code=0, reason="no data"), MessageType.QUERY),
                    reply_from(102, info(1.0), MessageType.QUERY),
                    reply_from(103, info(0), MessageType.QUERY),
                    reply_from(104, RecordDict(), MessageType.QUERY),
                    reply_from(105, info(7), MessageType.QUERY)]

    strategy = RobustStrategy(fedavg, num_partitions=3, per_round=3, seed=0, assign_partitions=False)
    with pytest.raises(RuntimeError) as e:
        strategy.configure_train(1, _record(_state(np.random.default_rng(0))), ConfigRecord(), Grid())
    assert str(e.value) == (
        "partition discovery: expected one node per partition id 0..2 (num_partitions=3), saw ids [0, 7] "
        "from 6 nodes; missing [1, 2], extra [7]; node 101 failed: no data; node 102 reported partition-id "
        "1.0, not an int; node 104 reported partition-id None, not an int; partition 0 is held by nodes [100, 103]")
    # exactly one node per partition: the mapping, whatever order the replies come in
    assert RobustStrategy(fedavg, num_partitions=4, per_round=2)._discover(FakeGrid(4)) == {0: 100, 1: 101, 2: 102,
                                                                                            3: 103}


def test_the_seed_defaults_to_0(flower_task):
    state = _state(np.random.default_rng(42))
    default = sorted(m.metadata.dst_node_id for m in _start(RobustStrategy(fedavg, num_partitions=20, per_round=5), 20,
                                                            state))
    seeded = [sorted(m.metadata.dst_node_id for m in _start(RobustStrategy(fedavg, num_partitions=20, per_round=5,
                                                                           seed=s), 20, state)) for s in (0, 1)]
    assert default == seeded[0] != seeded[1]
