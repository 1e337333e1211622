"""One run: a validated config → a Flower simulation (Ray) → a run directory.

The same ServerApp/ClientApp also run under ``flwr run .`` (Flower's simulation runtime or the
Deployment Engine); this module is the one-command local path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from datetime import datetime
from pathlib import Path

from fedsim.app import (
    CHECKPOINT,
    InProcessGrid,
    StoppableGrid,
    build_server,
    client_app,
    config_checks,
    finish,
    load_checkpoint,
    make_server_app,
    run_server,
)
from fedsim.config import Config, ConfigError, invalid, load_config
from fedsim.report import RunDirectory, RunDirectoryError, exclusive, new_run_directory, read_summary

# Ray's processes are started and ended through the module (``ray_session.end_ray``, not a
# copy of the name here), so that a sweep's worker and the tests can replace them.
from fedsim import ray_session
from fedsim.ray_session import RAY_SESSION, sigint


def default_out(cfg: Config) -> Path:
    return Path("runs") / f"{cfg.name}-{datetime.now():%Y%m%d-%H%M%S}"


def prepare_out(out: str | Path | None, cfg: Config) -> RunDirectory:
    """The run directory: new or empty and writable (a non-empty one is refused so results
    are never lost)."""
    try:
        return new_run_directory(Path(out) if out is not None else default_out(cfg))
    except RunDirectoryError as e:
        raise ConfigError(f"--out {e}; choose a new directory") from None


def check_resources(cfg: Config) -> None:
    """A client asking Ray for more CPUs than Ray has can never be scheduled. ``total_cpus``
    may exceed this machine's cores (Ray counts logical CPUs; clients then share cores)."""
    r = cfg.resources
    total = r.total_cpus or ray_session.available_cpus()
    if r.ray_address is None and r.client_cpus > total:
        where = ("resources.total_cpus" if r.total_cpus else
                 "all of this machine's; resources.total_cpus is unset")
        raise ConfigError(invalid([
            f"resources.client_cpus={r.client_cpus} exceeds the {total} CPUs Ray may use ({where}), "
            f"so no client could ever run; allowed: 0 < client_cpus ≤ {total}"
        ]))


def backend_config(cfg: Config, ray_dir: Path | None, verbose: bool = False, address: str | None = None) -> dict:
    """Ray resources: each client asks for ``client_cpus`` CPUs and uses ``client_threads``
    torch threads, so 2 clients train at once on 2 cores without oversubscription. Ray keeps
    its session (sockets, logs, spilled objects) under ``ray_dir``, this run's own folder.
    The workers' own log lines reach the terminal only with ``verbose`` (a client's failure
    still reaches the server as an error reply, recorded in rounds.jsonl); otherwise Flower's
    "Manually terminating ClientAppActor" warnings would trail every stopped run.
    With ``address`` (default ``resources.ray_address``) the clients run on that cluster
    instead (its CPUs, its folders; ``ray_dir`` is None)."""
    address = address or cfg.resources.ray_address
    if address is not None:
        return {
            "client_resources": {"num_cpus": cfg.resources.client_cpus, "num_gpus": 0.0},
            "init_args": {"address": address, "logging_level": logging.ERROR,
                          "log_to_driver": verbose},
        }
    total = cfg.resources.total_cpus or ray_session.available_cpus()
    return {
        "client_resources": {"num_cpus": cfg.resources.client_cpus, "num_gpus": 0.0},
        "init_args": {"num_cpus": total, "num_gpus": 0, "include_dashboard": False,
                      "logging_level": logging.ERROR, "log_to_driver": verbose,
                      "_temp_dir": str(ray_dir)},
    }


