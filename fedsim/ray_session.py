"""The processes a run starts on this machine, and how they end: a Ray session per run in a
folder of its own (``new_ray_dir``), a one-node Ray cluster that a sweep's cells share
(``start_cluster``), and ``end_ray``, after which nothing of either is left — what the brief
asks of every run ("every process a run starts is gone when it ends"). Used by ``runner`` (one
run), ``sweep`` (the shared cluster, its workers' CPU share) and ``deploy`` (ports); it imports
no other fedsim module, torch or Flower (Ray and psutil only inside the functions that need
them), so a sweep that only plans pays nothing for it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

# In a run's (or a sweep's) folder while it is alive: the path of its Ray session folder, so
# that ``fedsim resume`` (or a re-run of the sweep) can end what a killed one left running.
RAY_SESSION = "ray-session.txt"
RAY_PREFIX = "fedsim-ray-"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def sigint(handler):
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
