"""``fedsim run CONFIG [--out DIR] [--set key=value ...]``, ``fedsim deploy CONFIG [--out DIR]
[--set key=value ...]``, ``fedsim resume RUN_DIR``,
``fedsim validate CONFIG [--set key=value ...]``, ``fedsim sweep CONFIG [--out DIR] [--grid
key=[a,b] ...] [--seeds K] [--jobs N] [--set key=value ...]``, ``fedsim report DIR... [--out DIR]``,
``fedsim list [WHAT]`` and ``fedsim table RUN_DIR...``: argument parsing and exit codes.

Exit codes: 0 success, 2 invalid config or arguments or an unusable ``--out`` (nothing
started), 1 the run (or a cell of the sweep) failed or no round aggregated, 130 interrupted by
Ctrl-C (the run directory still holds every finished round and a summary saying why)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedsim import __version__
from fedsim.catalog import FAMILIES, catalog


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsim", description="Federated CLIP security simulator")
    parser.add_argument("--version", action="version", version=f"fedsim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one experiment from a TOML config")
    run.add_argument("config", help="TOML config, e.g. configs/quickstart.toml")
    run.add_argument("--out", help="run directory (default: runs/<name>-<timestamp>); must be new or empty")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set rounds=5 --set attack.enabled=false")
    run.add_argument("--verbose", action="store_true", help="show Flower's and Ray's own logs")
    deploy = sub.add_parser("deploy", help="run one experiment on Flower's Deployment Engine on this machine "
                                           "(a SuperLink and one SuperNode per client on 127.0.0.1)")
    deploy.add_argument("config", help="TOML config, e.g. configs/quickstart.toml")
    deploy.add_argument("--out", help="run directory, as for run; the SuperLink's and SuperNodes' logs go to OUT/deploy/")
    deploy.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, as for run")
    resume = sub.add_parser("resume", help="continue a killed or interrupted run from its last round")
    resume.add_argument("run_dir", help="the run directory (fedsim run --out)")
    resume.add_argument("--verbose", action="store_true", help="show Flower's and Ray's own logs")
    pretrain = sub.add_parser("pretrain", help="build (or find) the warm-start checkpoint a config uses "
                                               "([model.warm]: your public split) and print its path")
    pretrain.add_argument("config", help="TOML config, e.g. configs/quickstart.toml")
    pretrain.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="override a config value, as for run")
    validate = sub.add_parser("validate", help="check a config and list every problem; starts nothing")
    validate.add_argument("config", help="TOML config, e.g. configs/quickstart.toml")
    validate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="override a config value, as for run")
    sweep = sub.add_parser("sweep", help="run a grid of experiments, one run directory per cell")
    sweep.add_argument("config", help="TOML config; its [sweep] table declares the axes")
    sweep.add_argument("--out", help="the sweep's folder (default: runs/sweep-<config name>); "
                                     "a re-run skips completed cells and resumes unfinished ones")
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=[A,B,...]",
                       help="an axis over one config key, e.g. --grid 'strategy.name=[\"fedavg\",\"median\"]'; "
                            "replaces a [sweep] axis of that name")
    sweep.add_argument("--seeds", type=int, metavar="K",
                       help="runs per cell, seeds = the config's seed, seed+1, ..., seed+K-1 "
                            "(default: the [sweep] table's seeds, else 1)")
    sweep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value in every cell, as for run")
    sweep.add_argument("--only", action="append", default=[], metavar="AXIS=LABEL[,LABEL...]",
                       help="run only these values of an axis, e.g. --only defense=fedavg (the baseline "
                            "row first); the cells keep their names, so the full grid later skips them")
    sweep.add_argument("--jobs", type=int, metavar="N",
                       help="cells run at once, each in a process of its own (default: the cores over "
                            "resources.client_threads, at most the cells; cells on Ray run one at a time)")
    claims = sub.add_parser("claims", help="check claims from the papers: each an experiment over seeds, "
                                           "a statistic and a verdict, written to claims.md")
    claims.add_argument("file", help="claims file, e.g. configs/claims.toml")
    claims.add_argument("--out", help="folder of the claims' sweeps and claims.md (default: runs/claims-<file name>); "
                                      "a re-run skips completed cells")
    claims.add_argument("--only", action="append", default=[], metavar="ID", help="run only this claim (repeatable)")
    claims.add_argument("--seeds", type=int, metavar="K", help="seeds per arm (default: the file's, else 3)")
    claims.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value in every arm of every claim, as for run")
    claims.add_argument("--jobs", type=int, metavar="N", help="cells run at once, as for sweep")
    claims.add_argument("--report-only", action="store_true",
                        help="run nothing: write claims.md from the cells completed so far (a claim "
                             "with none is 'not measured')")
    report = sub.add_parser("report", help="results.csv, results.md and figures of finished runs")
    report.add_argument("dirs", nargs="+", help="a sweep's folder, or run directories")
    report.add_argument("--out", help="where to write them (default: the one folder given)")
    listing = sub.add_parser("list", help="registered datasets, models, rules, defenses, triggers and attacks, with papers")
    listing.add_argument("what", nargs="?", default="all", choices=[*FAMILIES, "all"])
    table = sub.add_parser("table", help="markdown table of finished runs' summary.json")
    table.add_argument("runs", nargs="+", help="run directories")
    return parser


# What Ctrl-C leaves, by command (others: nothing started, nothing to keep).
INTERRUPTED = {
    "run": "fedsim: interrupted; finished rounds are in the run directory",
    "deploy": "fedsim: interrupted; finished rounds are in the run directory",
    "resume": "fedsim: interrupted; finished rounds are in the run directory",
    "sweep": "fedsim: interrupted; finished cells are kept, the same command continues the sweep",
    "claims": "fedsim: interrupted; finished cells are kept, the same command continues the check",
    "pretrain": "fedsim: interrupted; nothing was cached, the same command starts the warm start again",
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Ctrl-C at any moment, the imports of torch, Flower and Ray included, is exit 130 and one line.
    try:
        return _command(args)
    except KeyboardInterrupt:
        print(INTERRUPTED.get(args.command, "fedsim: interrupted"), file=sys.stderr)
        return 130


def _command(args: argparse.Namespace) -> int:
    if args.command == "table":
        from fedsim.report import summaries_table

        try:
            print(summaries_table(args.runs), end="")
        except (FileNotFoundError, ValueError) as e:
            print(f"fedsim: {e}", file=sys.stderr)
            return 2
        return 0
    if args.command == "report":
        return _report(args.dirs, args.out)
    if args.command == "list":
        print(catalog(args.what), end="")
        return 0
    if args.command == "validate":
        return _validate(args.config, args.set)
    if args.command == "pretrain":
        return _pretrain(args.config, args.set)
    if args.command == "claims":
        for option, value in (("--seeds", args.seeds), ("--jobs", args.jobs)):
            if value is not None and value < (2 if option == "--seeds" else 1):
                print(f"fedsim: {option} {value}: expected an integer ≥ {2 if option == '--seeds' else 1}",
                      file=sys.stderr)
                return 2
        return _claims(args.file, args.out, args.seeds, args.only, args.set, args.jobs, args.report_only)
    if args.command == "sweep":
        for option, value in (("--seeds", args.seeds), ("--jobs", args.jobs)):
            if value is not None and value < 1:
                print(f"fedsim: {option} {value}: expected an integer ≥ 1", file=sys.stderr)
                return 2
        return _sweep(args.config, args.out, args.set, args.grid, args.seeds, args.jobs, args.only)
    from fedsim.runner import describe

    try:
        if args.command == "deploy":
            return _run(args.config, args.out, args.set, False, deploy=True)
        if args.command == "resume":
            return _resume(args.run_dir, args.verbose)
        return _run(args.config, args.out, args.set, args.verbose)
    except Exception as e:
        print(f"fedsim: run failed: {describe(e)}", file=sys.stderr)
        return 1


# Each command below imports what it runs when it runs (torch, Flower and Ray load only for the
# commands that need them, after argument parsing) and maps the outcome to the exit code.

def _note_sweep_table(path: str | Path) -> None:
    """``fedsim run`` and ``validate`` take the base config of a file that declares a grid
    (a ``[sweep]`` table) and say so, rather than refusing a file ``fedsim sweep`` runs."""
    from fedsim.config import ConfigError, read_config

    try:
        declared = "sweep" in read_config(path)
    except ConfigError:
        return  # reported by the load that follows
    if declared:
        print(f"fedsim: note: the [sweep] table of {path} is ignored here (its base config is used); "
              "`fedsim sweep` runs the grid", file=sys.stderr)


def outline(cfg) -> str:
    """One line saying what ``cfg`` (a ``Config``) runs: name, rounds, clients, rule and attack."""
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


def _validate(config: str, overrides: list[str]) -> int:
    """``fedsim validate``: every problem of the config at once (exit 2), or one line saying
    what it would run (exit 0); nothing is started."""
    from fedsim.config import ConfigError
    from fedsim.runner import load

    _note_sweep_table(config)
    try:
        cfg = load(config, overrides)
    except ConfigError as e:
        print(f"fedsim: {e}", file=sys.stderr)
        return 2
    print(f"ok: {outline(cfg)}")
    return 0


def _ended(summary: dict, run_dir) -> int:
    """A finished run's exit code: 0 when it completed, else 1 and why (its rounds.jsonl)."""
    if summary["status"] != "completed":
        print(f"fedsim: run failed: {summary.get('error')}; see {run_dir}/rounds.jsonl", file=sys.stderr)
        return 1
    return 0


