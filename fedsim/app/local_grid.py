"""The in-process engine: a Flower ``Grid`` that hands every message to the ClientApp in this
process, one message after another — Flower's simulation without Ray.

What a run on Flower's simulation pays before its first round is start-up: Ray's processes,
then every client actor importing flwr, torch, torchvision and open_clip and building its
model and data (bench/results.md: round 1 cost 4.1× a steady round, a 3-round run 2.21× the
plain PyTorch loop of the same work). A run that does not need clients in parallel (a steady
round costs what the plain loop costs: the server evaluates while the clients wait) pays none
of that here. The ServerApp side is unchanged: the same ``run_server``, strategy and Recorder
drive this grid exactly as they drive Flower's; the ClientApp is the same ``client_app``.

Delivery keeps what Flower's simulation guarantees a ClientApp, so that the same config and
seed give the same numbers on either engine (tested, round by round):
- each side gets its own copy of a message (``copy.deepcopy``: Flower's arrays are immutable
  ``bytes``, shared safely, and every decoded tensor is new), so a client never shares a tensor
  with the server or with another client (a client that trained in place on the received
  arrays would otherwise change the global model). A protobuf round trip, what a real link
  does, cost 0.1 s per message of the tiny model, 2 s of a 10-client round (measured);
- each node keeps its own ``Context`` (``node_config`` with ``partition-id`` and
  ``num-partitions``, and ``state``, e.g. a Neurotoxin attacker's memory) across rounds;
- a client runs with its own torch thread count (``resources.client_threads``), as a Ray
  actor does, and with the process's random states forked (torch, numpy, ``random``), so the
  server's streams are those of a server whose clients run elsewhere;
- an exception in the ClientApp becomes an error reply (``ErrorCode.CLIENT_APP_RAISED_EXCEPTION``
  with Flower's reason text), as Flower's simulation worker makes it.

What it cannot do: run clients in parallel, a Ray cluster (``resources.ray_address``), and
replies that arrive after the round's timeout (``faults.straggler_rate``: a client here blocks
the server until it returns). ``fedsim.runner`` takes Ray's simulation for those.
"""

from __future__ import annotations

import copy
import random
import threading
from collections.abc import Iterable
from uuid import uuid4

import numpy as np
import torch
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

# Flower's simulation gives node i this node config (flwr.simulation's PARTITION_ID_KEY, ...).
PARTITION_ID, NUM_PARTITIONS = "partition-id", "num-partitions"
# The SuperLink's node id in Flower (flwr.common.constant.SUPERLINK_NODE_ID).
SERVER_NODE_ID = 1
RUN_ID = 1


def _copy(message: Message) -> Message:
    """The message as the other side of a Flower link receives it (its own copy of everything)."""
    return copy.deepcopy(message)


class InProcessGrid(Grid):
    """``num_nodes`` simulated SuperNodes in this process, node ids ``first_node_id ...``, node
    ``first_node_id + i`` holding partition ``i``. ``push_messages`` stores the messages;
    ``pull_messages`` runs the ClientApp on each pending one (in push order) and returns the
    replies. Once ``stop`` (an Event) is set, the next delivery raises ``RunStopped`` instead:
    a Ctrl-C stops the run between two clients."""

    def __init__(self, app: ClientApp, num_nodes: int, *, client_threads: int = 1,
                 run_config: dict | None = None, stop: threading.Event | None = None,
                 first_node_id: int = 1000):
        if num_nodes < 1:
            raise ValueError(f"num_nodes={num_nodes}: need at least one node")
        self._app, self._threads, self._stop = app, client_threads, stop
        self._run = Run.create_empty(RUN_ID)
        self._contexts = {
            first_node_id + i: Context(run_id=RUN_ID, node_id=first_node_id + i,
                                       node_config={PARTITION_ID: i, NUM_PARTITIONS: num_nodes},
                                       state=RecordDict(), run_config=dict(run_config or {}))
            for i in range(num_nodes)
        }
        self._pending: dict[str, Message] = {}
        # Messages are built in this process by the ServerApp side: give it the SuperLink's
        # identity, as Flower's ServerApp runtime does.
        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = RUN_ID, 1, SERVER_NODE_ID

    # -- Grid ---------------------------------------------------------------------------------
    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            if message.metadata.dst_node_id not in self._contexts:
                raise ValueError(f"message to node {message.metadata.dst_node_id}: no such node")
            message.metadata.__dict__["_message_id"] = str(uuid4())
            self._pending[message.metadata.message_id] = message
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        wanted = [i for i in message_ids if i in self._pending]
        return [self._deliver(self._pending.pop(i)) for i in wanted]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        # every reply is there when pull returns: no timeout can pass unseen in between
        return list(self.pull_messages(self.push_messages(messages)))

    # -- delivery -----------------------------------------------------------------------------
    def _deliver(self, message: Message) -> Message:
        if self._stop is not None and self._stop.is_set():
            from fedsim.app.server_app import RunStopped

            raise RunStopped("the run was stopped")
        received = _copy(message)
        context = self._contexts[message.metadata.dst_node_id]
        identity = (TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id)
        threads = torch.get_num_threads()
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                TaskIdentity.node_id = context.node_id
                torch.set_num_threads(self._threads)
                try:
                    reply = self._app(received, context)
                except Exception as e:  # noqa: BLE001 - Flower turns any ClientApp error into an error reply
                    reason = f"{type(e)}:<'{e}'>"
                    reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason),
                                    reply_to=received)
        finally:
            torch.set_num_threads(threads)
            np.random.set_state(np_state)
            random.setstate(py_state)
            TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = identity
        reply = _copy(reply)
        reply.metadata.__dict__["_message_id"] = str(uuid4())
        return reply
