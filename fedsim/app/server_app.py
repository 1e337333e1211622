"""The ServerApps: build the server from the config, run Flower's strategy loop on the grid,
record every round. ``make_server_app`` is bound to a config (``fedsim run``); ``server_app``
reads its config from the run config (``flwr run .`` and the Deployment Engine, pyproject
``[tool.flwr.app.components]``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import torch
from flwr.app import ConfigRecord, Context, Message
from flwr.serverapp import Grid, ServerApp

from fedsim.app.build import Server, build_server, config_checks, fault_of
from fedsim.app.client_app import CONFIG_KEY, flower_lines_once
from fedsim.app.recorder import (
    CHECKPOINT,
    Recorder,
    finish,
    rng_state,
    save_checkpoint,
    set_rng_state,
    tensorboard_tracker,
)
from fedsim.config import Config, ConfigError, load_config
from fedsim.records import to_array_record
from fedsim.report import DEPLOY_DIR, RunDirectory, RunDirectoryError, new_run_directory


def run_server(grid: Grid, cfg: Config, run_dir: RunDirectory, *, log=print,
               resume: dict | None = None, assign_partitions: bool = False,
               server: Server | None = None, on_initial: Callable[[dict], None] | None = None) -> dict:
    """Train ``cfg.rounds`` rounds on ``grid``; write each round to ``run_dir`` as soon as it
    is evaluated, and after it the checkpoint (``CHECKPOINT``) to resume from. With ``resume``
    (a checkpoint) it continues after that checkpoint's round instead. Returns the initial
    model's metrics, which ``on_initial`` also receives as soon as they are measured.
    ``assign_partitions``: Flower's simulation, whose nodes are given their partitions rather
    than asked for them (``RobustStrategy``). ``server``: what ``build_server(cfg,
    assign_partitions=...)`` made beforehand (``fedsim run`` builds it before Ray starts)."""
    if server is None:
        server = build_server(cfg, log=log, assign_partitions=assign_partitions)
    if server.cfg is not cfg:
        run_dir.write_config(server.cfg.to_toml())
        log(f"learned the {server.cfg.attack.data.trigger.name} trigger; its pixels are in config.toml")
    t0 = time.perf_counter()
    wall_before = 0.0
    initial_arrays = to_array_record(server.initial)
    if resume is not None:
        server.strategy.load_state_dict(resume["strategy"])
        set_rng_state(resume["rng"])
        wall_before = float(resume["wall_s"])
        initial_arrays = to_array_record(resume["global"])

    def checkpoint(server_round: int, arrays, initial: dict) -> None:
        save_checkpoint(run_dir.path / CHECKPOINT, {
            "round": server_round,
            "global": {k: torch.from_numpy(a.numpy()) for k, a in arrays.items()},
            "strategy": server.strategy.state_dict(),
            "rng": rng_state(),
            "initial": dict(initial),
            "wall_s": wall_before + time.perf_counter() - t0,
        })

    done = server.strategy.rounds_done
    if cfg.faults.drop_rate:
        grid = LossyGrid(grid, cfg)
    result = server.strategy.start(
        grid=grid,
        initial_arrays=initial_arrays,
        num_rounds=cfg.rounds - done,
        timeout=cfg.faults.round_timeout_s,
        train_config=ConfigRecord({CONFIG_KEY: server.cfg.model_dump_json()}),
        evaluate_fn=Recorder(run_dir, server.evaluate, lambda: server.strategy.last_round, log=log,
                             checkpoint=checkpoint, rounds_done=done,
                             initial=resume["initial"] if resume is not None else None,
                             on_initial=on_initial,
                             track=tensorboard_tracker(run_dir.path / "tensorboard") if cfg.logging.tensorboard else None),
    )
    return dict(result.evaluate_metrics_serverapp[0])


class GridWrapper(Grid):
    """A Grid that passes everything to ``grid``; subclasses change ``send_and_receive``."""

    def __init__(self, grid: Grid):
        self._grid = grid

    def set_run(self, run) -> None:
        self._grid.set_run(run)

    @property
    def run(self):
        return self._grid.run

    def create_message(self, *args, **kwargs) -> Message:
        return self._grid.create_message(*args, **kwargs)

    def get_node_ids(self):
        return self._grid.get_node_ids()

    def push_messages(self, messages):
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids):
        return self._grid.pull_messages(message_ids)

    def send_and_receive(self, messages, *, timeout: float | None = None) -> list[Message]:
        return self._grid.send_and_receive(messages, timeout=timeout)


class LossyGrid(GridWrapper):
    """``grid``, losing the train replies ``faults.drop_rate`` drops on their way to the server
    (``fault_of``: the round from the message sent, the partition from the reply)."""

    def __init__(self, grid: Grid, cfg: Config):
        super().__init__(grid)
        self._cfg = cfg

    def send_and_receive(self, messages, *, timeout: float | None = None) -> list[Message]:
        messages = list(messages)
        rounds = {int(m.content.config_records["config"]["server-round"])
                  for m in messages if "config" in m.content.config_records}
        replies = super().send_and_receive(messages, timeout=timeout)
        if not rounds:
            return replies  # not a train round (partition discovery)
        server_round = rounds.pop()

        def lost(reply: Message) -> bool:
            if not reply.has_content() or "metrics" not in reply.content.metric_records:
                return False
            pid = reply.content.metric_records["metrics"].get("partition-id")
            return type(pid) is int and fault_of(self._cfg, server_round, pid) == "drop"

        return [r for r in replies if not lost(r)]


class RunStopped(Exception):
    """The ServerApp stopped waiting because the run was stopped (Ctrl-C, or the simulation
    runtime failed)."""


class StoppableGrid(GridWrapper):
    """``grid``, whose waits for replies end as soon as ``stop`` is set: the ServerApp thread
    then raises RunStopped at once instead of waiting out the round's timeout, a wait that
    kept a failed or interrupted ``fedsim run`` process alive."""

    def __init__(self, grid: Grid, stop: threading.Event):
        super().__init__(grid)
        self._stop = stop

    def send_and_receive(self, messages, *, timeout: float | None = None) -> list[Message]:
        if self._stop.is_set():
            raise RunStopped("the run was stopped")
        pending = set(self.push_messages(messages))
        end = time.monotonic() + (timeout if timeout is not None else float("inf"))
        replies: list[Message] = []
        while pending and time.monotonic() < end:
            got = list(self.pull_messages(pending))
            replies += got
            pending -= {m.metadata.reply_to_message_id for m in got}
            if pending and self._stop.wait(0.1):
                raise RunStopped("the run was stopped")
        return replies


def make_server_app(cfg: Config, run_dir: RunDirectory, *, log=print, result: dict | None = None,
                    stop: threading.Event | None = None, resume: dict | None = None,
                    server: Server | None = None) -> ServerApp:
    """A ServerApp bound to an already validated config (used by ``fedsim run``). Setting
    ``stop`` ends it at its next wait for replies (RunStopped); ``result`` receives the initial
    model's metrics (as soon as they are measured) and the thread it runs in; ``resume``: a
    checkpoint to continue from; ``server``: the server ``build_server(cfg,
    assign_partitions=True)`` made beforehand."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if result is not None:
            result["thread"] = threading.current_thread()
        run_server(StoppableGrid(grid, stop) if stop is not None else grid, cfg, run_dir,
                   log=log, resume=resume, assign_partitions=True, server=server,
                   on_initial=None if result is None else lambda m: result.update(initial=m))

    return app