def _resume(run_dir: str, verbose: bool) -> int:
    """``fedsim resume``: exit 2 when ``run_dir`` cannot be resumed, 1 when the run fails."""
    from fedsim.config import ConfigError
    from fedsim.runner import resume

    try:
        summary = resume(run_dir, verbose=verbose)
    except ConfigError as e:
        print(f"fedsim: {e}", file=sys.stderr)
        return 2
    return _ended(summary, run_dir)


def _run(config: str, out: str | None, overrides: list[str], verbose: bool, *, deploy: bool = False) -> int:
    """``fedsim run`` (Flower's simulation engine) or, with ``deploy``, ``fedsim deploy`` (its
    Deployment Engine on this machine, ``fedsim.deploy``)."""
    from fedsim.config import ConfigError
    from fedsim.runner import load, prepare_out, run

    _note_sweep_table(config)
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
    return _ended(summary, run_dir.path)


def _sweep(config: str, out: str | None, overrides: list[str], grid: list[str], seeds: int | None,
           jobs: int | None = None, only: list[str] = ()) -> int:
    """``fedsim sweep``: exit 2 when any cell's config is invalid (nothing started), 1 when a
    cell failed (the others still ran), 0 when every cell completed. ``jobs``: in-process cells
    at a time (default ``sweep.default_jobs``)."""
    from fedsim.config import ConfigError
    from fedsim.report import RunDirectoryError
    from fedsim.results import STATUS_FILE
    from fedsim.sweep_run import default_jobs, default_out, in_process, plan, run_plan, start_worker_server

    folder = Path(out) if out is not None else default_out(config)
    if folder.exists() and not folder.is_dir():
        print(f"fedsim: --out {str(folder)!r} is not a directory", file=sys.stderr)
        return 2
    if jobs != 1:  # the cells' workers' imports beside plan's own (start_worker_server)
        start_worker_server()
    try:
        p = plan(config, overrides, grid, seeds, out=folder, only=only)
    except ConfigError as e:
        print(f"fedsim: {e}", file=sys.stderr)
        return 2
    jobs = jobs or default_jobs([cfg for _, cfg in p.cells])
    side_by_side = sum(in_process(cfg) for _, cfg in p.cells) > 1 and jobs > 1
    print(f"fedsim: sweep of {len(p.cells)} runs ({' × '.join(f'{len(a.values)} {a.name}' for a in p.axes) or 'no axes'}"
          f", {len({c.seed for c, _ in p.cells})} seeds{f', up to {jobs} at a time' if side_by_side else ''}) → {folder}")
    try:
        statuses = run_plan(p, folder, config=config, overrides=overrides, jobs=jobs)
    except RunDirectoryError as e:
        print(f"fedsim: --out {e}", file=sys.stderr)
        return 2
    failed = [s["cell"] for s in statuses if s["status"] != "completed"]
    print(f"fedsim: {len(statuses) - len(failed)} of {len(statuses)} runs completed → {folder}/results.md")
    if failed:
        print(f"fedsim: {len(failed)} failed: {', '.join(failed)} (see {folder}/{STATUS_FILE})", file=sys.stderr)
        return 1
    return 0


