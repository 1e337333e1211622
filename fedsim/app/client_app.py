"""The ClientApp: a train message in, the client ``build`` makes for this node, its new weights
and metrics out.

The server sends the whole resolved config (JSON) in every train message's ConfigRecord, so a
client needs nothing but its ``partition-id`` node config; ``config`` + ``server-round`` +
``lr`` tell it what to do this round.
"""

from __future__ import annotations

import logging
import os
import time

import torch
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.honest import LocalSetup
from fedsim.app.attack_plan import remembers_globals
from fedsim.app.build import build_client, client_seed, fault_of
from fedsim.config import Config
from fedsim.records import from_array_record, to_array_record
from strategies.robust_strategy import NODE_MEMORY, PARTITION_ID

CONFIG_KEY = "fedsim-config"
# What a Neurotoxin attacker's node remembers between rounds (Flower context state).
CURRENT_GLOBAL, PREVIOUS_GLOBAL = "fedsim-global", "fedsim-previous-global"

client_app = ClientApp()


def flower_lines_once() -> None:
    """Each of Flower's log lines once, in whichever process runs a fedsim app. Flower's logger
    prints through its own console handler; under ``flwr run`` a handler on the root logger of
    the ServerApp's process (flwr-simulation, flwr-serverapp) and of each simulation Ray actor
    printed every line a second time ("INFO:flwr:...", "WARNING:flwr:Manually terminating
    ClientAppActor"). Flower's own ``run_simulation`` stops the propagation the same way. Also
    Ray's notice about a future default for ``num_gpus=0`` (fedsim's clients ask for no GPU),
    which ``fedsim run`` silences with the same variable."""
    logging.getLogger("flwr").propagate = False
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


@client_app.query()
def client_query(msg: Message, context: Context) -> Message:
    """Tell the server which partition this node holds (it cannot see the mapping)."""
    flower_lines_once()
    pid = int(context.node_config["partition-id"])
    return Message(RecordDict({"info": MetricRecord({"partition-id": pid})}), reply_to=msg)


class InjectedCrash(RuntimeError):
    """A crash ``faults.crash_rate`` asked for."""


def _remember_global(context: Context, arrays, restored=None) -> tuple[dict, dict] | None:
    """Keep the last two global models in the node's state; the (previous, current) pair once
    there are two. ``restored``: the global model this node last received before the run was
    resumed (its state did not survive the restart)."""
    state = context.state.array_records
    if restored is not None and CURRENT_GLOBAL not in state:
        state[CURRENT_GLOBAL] = restored
    if CURRENT_GLOBAL in state:
        state[PREVIOUS_GLOBAL] = state[CURRENT_GLOBAL]
    state[CURRENT_GLOBAL] = arrays
    if PREVIOUS_GLOBAL not in state:
        return None
    return state[PREVIOUS_GLOBAL].to_torch_state_dict(), state[CURRENT_GLOBAL].to_torch_state_dict()


@client_app.train()
def client_train(msg: Message, context: Context) -> Message:
    flower_lines_once()
    config = msg.content.config_records["config"]
    config_json = str(config[CONFIG_KEY])
    cfg = Config.model_validate_json(config_json)
    torch.set_num_threads(cfg.resources.client_threads)
    # the partition the server assigned (simulation), else the node's own (deployment)
    pid = int(config[PARTITION_ID]) if PARTITION_ID in config else int(context.node_config["partition-id"])
    server_round = int(config["server-round"])
    fault = fault_of(cfg, server_round, pid)
    if fault == "crash":
        raise InjectedCrash(f"injected crash (faults.crash_rate={cfg.faults.crash_rate})")
    if fault == "straggle":
        time.sleep(cfg.faults.round_timeout_s + 1.0)  # the server has stopped waiting
    arrays = msg.content.array_records["arrays"]
    last_globals = None
    if pid in cfg.malicious and remembers_globals(cfg):
        last_globals = _remember_global(context, arrays, msg.content.array_records.get(NODE_MEMORY))
    client = build_client(cfg, config_json, pid, last_globals)
    setup = LocalSetup(
        epochs=cfg.clients.local_epochs,
        lr=float(config["lr"]),
        batch_size=cfg.clients.batch_size,
        weight_decay=cfg.clients.weight_decay,
        seed=client_seed(cfg, server_round, pid),
    )
    state, metrics = client.fit(from_array_record(arrays), setup, server_round)
    return Message(
        RecordDict({"arrays": to_array_record(state), "metrics": MetricRecord(metrics)}),
        reply_to=msg,
    )
