"""One run: a validated config → a Flower simulation (Ray) → a run directory.

The same ServerApp/ClientApp also run under ``flwr run .`` (Flower's simulation runtime or the
Deployment Engine); this module is the one-command local path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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
from fedsim.config import Config, ConfigError, invalid, load_config, read_config
from fedsim.report import RunDirectory, RunDirectoryError, exclusive, new_run_directory, read_summary

# In the run directory while the run is alive: the path of its Ray session folder, so that
# ``fedsim resume`` can end what a killed run left running.
RAY_SESSION = "ray-session.txt"
RAY_PREFIX = "fedsim-ray-"


def default_out(cfg: Config) -> Path:
    return Path("runs") / f"{cfg.name}-{datetime.now():%Y%m%d-%H%M%S}"


def prepare_out(out: str | Path | None, cfg: Config) -> RunDirectory:
    """The run directory: new or empty and writable (a non-empty one is refused so results
    are never lost)."""
    try:
        return new_run_directory(Path(out) if out is not None else default_out(cfg))
    except RunDirectoryError as e:
        raise ConfigError(f"--out {e}; choose a new directory") from None


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_resources(cfg: Config) -> None:
    """A client asking Ray for more CPUs than Ray has can never be scheduled. ``total_cpus``
    may exceed this machine's cores (Ray counts logical CPUs; clients then share cores)."""
    r = cfg.resources
    total = r.total_cpus or available_cpus()
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
    total = cfg.resources.total_cpus or available_cpus()
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

    with _sigint(handler):
        yield


@contextlib.contextmanager
def _sigint(handler):
    """SIGINT handled by ``handler`` meanwhile (only the main thread may set a handler;
    elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def describe(error: BaseException) -> str:
    """``Type: message`` of the exception at the root of ``error``'s chain (Flower wraps a
    client-side failure in "An error was encountered. Ending simulation.")."""
    while error.__cause__ is not None:
        error = error.__cause__
    return f"{type(error).__name__}: {error}"


def new_ray_dir() -> Path:
    """A new folder for this run's Ray session, under Ray's usual temporary root (``RAY_TMPDIR``
    if set); short, because Ray's Unix sockets live in it."""
    return Path(tempfile.mkdtemp(prefix=RAY_PREFIX, dir=os.environ.get("RAY_TMPDIR")))


def session_processes(ray_dir: Path) -> list:
    """The processes of the Ray session under ``ray_dir``, as ``psutil.Process``es: those
    naming a path inside it on their command line (GCS, raylet, monitors) or holding a file
    inside it open, and their descendants. Ray's agents and workers rename themselves
    (``ray::DashboardAgent``, ``ray::IDLE``: their command line no longer names the folder)
    and, after a ``kill -9`` of the run, outlive the raylet as orphans; they still hold their
    log files in the folder open."""
    import psutil

    def inside(paths) -> bool:
        return any(str(ray_dir) in p for p in paths)

    mine = {}
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.pid == os.getpid():
                continue
            if inside(proc.info["cmdline"] or ()) or inside(f.path for f in proc.open_files()):
                mine[proc.pid] = proc
                mine.update((c.pid, c) for c in proc.children(recursive=True))
    mine.pop(os.getpid(), None)
    return list(mine.values())