server_app = ServerApp()


@server_app.main()
def _flwr_run_main(grid: Grid, context: Context) -> None:
    """Entry point for ``flwr run .`` (and ``fedsim deploy``): run config keys ``config`` (TOML
    path) and ``out`` (a new or empty directory, as ``fedsim run --out``; ``fedsim deploy``'s
    ``deploy/`` folder may already be in it). Replies are pulled every 0.1 s (``StoppableGrid``)
    rather than every 3 s, the Deployment Engine grid's own wait between pulls."""
    flower_lines_once()
    rc = context.run_config
    cfg = load_config(rc.get("config") or None, [], config_checks())
    check_node_count(len(list(grid.get_node_ids())), cfg.clients.num)
    out = str(rc.get("out", "runs/flwr"))
    try:
        run_dir = new_run_directory(out, allow=(DEPLOY_DIR,))
    except RunDirectoryError as e:
        raise ConfigError(
            f"run config out: {e}; choose a new directory, e.g. flwr run . --run-config \"out='runs/flwr-2'\""
        ) from None
    run_dir.write_config(cfg.to_toml())
    t0 = time.perf_counter()
    measured: dict = {}
    status, error = "completed", None
    try:
        run_server(StoppableGrid(grid, threading.Event()), cfg, run_dir,
                   on_initial=lambda m: measured.update(initial=m))
    except Exception as e:
        status, error = "failed", f"{type(e).__name__}: {e}"
        raise
    finally:
        summary = finish(run_dir, cfg, initial=measured.get("initial"), wall_s=time.perf_counter() - t0,
                         status=status, error=error, engine="flwr")
        if summary.get("status") == "completed":
            # as fedsim run: the checkpoint only serves a run that did not finish
            (run_dir.path / CHECKPOINT).unlink(missing_ok=True)


def check_node_count(nodes: int, clients: int) -> None:
    """Under ``flwr run .`` each client is a SuperNode: the federation must have exactly
    ``clients.num`` of them, checked before the warm start and the first round (Flower's
    simulation runtime defaults to 2). ConfigError naming the option that sets it."""
    if nodes != clients:
        raise ConfigError(
            f"flwr run: the federation has {nodes} SuperNode(s) but clients.num = {clients}; each client "
            f"is one SuperNode. Simulation: flwr run . local --federation-config \"num-supernodes={clients}\" "
            f"(or options.num-supernodes = {clients} in the federation's Flower config); Deployment Engine: "
            f"connect {clients} SuperNodes, partition-id=0..{clients - 1}, before flwr run"
        )