class _NoDeprecationNotice(logging.Filter):
    """``run_simulation`` is Flower's supported in-process API for driving a simulation from
    Python; its "use flwr run" notice is noise for a fedsim user (``flwr run .`` works too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "DEPRECATED FEATURE" not in str(record.msg)


def _quiet_flower(level: int = logging.WARNING) -> None:
    logger = logging.getLogger("flwr")
    logger.setLevel(level)
    if not any(isinstance(f, _NoDeprecationNotice) for f in logger.filters):
        logger.addFilter(_NoDeprecationNotice())
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


@contextlib.contextmanager
def _stop_on_sigint(stop: threading.Event):
    """The first Ctrl-C sets ``stop`` (the ServerApp stops at its next wait for replies, Flower
    lets the clients in flight finish and shuts Ray down, the run ends as interrupted); a
    second one raises KeyboardInterrupt at once. A KeyboardInterrupt in the middle of Flower's
    runtime instead tore Ray down under running tasks (ActorDiedError tracebacks) and left the
    ServerApp thread waiting for replies, so the process hung or crashed on its way out.
    ``stop`` is looked at only in those waits: what runs before the first (the warm start)
    must run outside, where Ctrl-C raises KeyboardInterrupt."""
    def handler(signum, frame):
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    with sigint(handler):
        yield


def describe(error: BaseException) -> str:
    """``Type: message`` of the exception at the root of ``error``'s chain (Flower wraps a
    client-side failure in "An error was encountered. Ending simulation.")."""
    while error.__cause__ is not None:
        error = error.__cause__
    return f"{type(error).__name__}: {error}"


@contextlib.contextmanager
def alone_in(path: Path, prefix: str = ""):
    """``report.exclusive(path)``, its refusal (another fedsim process works there) as a
    ConfigError: exit 2, nothing started."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(exclusive(path))
        except RunDirectoryError as e:
            raise ConfigError(f"{prefix}{e}") from None
        yield


def run(cfg: Config, out: RunDirectory | str | Path | None = None, *, verbose: bool = False, log=None,
        resume: dict | None = None, ray_address: str | None = None) -> dict:
    """Run ``cfg``; return the summary (also written to ``OUT/summary.json``). Its ``status``
    is "completed", or "failed" when no round aggregated; a run that raised is "failed" (the
    exception propagates), one stopped by Ctrl-C "interrupted" (KeyboardInterrupt). With
    ``resume`` (the checkpoint of ``out``'s last round) it continues that run; the checkpoint
    is removed once the run completes. ``ray_address``: a running Ray cluster for the clients
    in place of ``resources.ray_address`` (a sweep's shared cluster; the config is unchanged). Raises
    ConfigError when another fedsim process works in the same directory."""
    run_dir = out if isinstance(out, RunDirectory) else prepare_out(out, cfg)
    with alone_in(run_dir.path, "--out "):
        return _run(cfg, run_dir, verbose=verbose, log=log, resume=resume, ray_address=ray_address)


def _run(cfg: Config, run_dir: RunDirectory, *, verbose: bool, log, resume: dict | None,
         ray_address: str | None) -> dict:
    log = log or (lambda msg: print(msg, flush=True))
    result: dict = {}
    stop = threading.Event()
    t0 = time.perf_counter() - (float(resume["wall_s"]) if resume is not None else 0.0)
    status, error = "completed", None
    # A private Ray session per run, unless the clients go to a running cluster (which lives on)
    ray_address = ray_address or cfg.resources.ray_address
    ray_dir = None
    try:
        import torch

        if resume is None:
            run_dir.write_config(cfg.to_toml())
        log(f"fedsim: {cfg.name} → {run_dir.path}  ({cfg.clients.num} clients, "
            f"{len(cfg.malicious)} malicious, {cfg.strategy.name}, {cfg.rounds} rounds"
            + (f", resuming after round {resume['round']})" if resume is not None else ")"))
        if not verbose:
            _quiet_flower()
        # The server evaluates while the clients wait, so it may use every core.
        torch.set_num_threads(cfg.resources.total_cpus or ray_session.available_cpus())
        # Data, warm start, BadCLIP patch: here in the main thread, before Ray starts, where
        # Ctrl-C raises KeyboardInterrupt. In the ServerApp's thread a Ctrl-C only set ``stop``,
        # which nothing looks at before the first round, so the warm start went on regardless.
        server = build_server(cfg, log=log, assign_partitions=True)
        on_initial = lambda m: result.update(initial=m)  # noqa: E731
        if cfg.engine(ray_address) == "inprocess":
            # no Ray: the ClientApp runs here, between the ServerApp's sends (fedsim.app.local_grid)
            grid = InProcessGrid(client_app, cfg.clients.num, client_threads=cfg.resources.client_threads,
                                 stop=stop)
            with _stop_on_sigint(stop):
                run_server(StoppableGrid(grid, stop), cfg, run_dir, log=log, resume=resume,
                           assign_partitions=True, server=server, on_initial=on_initial)
        else:
            # only here: flwr.simulation costs ≈ 1 s to import, which an in-process run need not pay
            from flwr.simulation import run_simulation

            if ray_address is None:
                ray_dir = ray_session.new_ray_dir()
                (run_dir.path / RAY_SESSION).write_text(str(ray_dir))
            with _stop_on_sigint(stop):
                run_simulation(
                    server_app=make_server_app(cfg, run_dir, log=log, result=result, stop=stop, resume=resume,
                                               server=server),
                    client_app=client_app,
                    num_supernodes=cfg.clients.num,
                    backend_config=backend_config(cfg, ray_dir, verbose, ray_address),
                    verbose_logging=verbose,
                )
    except KeyboardInterrupt:
        status, error = "interrupted", "stopped by the user"
        raise
    except Exception as e:
        if stop.is_set():  # the ServerApp's RunStopped after a Ctrl-C
            status, error = "interrupted", "stopped by the user"
            raise KeyboardInterrupt from None
        status, error = "failed", describe(e)
        raise
    finally:
        # However it ended, nothing of the run may outlive it: the ServerApp thread (which
        # would otherwise wait for replies that never come), Ray's processes and its folder.
        # Another Ctrl-C must not cut this short (it would leave all that and no summary).
        with sigint(signal.SIG_IGN):
            stop.set()
            if "thread" in result and result["thread"] is not threading.current_thread():
                result["thread"].join()
            if ray_dir is not None:
                ray_session.end_ray(ray_dir)
                (run_dir.path / RAY_SESSION).unlink(missing_ok=True)
            elif ray_address is not None:
                ray_session.disconnect_ray()
            try:
                summary = finish(run_dir, cfg, initial=result.get("initial"),
                                 wall_s=time.perf_counter() - t0, status=status, error=error,
                                 engine=cfg.engine(ray_address))
            except OSError:
                if status == "completed":
                    raise
                # summary.json cannot be written either (a full disk): the run's own error,
                # already on its way out, says more
    if summary["status"] == "completed":
        (run_dir.path / CHECKPOINT).unlink(missing_ok=True)
        log(f"done in {summary['wall_s']:.0f} s: CA {summary['clean_accuracy']:.3f}  "
            f"ASR {summary['attack_success_rate']:.3f}  → {run_dir.path}/summary.md")
    return summary