def end_ray(ray_dir: Path, grace_s: float = 5.0) -> None:
    """Shut Ray down and leave nothing of the run's session behind: ``ray.shutdown()`` (here or
    already Flower's) stops the GCS and raylet and signals the rest, but an agent or worker that
    does not exit must not outlive the run, so whatever is still alive ``grace_s`` later is
    terminated (then killed); ``ray_dir`` is removed."""
    import psutil
    import ray

    if ray.is_initialized():
        ray.shutdown()
    _, alive = psutil.wait_procs(session_processes(ray_dir), timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(alive, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    shutil.rmtree(ray_dir, ignore_errors=True)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cluster(cpus: int) -> tuple[Path, str]:
    """A one-node Ray cluster on this machine for runs that share it (``ray start --head`` with
    its session in a new folder of its own, ``cpus`` CPUs, no GPU, no dashboard): the folder
    (``end_ray`` of it stops the cluster) and the address to connect to."""
    ray_dir = new_ray_dir()
    port = free_port()
    env = {**os.environ, "RAY_DEDUP_LOGS": "0", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}
    try:
        subprocess.run([str(Path(sys.executable).with_name("ray")), "start", "--head", f"--port={port}",
                        f"--temp-dir={ray_dir}", f"--num-cpus={cpus}", "--num-gpus=0",
                        "--include-dashboard=false", "--disable-usage-stats"],
                       check=True, capture_output=True, text=True, timeout=300, env=env)
    except BaseException:
        end_ray(ray_dir, grace_s=1.0)
        raise
    return ray_dir, f"127.0.0.1:{port}"


def disconnect_ray() -> None:
    """Leave a Ray cluster this process connected to (Flower already does on a clean end)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


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
        from flwr.simulation import run_simulation

        if resume is None:
            run_dir.write_config(cfg.to_toml())
        log(f"fedsim: {cfg.name} → {run_dir.path}  ({cfg.clients.num} clients, "
            f"{len(cfg.malicious)} malicious, {cfg.strategy.name}, {cfg.rounds} rounds"
            + (f", resuming after round {resume['round']})" if resume is not None else ")"))
        if not verbose:
            _quiet_flower()
        # The server evaluates while the clients wait, so it may use every core.
        torch.set_num_threads(cfg.resources.total_cpus or available_cpus())
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
            if ray_address is None:
                ray_dir = new_ray_dir()
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
        with _sigint(signal.SIG_IGN):
            stop.set()
            if "thread" in result and result["thread"] is not threading.current_thread():
                result["thread"].join()
            if ray_dir is not None:
                end_ray(ray_dir)
                (run_dir.path / RAY_SESSION).unlink(missing_ok=True)
            elif ray_address is not None:
                disconnect_ray()
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


def end_leftover_session(run_dir: Path) -> None:
    """End the Ray session a killed run (``kill -9``: no cleanup ran) left behind, as
    recorded in its directory; only a folder fedsim itself named is touched."""
    note = run_dir / RAY_SESSION
    if not note.is_file():
        return
    ray_dir = Path(note.read_text().strip())
    if ray_dir.is_absolute() and ray_dir.name.startswith(RAY_PREFIX):
        end_ray(ray_dir, grace_s=1.0)
    note.unlink()


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
        end_leftover_session(path)  # only now: the session of a live run is not a leftover
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


def note_sweep_table(path: str | Path) -> None:
    """``fedsim run`` and ``validate`` take the base config of a file that declares a grid
    (a ``[sweep]`` table) and say so, rather than refusing a file ``fedsim sweep`` runs."""
    try:
        declared = "sweep" in read_config(path)
    except ConfigError:
        return  # reported by the load that follows
    if declared:
        print(f"fedsim: note: the [sweep] table of {path} is ignored here (its base config is used); "
              "`fedsim sweep` runs the grid", file=sys.stderr)


def outline(cfg: Config) -> str:
    """One line saying what ``cfg`` runs: name, rounds, clients, rule and attack."""
    params = ", ".join(f"{k}={v}" for k, v in cfg.strategy.params.items())
    rule = f"{cfg.strategy.name}({params})" if params else cfg.strategy.name
    a = cfg.attack
    pieces = [f"{a.data.trigger.name} {a.data.mode}"] if a.data.enabled else []
    pieces += [a.update.name] if a.update.name != "none" else []
    pieces += [f"pgd_eps={a.update.pgd_eps}"] if a.update.pgd_eps is not None else []
    pieces += [a.byzantine.name] if a.byzantine.name != "none" else []
    attack = f"{' + '.join(pieces) or 'none'} by clients {cfg.malicious}" if cfg.malicious else "off"
    return (f"{cfg.name}, {cfg.rounds} rounds, {cfg.clients.num} clients, rule {rule}, "
            f"attack {attack}")


def main_validate(config: str, overrides: list[str]) -> int:
    """``fedsim validate``: every problem of the config at once (exit 2), or one line saying
    what it would run (exit 0); nothing is started."""
    note_sweep_table(config)
    try:
        cfg = load(config, overrides)
    except ConfigError as e:
        print(f"fedsim: {e}", file=sys.stderr)
        return 2
    print(f"ok: {outline(cfg)}")
    return 0


def main_resume(run_dir: str, verbose: bool) -> int:
    try:
        summary = resume(run_dir, verbose=verbose)
    except ConfigError as e:
        print(f"fedsim: {e}", file=sys.stderr)
        return 2
    if summary["status"] != "completed":
        print(f"fedsim: run failed: {summary.get('error')}; see {run_dir}/rounds.jsonl", file=sys.stderr)
        return 1
    return 0


def main_run(config: str, out: str | None, overrides: list[str], verbose: bool, *, deploy: bool = False) -> int:
    """``fedsim run`` (Flower's simulation engine) or, with ``deploy``, ``fedsim deploy`` (its
    Deployment Engine on this machine, ``fedsim.deploy``)."""
    note_sweep_table(config)
    try:
        cfg = load(config, overrides)
        run_dir = prepare_out(out, cfg)
    except ConfigError as e:
        print(f"fedsim: {e}", file=sys.stderr)
        return 2
    if deploy:
        from fedsim.deploy import deploy as run_deployed

        summary = run_deployed(cfg, run_dir)
    else:
        try:
            summary = run(cfg, run_dir, verbose=verbose)
        except ConfigError as e:
            print(f"fedsim: {e}", file=sys.stderr)
            return 2
    if summary["status"] != "completed":
        print(f"fedsim: run failed: {summary.get('error')}; see {run_dir.path}/rounds.jsonl", file=sys.stderr)
        return 1
    return 0
