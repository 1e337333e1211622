"""The one Flower strategy around every pure aggregation rule.

It only (1) picks the round's participants with a seeded RNG (Flower's own sampling uses the
unseeded global ``random``), (2) turns the replies into an (n, d) tensor of updates
Δ_i = w_i − w_global, rows sorted by partition id, after rejecting malformed replies, (3) calls
the rule, (4) applies ``global + server_lr · aggregate`` — unless the rule raised or that holds
NaN/Inf: the round is then skipped and the global model kept —, and (5) records what the rule
accepted against the known malicious partitions. Only the nodes sent a message this round count,
each once, with the integer partition id they were sent as. The extra inputs a rule declares with
``takes`` (``strategies.inputs``: ``history``, ``previous``, ``root_update``, ``generator``,
``embed``) are kept here and passed in. An optional server-side step (``post_aggregate``, e.g.
fine-tuning on server data) maps the new global model before it is sent.

Resuming: ``state_dict()`` holds everything the strategy carries from round to round (the
rules' history and previous aggregate, the round reached, the global model each ``remember``
node last received); ``load_state_dict`` on a fresh strategy continues from there — Flower's
loop counts its rounds from 1 again, and the strategy adds the rounds already done.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from logging import INFO, WARNING

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore import log

from strategies.detection import detection_counts
from strategies.inputs import inputs_of

# The train message's record holding, after a resume, the global model a remembered node last
# received (the node's own memory did not survive the restart).
NODE_MEMORY = "node-memory"

# The train config's entry naming the partition a node trains this round, when the server
# assigns partitions (``assign_partitions``) instead of asking the nodes for theirs.
PARTITION_ID = "partition-id"

# Updates with Σ num-examples above this are implausible for a simulated client and rejected.
MAX_NUM_EXAMPLES = 10**7

# (round, partition ids in row order, updates (n, d), malicious row mask) → updates to use
Adversary = Callable[[int, list[int], torch.Tensor, torch.Tensor], torch.Tensor]
# (global arrays, round) → (arrays, metrics for the round's record): a server-side step on the
# new global model of the round
PostAggregate = Callable[[dict[str, np.ndarray], int], tuple[dict[str, np.ndarray], dict]]


def _rejected(pid: int | None, reason: str):
    """``_parse``'s answer for a reply that does not count: its partition id (None for a node
    not sent a message) and why; no update."""
    return pid, reason, 0, 0.0


def _mean_finite(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


@dataclass
class _Batch:
    """A round's valid replies: ``rows`` (partition id, num-examples, reported loss) in row
    order, their ``updates`` (n, d), FedAvg ``weights`` (num-examples; None when not weighed)
    and the ``malicious`` row mask (ground truth)."""

    rows: list[tuple[int, int, float]]
    updates: torch.Tensor
    weights: torch.Tensor | None
    malicious: torch.Tensor

    @property
    def pids(self) -> list[int]:
        return [r[0] for r in self.rows]

    def keep(self, mask: torch.Tensor) -> None:
        """Only the rows where ``mask`` is True."""
        self.rows = [r for r, k in zip(self.rows, mask.tolist()) if k]
        self.updates, self.malicious = self.updates[mask], self.malicious[mask]
        self.weights = self.weights[mask] if self.weights is not None else None


class RobustStrategy(Strategy):
    """Thin Flower adapter: ``rule(updates, *, weights, **params)`` does all the math.

    ``malicious`` (ground truth, used only for detection metrics and the adversary hook),
    ``adversary``: the simulation device for omniscient attacks — it sees the honest updates of
    the round before aggregation and may rewrite the malicious rows.
    ``num_partitions``: the nodes must hold exactly the partition ids 0..num_partitions − 1,
    one node each (checked before round 1).
    ``assign_partitions``: instead of asking every node for its partition before round 1 (one
    message per node), give partition i to the i-th node in node-id order and name it in each
    train message (``PARTITION_ID``). For Flower's simulation, whose nodes are alike and whose
    engine scans every pending message for every node (discovery costs O(nodes²) there: 288 s
    at 10,000 nodes, bench/results.md); a deployment's nodes hold their own partitions.
    ``root_update_fn(global_state, round) -> (d,)``: for rules that take ``root_update``.
    ``embed_fn(global_state) -> embed``: for rules that take ``embed`` (``strategies.inputs``).
    ``round_config_fn(round) -> dict``: per-round entries added to the train config.
    ``post_aggregate(global_arrays, round) -> (arrays, metrics)``: a server-side step on the
    aggregated model (same keys, shapes and dtypes) before it is sent; its output is checked
    for NaN/Inf like the aggregate, and its metrics go into the round's record.
    ``remember``: partition ids whose node keeps the global models it received between rounds
    (Neurotoxin's attacker): the strategy keeps the last one sent to each, so that a resumed
    run hands it back (``NODE_MEMORY``) the first time the node trains again."""

    def __init__(
        self,
        rule: Callable,
        params: dict | None = None,
        *,
        num_partitions: int,
        per_round: int,
        seed: int = 0,
        server_lr: float = 1.0,
        malicious: Iterable[int] = (),
        adversary: Adversary | None = None,
        root_update_fn: Callable[[dict, int], torch.Tensor] | None = None,
        embed_fn: Callable[[dict], Callable[[torch.Tensor], torch.Tensor]] | None = None,
        round_config_fn: Callable[[int], dict] | None = None,
        post_aggregate: PostAggregate | None = None,
        weigh_by_examples: bool = True,
        remember: Iterable[int] = (),
        assign_partitions: bool = False,
    ) -> None:
        self.rule, self.params = rule, dict(params or {})
        self.num_partitions, self.per_round = num_partitions, per_round
        self.seed, self.server_lr = seed, server_lr
        self.malicious = set(malicious)
        self.adversary, self.root_update_fn, self.embed_fn = adversary, root_update_fn, embed_fn
        self.round_config_fn, self.post_aggregate = round_config_fn, post_aggregate
        self.weigh_by_examples = weigh_by_examples
        self.assign_partitions = assign_partitions
        self._wants = inputs_of(rule)
        if "root_update" in self._wants and root_update_fn is None:
            raise ValueError(f"{rule.__name__} takes root_update: pass root_update_fn")
        if "embed" in self._wants and embed_fn is None:
            raise ValueError(f"{rule.__name__} takes embed: pass embed_fn")
        self.node_of: dict[int, int] = {}  # partition id → node id
        self.history: dict[int, torch.Tensor] = {}
        self.previous: torch.Tensor | None = None
        self._global: dict[str, np.ndarray] | None = None
        self._sent: dict[int, int] = {}  # node id → partition id, this round
        self.last_round: dict = {}
        self.rounds_done = 0  # rounds of earlier sessions of a resumed run
        self.remember = set(remember)
        self.last_sent: dict[int, ArrayRecord] = {}  # remembered partition → last global sent
        self._restore: dict[int, ArrayRecord] = {}  # … still to hand back after a resume

    # -- resuming ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """What the next round depends on, as tensors and ints (``torch.load(weights_only=True)``
        reads it back): rounds done, the rules' history and previous aggregate, and the global
        model each remembered node last received."""
        return {
            "rounds_done": self.last_round.get("round", self.rounds_done),
            "history": {str(p): h for p, h in self.history.items()},
            "previous": self.previous,
            "last_sent": {str(p): {k: torch.from_numpy(a.numpy()) for k, a in rec.items()}
                          for p, rec in {**self._restore, **self.last_sent}.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.rounds_done = int(state["rounds_done"])
        self.history = {int(p): h for p, h in state["history"].items()}
        self.previous = state["previous"]
        self._restore = {int(p): ArrayRecord({k: Array(t.numpy()) for k, t in arrays.items()})
                         for p, arrays in state["last_sent"].items()}

    # -- Flower interface ------------------------------------------------------------------
    def summary(self) -> None:
        log(INFO, "\t├──> rule: %s %s", self.rule.__name__, self.params)
        log(INFO, "\t└──> %d clients per round, server lr %s", self.per_round, self.server_lr)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        t0 = time.perf_counter()
        server_round += self.rounds_done
        if not self.node_of:
            self.node_of = self._assign(grid) if self.assign_partitions else self._discover(grid)
        partitions = sorted(self.node_of)
        rng = np.random.default_rng([self.seed, server_round])
        chosen = sorted(rng.choice(partitions, size=min(self.per_round, len(partitions)), replace=False).tolist())
        self._global = {k: a.numpy() for k, a in arrays.items()}
        self._sent = {self.node_of[p]: p for p in chosen}
        cfg = ConfigRecord(dict(config))
        cfg["server-round"] = server_round
        for k, v in (self.round_config_fn(server_round) if self.round_config_fn else {}).items():
            cfg[k] = v
        bytes_down = arrays.count_bytes() * len(chosen)
        self.last_round = {"round": server_round, "t0": t0, "participants": chosen, "bytes_down": bytes_down}
        messages = []
        for p in chosen:
            records = {"arrays": arrays, "config": cfg}
            if self.assign_partitions:
                records["config"] = ConfigRecord({**cfg, PARTITION_ID: p})
            if p in self._restore:
                # not protocol traffic but the simulation restoring a node's memory: not in bytes_down
                records[NODE_MEMORY] = self._restore.pop(p)
            if p in self.remember:
                self.last_sent[p] = arrays
            messages.append(Message(content=RecordDict(records), dst_node_id=self.node_of[p], message_type=MessageType.TRAIN))
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The round's aggregation as small steps, each overridable (in the manner of Flower's
        ``FedAvg``): ``_parse_replies`` → ``_apply_adversary`` → ``_rule_inputs`` → ``_run_rule``
        → ``_step_global`` → ``_record``. A step that finds the round cannot be aggregated says
        why in the round's record (``skipped``) and returns None: the global model is kept."""
        server_round += self.rounds_done
        batch = self._parse_replies(server_round, list(replies))
        if batch is None or not self._apply_adversary(server_round, batch):
            return None, None
        result = self._run_rule(server_round, batch, self._rule_inputs(server_round, batch))
        if result is None:
            return None, None
        out = self._step_global(server_round, result)
        if out is None:
            return None, None
        return ArrayRecord({k: Array(v) for k, v in out.items()}), self._record(batch, result)

    def _parse_replies(self, server_round: int, replies: list[Message]) -> _Batch | None:
        """The valid replies' updates as one (n, d) tensor, rows in the order of the
        partitions the messages went to (a valid reply carries its node's partition id), each
        update parsed straight into the next row of one buffer (no second (n, d) copy);
        malformed replies and nodes that sent nothing are recorded as rejected. None when no
        reply is valid."""
        stats = self.last_round
        per_node = Counter(msg.metadata.src_node_id for msg in replies)
        replies.sort(key=lambda m: (m.metadata.src_node_id not in self._sent, self._sent.get(m.metadata.src_node_id, 0)))
        buffer = np.empty((len(replies), sum(a.size for a in self._global.values())), dtype=np.float32)
        rows, rejected, bytes_up = [], {}, 0
        for msg in replies:
            node = msg.metadata.src_node_id
            pid, reason, n_ex, loss = self._parse(msg, per_node[node], buffer[len(rows)])
            if msg.has_content():
                bytes_up += sum(r.count_bytes() for r in msg.content.array_records.values())
            if reason:
                key = str(pid) if pid is not None else f"node-{node}"
                rejected[key] = reason
                log(WARNING, "round %d: rejected reply from %s: %s", server_round, key, reason)
                continue
            rows.append((pid, n_ex, loss))
        pids = [r[0] for r in rows]
        stats.update(bytes_up=bytes_up, rejected=rejected, replies=len(rows))
        for p in set(self._sent.values()) - set(pids) - {int(k) for k in rejected if k.isdigit()}:
            rejected[str(p)] = "no reply"
        if not rows:
            stats["skipped"] = "no valid replies"
            return None
        updates = torch.from_numpy(buffer[: len(rows)])
        stats["update_norms"] = {str(p): round(float(u.norm()), 5) for p, u in zip(pids, updates)}
        weights = torch.tensor([float(r[1]) for r in rows]) if self.weigh_by_examples else None
        return _Batch(rows, updates, weights, torch.tensor([p in self.malicious for p in pids]))

    def _apply_adversary(self, server_round: int, batch: _Batch) -> bool:
        """The omniscient attack rewrites the malicious rows (the simulation device); what it
        wrote is what those clients sent, so a NaN/Inf row is rejected as in ``_parse``. False
        when no finite update is left."""
        if self.adversary is None or not batch.malicious.any():
            return True
        stats = self.last_round
        try:
            batch.updates = self.adversary(server_round, batch.pids, batch.updates, batch.malicious)
        except ValueError as e:
            # e.g. too few honest updates this round to craft from: the attackers send
            # what they trained, and rounds.jsonl says so.
            log(WARNING, "round %d: adversary not applied: %s", server_round, e)
            stats["attack_skipped"] = str(e)
        finite = torch.isfinite(batch.updates).all(dim=1)
        if finite.all():
            return True
        for i in torch.nonzero(~finite).flatten().tolist():
            stats["rejected"][str(batch.pids[i])] = "update has NaN or Inf (written by the attack)"
            log(WARNING, "round %d: rejected %s: the attack made it NaN or Inf", server_round, batch.pids[i])
        batch.keep(finite)
        if not batch.rows:
            stats["skipped"] = "no finite update"
            return False
        return True

    def _rule_inputs(self, server_round: int, batch: _Batch) -> dict:
        """The rule's parameters plus the server inputs it declares (``strategies.inputs``):
        each client's accumulated updates (``history``), the last aggregate (``previous``), the
        server's own update on its root data (``root_update``), an embedder of the global model
        (``embed``), a generator seeded by the run's seed and the round (``generator``)."""
        kwargs = dict(self.params)
        if "history" in self._wants:
            for p, u in zip(batch.pids, batch.updates):
                self.history[p] = self.history.get(p, torch.zeros_like(u)) + u
            kwargs["history"] = torch.stack([self.history[p] for p in batch.pids])
        if "previous" in self._wants:
            kwargs["previous"] = self.previous
        if "root_update" in self._wants:
            kwargs["root_update"] = self.root_update_fn(self._global, server_round)
        if "embed" in self._wants:
            kwargs["embed"] = self.embed_fn(self._global)
        if "generator" in self._wants:
            kwargs["generator"] = torch.Generator().manual_seed(self.seed * 1_000_003 + server_round)
        return kwargs

    def _run_rule(self, server_round: int, batch: _Batch, kwargs: dict):
        """The rule's result, or None (the round skipped, the reason recorded) when it raised
        or returned an aggregate of the wrong shape or holding NaN/Inf — never a fallback to
        FedAvg."""
        stats = self.last_round
        try:
            result = self.rule(batch.updates, weights=batch.weights, **kwargs)
        except Exception as e:
            # A precondition (e.g. Krum's n > 2f + 2) failed with the replies we actually got,
            # or the math broke (a singular matrix): one round must not end the run.
            log(WARNING, "round %d: %s not applied: %s", server_round, self.rule.__name__, e,
                exc_info=not isinstance(e, ValueError))
            stats["skipped"] = f"{self.rule.__name__} raised {type(e).__name__}: {e}"
            return None
        d = batch.updates.shape[1]
        if tuple(result.aggregate.shape) != (d,):
            # a (1,) or () aggregate would broadcast silently onto every coordinate
            stats["skipped"] = (f"{self.rule.__name__} returned an aggregate of shape "
                                f"{tuple(result.aggregate.shape)}, expected ({d},)")
            log(WARNING, "round %d: %s", server_round, stats["skipped"])
            return None
        if not torch.isfinite(result.aggregate).all():
            stats["skipped"] = f"{self.rule.__name__} returned a NaN or Inf aggregate"
            log(WARNING, "round %d: %s", server_round, stats["skipped"])
            return None
        return result

    def _step_global(self, server_round: int, result) -> dict[str, np.ndarray] | None:
        """``global + server_lr · aggregate`` in the global model's arrays, then the server-side
        step (``post_aggregate``); None when the new global model would hold NaN or Inf."""
        stats = self.last_round
        flat = torch.from_numpy(np.concatenate([a.reshape(-1) for a in self._global.values()]).astype(np.float32))
        flat = flat + self.server_lr * result.aggregate.to(flat.dtype)
        out, i = {}, 0
        with np.errstate(over="ignore"):  # an overflow to Inf is caught just below
            for k, a in self._global.items():
                out[k] = flat[i : i + a.size].reshape(a.shape).numpy().astype(a.dtype)
                i += a.size
        if self.post_aggregate is not None:
            out, step_metrics = self.post_aggregate(out, server_round)
            stats.update(step_metrics)
        if not all(np.isfinite(v).all() for v in out.values()):
            stats["skipped"] = "the new global model would hold NaN or Inf"
            log(WARNING, "round %d: %s", server_round, stats["skipped"])
            return None
        return out

    def _record(self, batch: _Batch, result) -> MetricRecord:
        """What the rule accepted and flagged against the known malicious partitions, its info,
        the mean reported training loss; the aggregate kept as ``previous``."""
        pids = batch.pids
        accepted = sorted(pids[i] for i in result.accepted.tolist())
        stats = self.last_round
        stats.update(
            accepted=accepted,
            flagged=sorted(set(pids) - set(accepted)),
            **detection_counts(
                [pids.index(p) for p in accepted], batch.malicious.tolist(), len(pids)
            ),
            rule_info=result.info,
            # clients may omit or garble their loss (NaN): average the ones that reported it
            train_loss=_mean_finite([r[2] for r in batch.rows]),
        )
        self.previous = result.aggregate
        metrics = {"num-clients": len(batch.rows)}
        if stats["train_loss"] is not None:
            metrics["train-loss"] = stats["train_loss"]
        return MetricRecord(metrics)

    def configure_evaluate(self, server_round, arrays, config, grid) -> Iterable[Message]:
        return []  # evaluation is centralised (evaluate_fn)

    def aggregate_evaluate(self, server_round, replies) -> MetricRecord | None:
        return None

    # -- helpers ---------------------------------------------------------------------------
    def _assign(self, grid: Grid) -> dict[int, int]:
        """Partition i → the i-th node id in ascending order; RuntimeError unless there is
        exactly one node per partition."""
        node_ids = sorted(grid.get_node_ids())
        if len(node_ids) != self.num_partitions:
            raise RuntimeError(f"partition assignment: {len(node_ids)} nodes for num_partitions="
                               f"{self.num_partitions}; one node per partition id 0..{self.num_partitions - 1}")
        return dict(enumerate(node_ids))

    def _discover(self, grid: Grid) -> dict[int, int]:
        """Ask every node for its partition id (the server cannot see the mapping). Anything but
        exactly one node for each of 0..num_partitions − 1 is a RuntimeError: a node outside
        that range would fail every round, a missing one would silently never train."""
        node_ids = sorted(grid.get_node_ids())
        msgs = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY) for n in node_ids]
        nodes_of: dict[int, list[int]] = {}
        problems = []
        for reply in grid.send_and_receive(msgs, timeout=600):
            node = reply.metadata.src_node_id
            if reply.has_error():
                problems.append(f"node {node} failed: {reply.error.reason}")
                continue
            info = reply.content.metric_records.get("info")
            pid = info.get("partition-id") if info is not None else None
            if type(pid) is not int:
                problems.append(f"node {node} reported partition-id {pid!r}, not an int")
                continue
            nodes_of.setdefault(pid, []).append(node)
        expected = set(range(self.num_partitions))
        missing, extra = sorted(expected - set(nodes_of)), sorted(set(nodes_of) - expected)
        problems += [f"partition {p} is held by nodes {sorted(n)}"
                     for p, n in sorted(nodes_of.items()) if len(n) > 1]
        if missing or extra or problems:
            raise RuntimeError(
                f"partition discovery: expected one node per partition id 0..{self.num_partitions - 1} "
                f"(num_partitions={self.num_partitions}), saw ids {sorted(nodes_of)} from "
                f"{len(node_ids)} nodes; missing {missing}, extra {extra}"
                + "".join(f"; {p}" for p in problems)
            )
        return {p: n[0] for p, n in nodes_of.items()}

    def _parse(self, msg: Message, replies_from_node: int, row: np.ndarray):
        """(partition id — None for a node not sent a message —, reason to reject or None,
        num-examples, loss); the flat float32 update (reply − global) is written into ``row``
        (of the global model's size), which holds nothing usable when the reply is rejected."""
        node = msg.metadata.src_node_id
        if node not in self._sent:
            return _rejected(None, "node was not sent a message this round")
        expected_pid = self._sent[node]
        if replies_from_node > 1:
            # which one is genuine cannot be told: none counts
            return _rejected(expected_pid, f"{replies_from_node} replies from its node")
        if msg.has_error():
            return _rejected(expected_pid, f"client error: {msg.error.reason}")
        content = msg.content
        if len(content.array_records) != 1 or len(content.metric_records) != 1:
            return _rejected(expected_pid, "reply must hold one ArrayRecord and one MetricRecord")
        metrics = next(iter(content.metric_records.values()))
        pid, n_ex = metrics.get("partition-id"), metrics.get("num-examples")
        if type(pid) is not int or pid != expected_pid:
            return _rejected(expected_pid, f"partition-id {pid!r} does not match the node ({expected_pid})")
        if not isinstance(n_ex, int) or not 1 <= n_ex <= MAX_NUM_EXAMPLES:
            return _rejected(pid, f"num-examples {n_ex!r} not an int in [1, {MAX_NUM_EXAMPLES}]")
        record = next(iter(content.array_records.values()))
        if set(record.keys()) != set(self._global):
            extra = sorted(set(record.keys()) - set(self._global))
            missing = sorted(set(self._global) - set(record.keys()))
            return _rejected(pid, f"array keys differ (missing {missing[:3]}, extra {extra[:3]})")
        offset = 0
        for k, g in self._global.items():
            try:
                a = record[k].numpy()
            except Exception as e:  # undecodable bytes from a malicious client
                return _rejected(pid, f"array {k!r} cannot be read: {e}")
            if a.shape != g.shape or not np.issubdtype(a.dtype, np.floating):
                return _rejected(pid, f"array {k!r} has shape {a.shape} {a.dtype}, expected {g.shape} {g.dtype}")
            np.subtract(a.astype(np.float32, copy=False), g.astype(np.float32, copy=False),
                        out=row[offset : offset + g.size].reshape(g.shape))
            offset += g.size
        # float32 entries cannot overflow a float64 sum: it is finite iff every entry is
        if not math.isfinite(row.sum(dtype=np.float64)):
            return _rejected(pid, "update has NaN or Inf")
        loss = metrics.get("train-loss", float("nan"))
        return pid, None, n_ex, float(loss) if isinstance(loss, (int, float)) and math.isfinite(loss) else float("nan")