def status_of(run_dir: str | Path) -> str | None:
    """The ``status`` in ``run_dir``'s summary.json (None: no readable summary)."""
    return read_summary(run_dir).get("status")


def resumable(run_dir: str | Path) -> bool:
    """``run_dir`` holds a config and the checkpoint of a run that did not complete."""
    p = Path(run_dir)
    return (p / "config.toml").is_file() and (p / CHECKPOINT).is_file() and status_of(p) != "completed"


def resume(run_dir: str | Path, *, verbose: bool = False, log=None, ray_address: str | None = None) -> dict:
    """Continue the run in ``run_dir`` after the last round its checkpoint holds: the rounds
    after it (written before a kill) are dropped and redone, and the final numbers equal an
    uninterrupted run's with the same seed on the same machine. ConfigError when ``run_dir``
    cannot be resumed (no such run, completed, no checkpoint, or a config that no longer
    validates)."""
    path = Path(run_dir)
    if not (path / "config.toml").is_file():
        raise ConfigError(f"{str(path)!r} is not a run directory (no config.toml); "
                          "resume takes the directory a `fedsim run --out` wrote")
    if status_of(path) == "completed":
        raise ConfigError(f"{str(path)!r} holds a completed run; nothing to resume")
    if not (path / CHECKPOINT).is_file():
        raise ConfigError(f"{str(path)!r} has no {CHECKPOINT}: the run ended before its first "
                          "round was recorded; start it again with fedsim run")
    cfg = load(path / "config.toml")
    try:
        checkpoint = load_checkpoint(path / CHECKPOINT)
        done = int(checkpoint["round"])
        for key in ("global", "strategy", "rng", "initial", "wall_s"):
            checkpoint[key]
    except Exception as e:
        raise ConfigError(f"{str(path / CHECKPOINT)!r} is not a fedsim checkpoint: {describe(e)}") from None
    if not 1 <= done <= cfg.rounds:
        raise ConfigError(f"{str(path / CHECKPOINT)!r} is of round {done}; the config has rounds={cfg.rounds}")
    with alone_in(path):
        ray_session.end_leftover_session(path)  # only now: the session of a live run is not a leftover
        run_dir = RunDirectory(path)
        run_dir.keep_rounds(done)
        return run(cfg, run_dir, verbose=verbose, log=log, resume=checkpoint, ray_address=ray_address)


def run_checks() -> list:
    """The checks a config must pass before it runs on this machine, beyond its fields: the
    registries' (rule, attack, trigger names and parameters) and the resources'."""
    return [*config_checks(), check_resources]


def load(path: str | Path | None, overrides=()) -> Config:
    """A config for ``fedsim run`` on this machine: validated, registry checks, resources."""
    return load_config(path, overrides, run_checks())
