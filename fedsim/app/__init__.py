"""The composition root and the Flower shell: the only layer that knows config, clients/ and
strategies/. Data flow through it once, top to bottom:

- ``build``: config → dataset, model, attack plan, rule, strategy, evaluator (and the round's
  learning rate and the clients' seeds); ``config_checks`` that need the registries.
- ``attack_plan``: what a malicious client is made of, and the check of ``[attack]``.
- ``client_app`` / ``server_app``: the Flower ClientApp and ServerApps (Message API), thin:
  Message ↔ the objects ``build`` made. ``fedsim run`` drives them through Flower's simulation
  engine (``fedsim.runner``); ``client_app`` and ``server_app`` are what ``flwr run .`` and the
  Deployment Engine load (pyproject ``[tool.flwr.app.components]``).
- ``recorder``: each round → rounds.jsonl, a progress line and the checkpoint a resumed run
  starts from; ``finish`` → the summaries.
"""

from fedsim.app.attack_plan import (
    AttackPlan,
    adversary_of,
    attack_plan,
    check_attack,
    schedule_of,
    trigger_of,
)
from fedsim.app.build import (
    _partition,
    build_client,
    build_server,
    build_strategy,
    check_strategy,
    client_seed,
    config_checks,
    fault_of,
    resolve_learned_trigger,
    root_update_fn,
    round_lr,
)
from fedsim.app.client_app import client_app
from fedsim.app.local_grid import InProcessGrid
from fedsim.app.recorder import CHECKPOINT, Recorder, finish, lifespan, load_checkpoint
from fedsim.app.server_app import RunStopped, StoppableGrid, make_server_app, run_server, server_app

__all__ = [
    "CHECKPOINT",
    "AttackPlan",
    "InProcessGrid",
    "Recorder",
    "RunStopped",
    "StoppableGrid",
    "adversary_of",
    "attack_plan",
    "build_client",
    "build_server",
    "build_strategy",
    "check_attack",
    "check_strategy",
    "client_app",
    "client_seed",
    "config_checks",
    "fault_of",
    "finish",
    "lifespan",
    "load_checkpoint",
    "make_server_app",
    "resolve_learned_trigger",
    "root_update_fn",
    "round_lr",
    "run_server",
    "schedule_of",
    "server_app",
    "trigger_of",
]
