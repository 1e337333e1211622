"""Mutation testing (``make mutants``; not part of CI).

Runs mutmut (configured in pyproject's ``[tool.mutmut]``: every module of ``strategies/`` and
``clients/attacks/`` and the core modules listed there, against the non-slow tests) and prints
the share of mutants the tests kill, per file and in all, then every survivor. A survivor listed in ``docs/mutants.md`` with a reason is
marked there as equivalent (it cannot change behaviour); the score counts it as surviving all
the same.

    python scripts/mutants.py [--jobs N] [--show] [PATTERN ...]   # --show: each survivor's diff
    python scripts/mutants.py "fedsim.evaluation.*" "fedsim.grid.*"  # some modules only

Torch's OpenMP pool does not survive a fork: workers run single-threaded and mutmut forks them
from a clean fork server (``process_isolation = "forkserver"``).
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTMUT = [sys.executable, "-m", "mutmut"]
# mutmut's statuses; a timeout or a crash of the mutated code is a detection too.
DETECTED = {"killed", "timeout", "segfault"}


def results() -> dict[str, str]:
    out = subprocess.run(MUTMUT + ["results", "--all", "true"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return dict(re.findall(r"^\s+(\S+): (\S.*)$", out, flags=re.M))


def explained() -> set[str]:
    """Mutant names that docs/mutants.md explains as equivalent (a line starting with `name`)."""
    doc = ROOT / "docs" / "mutants.md"
    return set(re.findall(r"^- `([\w.]+__mutmut_\d+)`", doc.read_text(), flags=re.M)) if doc.exists() else set()


def module_of(mutant: str) -> str:
    return mutant.rsplit(".", 1)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="mutants tested at once")
    parser.add_argument("--show", action="store_true", help="print the diff of every survivor")
    parser.add_argument("--no-run", action="store_true", help="report the last run only")
    parser.add_argument("patterns", nargs="*", help="mutant name patterns (mutmut's), e.g. 'fedsim.grid.*': "
                        "run and report those only")
    args = parser.parse_args(argv)
    import importlib.util

    if importlib.util.find_spec("mutmut") is None:
        print("scripts/mutants.py: mutmut is not installed in this Python; `make mutants` installs it "
              "(pip install -e '.[test,mutants]')", file=sys.stderr)
        return 2
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    if not args.no_run:
        subprocess.run(MUTMUT + ["run", "--max-children", str(args.jobs), *args.patterns], cwd=ROOT, env=env,
                       check=False)
    status = results()
    if args.patterns:
        status = {n: s for n, s in status.items() if any(fnmatch.fnmatchcase(n, p) for p in args.patterns)}
    if not status:
        print("no mutants found: did mutmut run?", file=sys.stderr)
        return 1
    untested = sorted(n for n, s in status.items() if s == "not checked")
    if untested:
        print(f"{len(untested)} of {len(status)} mutants not tested yet (an interrupted run): "
              "the shares below are over the tested ones only")
        status = {n: s for n, s in status.items() if s != "not checked"}
    by_module: dict[str, Counter] = defaultdict(Counter)
    for name, s in status.items():
        by_module[module_of(name)]["detected" if s in DETECTED else s] += 1
    print(f"\n{'module':45s} {'mutants':>8s} {'killed':>8s} {'share':>7s}")
    for module in sorted(by_module):
        c = by_module[module]
        total = sum(c.values())
        print(f"{module:45s} {total:8d} {c['detected']:8d} {c['detected'] / total:7.1%}")
    total = len(status)
    if not total:
        print("no mutant was tested (did mutmut's stats run fail? see its output above)", file=sys.stderr)
        return 1
    killed = sum(1 for s in status.values() if s in DETECTED)
    print(f"{'all':45s} {total:8d} {killed:8d} {killed / total:7.1%}")
    print("by status: " + ", ".join(f"{k} {v}" for k, v in sorted(Counter(status.values()).items())))
    survivors = sorted(n for n, s in status.items() if s not in DETECTED)
    known = explained()
    print(f"\n{len(survivors)} survivors ({len(set(survivors) & known)} explained as equivalent "
          f"in docs/mutants.md):")
    for name in survivors:
        note = "  [equivalent, see docs/mutants.md]" if name in known else ""
        print(f"  {name}: {status[name]}{note}")
        if args.show:
            print(subprocess.run(MUTMUT + ["show", name], cwd=ROOT, capture_output=True, text=True).stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
