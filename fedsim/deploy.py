"""``fedsim deploy``: one run on Flower's Deployment Engine on this machine — a SuperLink and one
SuperNode per client on 127.0.0.1, the same ServerApp and ClientApp as ``fedsim run``, started
with ``flwr run`` — into the same run directory.

Everything it starts carries ``FEDSIM_DEPLOY=<token>`` in its environment, and so do their
children (the SuperExecs, ``flwr-serverapp`` and every ``flwr-clientapp``, some of which Flower
puts in sessions of their own): however the deployment ends, each of them still alive is
terminated, then killed. ``OUT/deploy/`` holds their logs, the submitted config and the
Flower home (``FLWR_HOME``: the SuperLink connection, the installed app).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from fedsim.app import CHECKPOINT, finish
from fedsim.config import Config, ConfigError
from fedsim.report import DEPLOY_DIR, RunDirectory
from fedsim.ray_session import free_port

MARKER = "FEDSIM_DEPLOY"
MARKER_FILE = "marker.txt"  # in OUT/deploy/: the token, to find what a killed deployment left
CONNECTION = "fedsim-deploy"
# Set for the SuperExecs: their wait between asks for a task (Flower's default 1 s).
TASK_POLL_S = "0.2"


def app_root() -> Path:
    """The Flower app ``flwr run`` builds: the checkout holding ``pyproject.toml``'s
    ``[tool.flwr.app]`` (fedsim, clients, strategies, configs)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise ConfigError(f"fedsim deploy runs the app from a source checkout; {root} has no pyproject.toml")
    return root


def deployment_processes(token: str) -> list:
    """The live processes whose environment carries ``FEDSIM_DEPLOY=token``."""
    import psutil

    mine = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.pid != os.getpid() and proc.environ().get(MARKER) == token:
                mine.append(proc)
    return mine


def end_deployment(token: str, started: list[subprocess.Popen], grace_s: float = 10.0) -> None:
    """SIGTERM to the SuperNodes and the SuperLink (they stop their SuperExecs and apps), then
    to anything of the deployment still alive, then SIGKILL after ``grace_s``."""
    import psutil

    for p in reversed(started):
        if p.poll() is None:
            p.terminate()
    for p in started:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=grace_s)
    alive = deployment_processes(token)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(alive, timeout=grace_s / 2)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace_s / 2)
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


