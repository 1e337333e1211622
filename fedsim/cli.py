"""``fedsim run CONFIG [--out DIR] [--set key=value ...]``, ``fedsim resume RUN_DIR``,
``fedsim validate CONFIG [--set key=value ...]``, ``fedsim list [WHAT]`` and ``fedsim table RUN_DIR...``: argument parsing and
exit codes.

Exit codes: 0 success, 2 invalid config or arguments or an unusable ``--out`` (nothing
started), 1 the run failed or no round aggregated, 130 interrupted by Ctrl-C (the run
directory still holds every finished round and a summary saying why)."""

from __future__ import annotations

import argparse
import sys

from fedsim.catalog import FAMILIES, catalog


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsim", description="Federated CLIP security simulator")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one experiment from a TOML config")
    run.add_argument("config", help="TOML config, e.g. configs/quickstart.toml")
    run.add_argument("--out", help="run directory (default: runs/<name>-<timestamp>); must be new or empty")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set rounds=5 --set attack.enabled=false")
    run.add_argument("--verbose", action="store_true", help="show Flower's and Ray's own logs")
    resume = sub.add_parser("resume", help="continue a killed or interrupted run from its last round")
    resume.add_argument("run_dir", help="the run directory (fedsim run --out)")
    resume.add_argument("--verbose", action="store_true", help="show Flower's and Ray's own logs")
    validate = sub.add_parser("validate", help="check a config and list every problem; starts nothing")
    validate.add_argument("config", help="TOML config, e.g. configs/quickstart.toml")
    validate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="override a config value, as for run")
    listing = sub.add_parser("list", help="registered datasets, models, rules, triggers and attacks, with papers")
    listing.add_argument("what", nargs="?", default="all", choices=[*FAMILIES, "all"])
    table = sub.add_parser("table", help="markdown table of finished runs' summary.json")
    table.add_argument("runs", nargs="+", help="run directories")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "table":
        from fedsim.report import summaries_table

        try:
            print(summaries_table(args.runs), end="")
        except (FileNotFoundError, ValueError) as e:
            print(f"fedsim: {e}", file=sys.stderr)
            return 2
        return 0
    if args.command == "list":
        print(catalog(args.what), end="")
        return 0
    if args.command == "validate":
        from fedsim.runner import main_validate

        return main_validate(args.config, args.set)
    from fedsim.runner import describe, main_resume, main_run

    try:
        if args.command == "resume":
            return main_resume(args.run_dir, args.verbose)
        return main_run(args.config, args.out, args.set, args.verbose)
    except KeyboardInterrupt:
        print("fedsim: interrupted; finished rounds are in the run directory", file=sys.stderr)
        return 130
    except Exception as e:
        print(f"fedsim: run failed: {describe(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