def _claims(path: str, out: str | None, seeds: int | None, only: list[str], overrides: list[str],
            jobs: int | None, report_only: bool = False) -> int:
    """``fedsim claims``: exit 2 on an invalid claims file or config (nothing run), 0 otherwise
    (a claim that does not reproduce is a result, not an error)."""
    from fedsim.claims_run import run_claims
    from fedsim.config import ConfigError

    folder = Path(out) if out else Path("runs") / f"claims-{Path(path).stem}"
    try:
        outcomes = run_claims(path, folder, seeds=seeds, only=only, overrides=overrides, jobs=jobs,
                              report_only=report_only)
    except ConfigError as e:
        print(f"fedsim: {e}", file=sys.stderr)
        return 2
    print(f"fedsim: {len(outcomes)} claims → {folder}/claims.md")
    return 0


def _pretrain(config: str | None, overrides=()) -> int:
    """``fedsim pretrain``: the checkpoint ``config`` starts from (trained and cached on first
    use, with progress), its path on stdout; exit 2 for an invalid config or a config whose
    model.init is not "warm"."""
    import torch

    from fedsim.config import ConfigError
    from fedsim.pretrain import checkpoint_path, warm_start
    from fedsim.ray_session import available_cpus
    from fedsim.runner import load

    try:
        cfg = load(config, overrides)
    except ConfigError as e:
        print(f"fedsim: {e}", file=sys.stderr)
        return 2
    if cfg.model.init != "warm":
        print(f"fedsim: model.init={cfg.model.init!r}: only a warm start is built by fedsim pretrain; "
              "set model.init = \"warm\"", file=sys.stderr)
        return 2
    torch.set_num_threads(available_cpus())
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    path = checkpoint_path(cfg)
    if path.is_file():
        log(f"cached: {path}")
    warm_start(cfg, log=log)
    print(path)
    return 0