def _die_with_parent() -> None:
    """Linux: the SuperLink and SuperNodes get SIGTERM when ``fedsim deploy`` dies, even by
    SIGKILL (no cleanup of ours runs then; Flower's own parent monitors stop the rest)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _wait_for(check, what: str, procs: list[subprocess.Popen], timeout_s: float, logs: Path) -> None:
    end = time.monotonic() + timeout_s
    while not check():
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{' '.join(dead[0].args[:1])} exited ({dead[0].returncode}) before {what}; see {logs}")
        if time.monotonic() > end:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}; see {logs}")
        time.sleep(0.2)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def deploy(cfg: Config, run_dir: RunDirectory, *, log=None, start_timeout_s: float = 120.0) -> dict:
    """Run ``cfg`` on a local SuperLink and ``cfg.clients.num`` SuperNodes (node ``i`` holds
    partition ``i``: the ServerApp's partition discovery wants exactly one node per partition)
    and return the summary the ServerApp wrote. A run that ended without one (a crash, Ctrl-C)
    gets one saying so, from the rounds on disk."""
    log = log or (lambda msg: print(msg, flush=True))
    root = app_root()
    bin_dir = Path(sys.executable).parent
    flwr = shutil.which("flwr", path=str(bin_dir)) or "flwr"
    logs = run_dir.path.resolve() / DEPLOY_DIR  # absolute: the ServerApp runs in the checkout
    home = logs / "flwr-home"
    home.mkdir(parents=True)
    config_path = logs / "config.toml"
    config_path.write_text(cfg.to_toml())
    token = secrets.token_hex(8)
    (logs / MARKER_FILE).write_text(token)
    env = {
        **os.environ,
        MARKER: token,
        # Flower starts its SuperExecs and apps by name; the app's code is the checkout's
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",  # the app runs in this environment
        "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": TASK_POLL_S,
    }
    link = free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n'
        f'[superlink.{CONNECTION}]\naddress = "127.0.0.1:{link}"\ninsecure = true\n'
    )
    log(f"fedsim: {cfg.name} → {run_dir.path} on the Deployment Engine: SuperLink 127.0.0.1:{link}, "
        f"{cfg.clients.num} SuperNodes (logs in {logs})")

    started: list[subprocess.Popen] = []

    def start(name: str, args: list[str]) -> subprocess.Popen:
        with (logs / f"{name}.log").open("w") as out:
            p = subprocess.Popen(args, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        started.append(p)
        return p

    t0 = time.perf_counter()
    status, error = "completed", None
    # SIGTERM ends the deployment as Ctrl-C does (its processes stopped, the summary written)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler) if main else None
    try:
        superlink = start("superlink", [str(bin_dir / "flower-superlink"), "--insecure", "--port", str(link),
                                        "--disable-runtime-dependency-installation"])
        _wait_for(lambda: _listening(link), "the SuperLink listened", [superlink], start_timeout_s, logs)
        for i in range(cfg.clients.num):
            start(f"supernode-{i}", [
                str(bin_dir / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link}",
                "--port", str(free_port()), "--node-config", f"partition-id={i} num-partitions={cfg.clients.num}",
            ])
        # The ServerApp asks every connected node for its partition at once: all must be there.
        _wait_for(lambda: all("SuperNode ID:" in (logs / f"supernode-{i}.log").read_text()
                              for i in range(cfg.clients.num)),
                  "every SuperNode connected", started, start_timeout_s, logs)
        run = start("flwr-run", [
            flwr, "run", str(root), CONNECTION, "--stream",
            "--run-config", f"config='{config_path}' out='{logs.parent}'",
        ])
        shown = 0
        while run.poll() is None:
            time.sleep(1.0)
            shown = _show_rounds(run_dir, shown, log)
        _show_rounds(run_dir, shown, log)
        if run.returncode != 0:
            raise RuntimeError(f"flwr run exited with {run.returncode}; see {logs / 'flwr-run.log'}")
    except KeyboardInterrupt:
        status, error = "interrupted", "stopped by the user"
        raise
    except Exception as e:
        status, error = "failed", f"{type(e).__name__}: {e}"
        raise
    finally:
        end_deployment(token, started)
        if main:
            signal.signal(signal.SIGTERM, previous)
        summary = _summary(run_dir)
        if summary is None or (status != "completed" and summary.get("status") != "completed"):
            summary = finish(run_dir, cfg, initial=None, wall_s=time.perf_counter() - t0, status=status,
                             error=error, engine="deployment")
    if summary.get("status") == "completed":
        (run_dir.path / CHECKPOINT).unlink(missing_ok=True)
        log(f"done in {time.perf_counter() - t0:.0f} s: CA {summary['clean_accuracy']:.3f}  "
            f"ASR {summary['attack_success_rate']:.3f}  → {run_dir.path}/summary.md")
    return summary


def _summary(run_dir: RunDirectory) -> dict | None:
    try:
        return json.loads((run_dir.path / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def _show_rounds(run_dir: RunDirectory, shown: int, log) -> int:
    try:
        rounds = run_dir.read_rounds()
    except ValueError:  # a line being written
        return shown
    for r in rounds[shown:]:
        log(f"round {r['round']:2d}  CA {r.get('clean_accuracy', float('nan')):.3f}  "
            f"ASR {r.get('attack_success_rate', float('nan')):.3f}  {r.get('wall_s', 0):.1f} s")
    return len(rounds)
