"""``fedsim claims FILE``: run each claim of a claims file (``fedsim.claims``) as a sweep whose
one axis, ``arm``, holds the claim's arms, then write ``claims.md`` with the verdicts.

Each claim's cells live in ``OUT/<claim id>/`` as a ``fedsim sweep`` folder (its own
``results.md``, power check and figures); a re-run skips the cells that completed, so an
interrupted check resumes and a finished one only rewrites ``claims.md``.
"""

from __future__ import annotations

import tomllib
from datetime import date
from pathlib import Path
from typing import Any

import tomli_w

from fedsim.claims import Claim, Outcome, markdown, parse, verdict
from fedsim.config import ConfigError, invalid, parse_override

_MISSING = object()


def _lookup(dump: dict, path: list[str]) -> Any:
    node: Any = dump
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def arm_settings(claim: Claim, base: dict) -> dict[str, dict[str, Any]]:
    """Each arm's dotted settings. Every cell starts from the claim's config, so nothing leaks
    between arms; an arm with no override (the config as is) gets the base config's value
    (``base``: the validated config as a nested dict) of the first key another arm sets, so
    that it is still a sweep value. ConfigError when no such key has a value."""
    parsed = {label: dict((".".join(k), v) for k, v in map(parse_override, sets))
              for label, sets in claim.arms.items()}
    keys = list(dict.fromkeys(k for settings in parsed.values() for k in settings))
    out = {}
    for label, settings in parsed.items():
        if not settings:
            for key in keys:
                value = _lookup(base, key.split("."))
                if value is not _MISSING and value is not None:
                    settings = {key: value}
                    break
            else:
                raise ConfigError(f"claim {claim.id!r}: arm {label!r} sets nothing and no other arm sets a "
                                  "key with a value in the base config; give it an explicit setting")
        out[label] = settings
    return out


def sweep_table(claim: Claim, config: Path, seeds: int, base: dict) -> dict:
    """The sweep file of one claim: the claim's config extended with one axis, ``arm``."""
    return {"extends": str(config), "sweep": {"seeds": seeds, "arm": arm_settings(claim, base)}}


def _metrics(claim: Claim) -> set[str]:
    return {claim.metric} | {c.metric for c in (*claim.requires, *claim.check)}


def collect(claim: Claim, folder: Path, cells) -> dict[str, dict[str, list[float]]]:
    """``values[metric][arm]``: each needed metric of every completed cell, by arm, in seed order."""
    from fedsim.report import read_summary

    values: dict[str, dict[str, list[float]]] = {m: {} for m in _metrics(claim)}
    for cell in sorted(cells, key=lambda c: c.seed):
        summary = read_summary(folder / cell.name)
        if summary.get("status") != "completed":
            continue
        for metric in values:
            v = summary.get(metric)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                values[metric].setdefault(cell.labels["arm"], []).append(float(v))
    return values


def load_claims(path: Path) -> tuple[list[Claim], int]:
    try:
        table = tomllib.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from e
    claims, seeds, problems = parse(table)
    for claim in claims:
        config = (path.parent / claim.config).resolve()
        if not config.is_file():
            problems.append(f"claim {claim.id!r}: config={claim.config!r}: no such file {config}")
    if problems:
        raise ConfigError(invalid(problems))
    return claims, seeds


def run_claims(path: str | Path, out: str | Path, *, seeds: int | None = None, only=(), overrides=(),
               jobs: int | None = None, log=print, report_only: bool = False) -> list[Outcome]:
    """Run the claims of ``path`` (those named in ``only``, else all) under ``out`` and write
    ``out/claims.md``; returns the outcomes. ConfigError before anything runs when the file, a
    claim, an arm or a cell's config is invalid. ``report_only``: run nothing, judge each claim
    on its cells completed so far ("not measured" where none has completed)."""
    from fedsim.provenance import git_commit, cpu_model
    from fedsim.report import read_summary
    from fedsim.runner import load
    from fedsim.sweep_run import plan, run_plan, start_worker_server

    if not report_only and jobs != 1:  # the cells' workers' imports beside plan's own
        start_worker_server()
    path, out = Path(path), Path(out)
    claims, default_seeds = load_claims(path)
    unknown = [i for i in only if i not in {c.id for c in claims}]
    if unknown:
        raise ConfigError(f"--only {unknown}: no such claim; the claims are {[c.id for c in claims]}")
    chosen = [c for c in claims if not only or c.id in only]
    plans = []
    for claim in chosen:  # every claim's cells validated before any runs
        config = (path.parent / claim.config).resolve()
        k = seeds or claim.seeds or default_seeds
        base = load(config, overrides).model_dump()
        folder = out / claim.id
        folder.mkdir(parents=True, exist_ok=True)
        sweep_file = folder / "claim.toml"
        sweep_file.write_text(tomli_w.dumps(sweep_table(claim, config, k, base)))
        plans.append((claim, folder, sweep_file, plan(sweep_file, overrides, out=folder)))
    outcomes = []
    for i, (claim, folder, sweep_file, p) in enumerate(plans, 1):
        cells = [c for c, _ in p.cells]
        if report_only:
            done = sum(read_summary(folder / c.name).get("status") == "completed" for c in cells)
            log(f"fedsim: claim {i}/{len(plans)} {claim.id}: {done} of {len(cells)} runs completed")
        else:
            log(f"fedsim: claim {i}/{len(plans)} {claim.id}: {len(cells)} runs → {folder}")
            run_plan(p, folder, config=sweep_file, overrides=overrides, jobs=jobs, power_warning=False)
        values = collect(claim, folder, cells)
        outcome = verdict(claim, values)
        if report_only and done == 0:
            outcome = Outcome(claim, "not measured", None, f"none of its {len(cells)} runs has completed")
        elif report_only and done < len(cells):
            outcome = Outcome(claim, "incomplete", outcome.effect,
                              f"{done} of {len(cells)} runs completed; so far: {outcome.verdict} — {outcome.why}",
                              outcome.measured)
        log(f"fedsim: {claim.id}: {outcome.verdict} — {outcome.why}")
        outcomes.append(outcome)
    header = (f"Measured with `fedsim claims {path}` on {date.today().isoformat()}, CPU {cpu_model()!r}, "
              f"commit {git_commit() or 'unknown'}; every cell's config, rounds and summary are in "
              f"its folder under `{out}/<claim>/`." + (f" Overrides: {' '.join(overrides)}." if overrides else ""))
    (out / "claims.md").write_text(markdown(outcomes, header=header))
    return outcomes
