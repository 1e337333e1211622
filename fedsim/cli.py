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
        from fedsim.runner import main_validate

        return main_validate(args.config, args.set)
    if args.command == "pretrain":
        from fedsim.pretrain import main_pretrain

        return main_pretrain(args.config, args.set)
    if args.command == "claims":
        from fedsim.claims_run import main_claims

        for option, value in (("--seeds", args.seeds), ("--jobs", args.jobs)):
            if value is not None and value < (2 if option == "--seeds" else 1):
                print(f"fedsim: {option} {value}: expected an integer ≥ {2 if option == '--seeds' else 1}",
                      file=sys.stderr)
                return 2
        return main_claims(args.file, args.out, args.seeds, args.only, args.set, args.jobs)
    if args.command == "sweep":
        from fedsim.sweep import main_sweep

        for option, value in (("--seeds", args.seeds), ("--jobs", args.jobs)):
            if value is not None and value < 1:
                print(f"fedsim: {option} {value}: expected an integer ≥ 1", file=sys.stderr)
                return 2
        return main_sweep(args.config, args.out, args.set, args.grid, args.seeds, args.jobs, args.only)
    from fedsim.runner import describe, main_resume, main_run

    try:
        if args.command == "deploy":
            return main_run(args.config, args.out, args.set, False, deploy=True)
        if args.command == "resume":
            return main_resume(args.run_dir, args.verbose)
        return main_run(args.config, args.out, args.set, args.verbose)
    except Exception as e:
        print(f"fedsim: run failed: {describe(e)}", file=sys.stderr)
        return 1


def _report(dirs: list[str], out: str | None) -> int:
    from pathlib import Path

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


if __name__ == "__main__":
    sys.exit(main())
