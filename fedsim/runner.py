"""One run: a validated config → a Flower simulation (Ray) → a run directory.

The same ServerApp/ClientApp also run under ``flwr run .`` (Flower's simulation runtime or the
Deployment Engine); this module is the one-command local path.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from datetime import datetime
from pathlib import Path

from fedsim.app import client_app, config_checks, finish, make_server_app
from fedsim.config import Config, ConfigError, load_config
from fedsim.report import RunDirectory


def default_out(cfg: Config) -> Path:
    return Path("runs") / f"{cfg.name}-{datetime.now():%Y%m%d-%H%M%S}"


def prepare_out(out: str | Path | None, cfg: Config) -> RunDirectory:
    """The run directory; an existing non-empty one is refused so results are never lost."""
    path = Path(out) if out is not None else default_out(cfg)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"--out {str(path)!r} already exists and is not empty; choose a new directory")
    return RunDirectory(path)


def backend_config(cfg: Config) -> dict:
    """Ray resources: each client asks for ``client_cpus`` CPUs and uses ``client_threads``
    torch threads, so 2 clients train at once on 2 cores without oversubscription."""
    total = cfg.resources.total_cpus or os.cpu_count() or 1
    return {
        "client_resources": {"num_cpus": cfg.resources.client_cpus, "num_gpus": 0.0},
        "init_args": {"num_cpus": total, "num_gpus": 0, "include_dashboard": False,
                      "logging_level": logging.ERROR, "log_to_driver": True},
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


def run(cfg: Config, out: RunDirectory | str | Path | None = None, *, verbose: bool = False, log=None) -> dict:
    """Run ``cfg``; return the summary (also written to ``OUT/summary.json``)."""
    import torch
    from flwr.simulation import run_simulation

    log = log or (lambda msg: print(msg, flush=True))
    run_dir = out if isinstance(out, RunDirectory) else prepare_out(out, cfg)
    run_dir.write_config(cfg.to_toml())
    log(f"fedsim: {cfg.name} → {run_dir.path}  ({cfg.clients.num} clients, "
        f"{len(cfg.malicious)} malicious, {cfg.strategy.name}, {cfg.rounds} rounds)")
    if not verbose:
        _quiet_flower()
    # The server evaluates while the clients wait, so it may use every core.
    torch.set_num_threads(cfg.resources.total_cpus or os.cpu_count() or 1)
    result: dict = {}
    t0 = time.perf_counter()
    status, error = "completed", None
    try:
        run_simulation(
            server_app=make_server_app(cfg, run_dir, log=log, result=result),
            client_app=client_app,
            num_supernodes=cfg.clients.num,
            backend_config=backend_config(cfg),
            verbose_logging=verbose,
        )
    except KeyboardInterrupt:
        status, error = "interrupted", "stopped by the user"
        raise
    except Exception as e:
        status, error = "failed", f"{type(e).__name__}: {e}"
        raise
    finally:
        summary = finish(run_dir, cfg, initial=result.get("initial"),
                         wall_s=time.perf_counter() - t0, status=status, error=error)
    log(f"done in {summary['wall_s']:.0f} s: CA {summary['clean_accuracy']:.3f}  "
        f"ASR {summary['attack_success_rate']:.3f}  → {run_dir.path}/summary.md")
    return summary


def load(path: str | Path | None, overrides=()) -> Config:
    return load_config(path, overrides, config_checks())


def main_run(config: str, out: str | None, overrides: list[str], verbose: bool) -> int:
    try:
        cfg = load(config, overrides)
        run_dir = prepare_out(out, cfg)
    except ConfigError as e:
        print(f"fedsim: {e}", file=sys.stderr)
        return 2
    run(cfg, run_dir, verbose=verbose)
    return 0