def _report(dirs: list[str], out: str | None) -> int:
    from fedsim.results import is_run_dir, write_results

    if out is None and (len(dirs) != 1 or is_run_dir(Path(dirs[0]))):
        print("fedsim: report of several run directories: say where with --out DIR", file=sys.stderr)
        return 2
    try:
        written = write_results(dirs, Path(out or dirs[0]))
    except FileNotFoundError as e:
        print(f"fedsim: {e}", file=sys.stderr)
        return 2
    print("\n".join(map(str, written)))
    return 0


def entry() -> None:
    """The ``fedsim`` command: ``main``, then an exit without Python's freeing of every module
    one by one (torch, Flower, open_clip: ≈ 1.6 s after any command that ran something, 2-vCPU
    AMD EPYC VM, 2026-12-08). What an exit owes is still done: the workers' fork server of a
    sweep ended (``sweep_run.stop_worker_server``), the atexit handlers run (logging's flush,
    multiprocessing's clean-up of its children and folders), stdout and stderr flushed. A
    thread of the command still running (none of fedsim's outlives its command) gets Python's
    own exit, which waits for it."""
    import atexit
    import os
    import threading

    code = main()
    if "fedsim.sweep_run" in sys.modules:
        sys.modules["fedsim.sweep_run"].stop_worker_server()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it
            pass
    os._exit(code)


if __name__ == "__main__":
    entry()
