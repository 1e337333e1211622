"""The literature check: claims from the papers, each an experiment over seeds with a stated
statistic and a verdict (issue #22). ``fedsim claims configs/claims.toml`` runs them and
writes ``claims.md``.

A claim compares *arms* — the same config with different ``--set`` overrides — over the same
seeds, on one metric of each run's ``summary.json``::

    [[claim]]
    id = "cleanclip-vs-finetuning"
    paper = "Bansal et al., ICCV 2023"
    claim = "CleanCLIP lowers BadNet ASR more than plain fine-tuning on the same clean pairs"
    config = "claims/cleanclip.toml"          # relative to the claims file
    metric = "attack_success_rate"
    expect = "less"                           # the second arm against the first
    arms = { finetune = ["defense.cleanclip.lambda2=0"], cleanclip = [] }
    requires = [{ arm = "finetune", metric = "attack_success_rate_before_cleanclip", at_least = 0.8 }]

The statistic (``effect``): the difference of the arms' means over seeds, second minus
first, with its standard error ``se = sqrt(s1²/n1 + s2²/n2)`` (sample variances). With
``expect``:

- ``greater`` / ``less``: the paper reports effect > 0 / < 0. **reproduces** when the effect
  has that sign and ``|effect| ≥ max(2·se, min_effect)``; **does not reproduce** when it has
  the opposite sign and ``|effect| ≥ 2·se``; otherwise **inconclusive** (the spread over the
  seeds is as large as the effect).
- ``increasing`` / ``decreasing`` (three or more arms, in the claim's order): every step
  between neighbouring arms' means goes the paper's way and last − first reproduces as above;
  a step against it, with last − first reproducing, is **does not reproduce (not monotone)**.
- ``within``: the paper reports no meaningful change: **reproduces** when
  ``|effect| + 2·se ≤ margin``; **does not reproduce** when ``|effect| − 2·se > margin``;
  otherwise inconclusive.

``requires`` are preconditions that make the experiment able to test the claim (a planted
backdoor before a defense removes it: the power check of ``fedsim.power``); when one fails
the verdict is **cannot at this scale**, with the measured value, whatever the effect. Also
with ``check`` entries: conditions the paper states beside the effect (BadEncoder keeps ASR
high), which fail the verdict as **does not reproduce** when their mean misses the bound.

This module is pure (specs, statistics, verdicts, markdown); ``fedsim.claims_run`` runs the
arms as ``fedsim sweep`` cells.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from fedsim.config import ConfigError, parse_override

EXPECTS = ("greater", "less", "increasing", "decreasing", "within")
_BOUNDS = ("at_least", "at_most")
_CLAIM_KEYS = {"id", "paper", "claim", "config", "metric", "expect", "arms", "requires", "check",
               "margin", "min_effect", "setting", "seeds"}


@dataclass(frozen=True)
class Condition:
    """``metric`` of ``arm`` (mean over seeds) at least / at most ``bound``."""

    arm: str
    metric: str
    bound: float
    at_least: bool

    @property
    def text(self) -> str:
        return f"{self.arm}: {self.metric} {'≥' if self.at_least else '≤'} {self.bound:g}"

    def holds(self, value: float) -> bool:
        return value >= self.bound if self.at_least else value <= self.bound


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    claim: str
    config: str
    metric: str
    expect: str
    arms: dict[str, list[str]]  # label → --set overrides, in the claim's order
    requires: tuple[Condition, ...] = ()
    check: tuple[Condition, ...] = ()
    margin: float = 0.05  # for "within"
    min_effect: float = 0.0  # the smallest |effect| that counts as one
    setting: str = ""  # our setting in words (what the arms differ in, the scale)
    seeds: int | None = None  # overrides the file's default


def _condition(item: Any, where: str, arms: dict) -> tuple[Condition | None, list[str]]:
    if not isinstance(item, dict):
        return None, [f"{where}={item!r}: expected a table {{ arm, metric, at_least | at_most }}"]
    problems = [f"{where}.{k}: unknown key; allowed: arm, metric, at_least, at_most"
                for k in item if k not in ("arm", "metric", *_BOUNDS)]
    bounds = [k for k in _BOUNDS if k in item]
    if len(bounds) != 1:
        problems.append(f"{where}: give exactly one of at_least, at_most")
    elif isinstance(item[bounds[0]], bool) or not isinstance(item[bounds[0]], (int, float)) \
            or not math.isfinite(item[bounds[0]]):
        problems.append(f"{where}.{bounds[0]}={item[bounds[0]]!r}: expected a finite number")
    if item.get("arm") not in arms:
        problems.append(f"{where}.arm={item.get('arm')!r}: not one of the claim's arms {list(arms)}")
    if not isinstance(item.get("metric"), str) or not item.get("metric"):
        problems.append(f"{where}.metric={item.get('metric')!r}: expected a summary.json key")
    if problems:
        return None, problems
    return Condition(item["arm"], item["metric"], float(item[bounds[0]]), bounds[0] == "at_least"), []


def parse(table: dict) -> tuple[list[Claim], int, list[str]]:
    """The claims of a claims file (its TOML as a dict): (claims, default seeds, problems),
    every problem naming the claim, the field, the value and what is allowed."""
    problems = []
    seeds = table.get("seeds", 3)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2:
        problems.append(f"seeds={seeds!r}: expected an integer ≥ 2 (a spread needs two seeds)")
        seeds = 3
    unknown = sorted(set(table) - {"seeds", "claim"})
    problems += [f"{k}: unknown key; allowed: seeds, [[claim]]" for k in unknown]
    items = table.get("claim", [])
    if not isinstance(items, list) or not items:
        return [], seeds, problems + ["[[claim]]: expected at least one claim"]
    claims, ids = [], set()
    for i, item in enumerate(items):
        where = f"claim[{i}]" + (f" ({item.get('id')!r})" if isinstance(item, dict) and "id" in item else "")
        if not isinstance(item, dict):
            problems.append(f"{where}: expected a table")
            continue
        found = [f"{where}.{k}: unknown key; allowed: {', '.join(sorted(_CLAIM_KEYS))}"
                 for k in item if k not in _CLAIM_KEYS]
        for key in ("id", "paper", "claim", "config", "metric"):
            if not isinstance(item.get(key), str) or not item.get(key):
                found.append(f"{where}.{key}={item.get(key)!r}: expected a non-empty string")
        if isinstance(item.get("id"), str):
            if item["id"] in ids:
                found.append(f"{where}.id={item['id']!r}: given twice")
            ids.add(item["id"])
        expect = item.get("expect")
        if expect not in EXPECTS:
            found.append(f"{where}.expect={expect!r}: expected one of {list(EXPECTS)}")
        arms = item.get("arms")
        if not isinstance(arms, dict) or len(arms) < 2:
            found.append(f"{where}.arms={arms!r}: expected a table of at least two arms, label → [\"key=value\", ...]")
            arms = {}
        for label, sets in arms.items():
            if not isinstance(sets, list) or not all(isinstance(s, str) for s in sets):
                found.append(f"{where}.arms.{label}={sets!r}: expected a list of \"key=value\" strings")
                continue
            for s in sets:
                try:
                    parse_override(s)
                except ConfigError as e:
                    found.append(f"{where}.arms.{label}: {e}")
        if expect in ("greater", "less", "within") and arms and len(arms) != 2:
            found.append(f"{where}.arms: expect={expect!r} compares exactly two arms, got {len(arms)}")
        if expect in ("increasing", "decreasing") and arms and len(arms) < 3:
            found.append(f"{where}.arms: expect={expect!r} needs three or more arms in order, got {len(arms)}")
        conditions = {}
        for key in ("requires", "check"):
            raw = item.get(key, [])
            if not isinstance(raw, list):
                found.append(f"{where}.{key}={raw!r}: expected a list of tables")
                raw = []
            parsed = []
            for j, c in enumerate(raw):
                cond, wrong = _condition(c, f"{where}.{key}[{j}]", arms)
                found += wrong
                parsed += [cond] if cond else []
            conditions[key] = tuple(parsed)
        for key, default in (("margin", 0.05), ("min_effect", 0.0)):
            v = item.get(key, default)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                found.append(f"{where}.{key}={v!r}: expected a finite number ≥ 0")
        if "seeds" in item and (isinstance(item["seeds"], bool) or not isinstance(item["seeds"], int)
                                or item["seeds"] < 2):
            found.append(f"{where}.seeds={item['seeds']!r}: expected an integer ≥ 2")
        if found:
            problems += found
            continue
        claims.append(Claim(item["id"], item["paper"], item["claim"], item["config"], item["metric"], expect,
                            {label: list(sets) for label, sets in arms.items()}, conditions["requires"],
                            conditions["check"], float(item.get("margin", 0.05)),
                            float(item.get("min_effect", 0.0)), str(item.get("setting", "")), item.get("seeds")))
    return claims, seeds, problems


@dataclass(frozen=True)
class Effect:
    """Second arm's mean minus the first's, its standard error, and the arms' means."""

    effect: float
    se: float
    means: tuple[float, ...]
    ns: tuple[int, ...]


def difference(first: list[float], second: list[float]) -> Effect:
    """mean(second) − mean(first), se = sqrt(s1²/n1 + s2²/n2) (sample variances; an arm of
    one value contributes no variance term, which makes the se optimistic — parse asks for
    ≥ 2 seeds)."""
    if not first or not second:
        raise ValueError("each arm needs at least one value")
    var = lambda xs: statistics.variance(xs) / len(xs) if len(xs) > 1 else 0.0  # noqa: E731
    m1, m2 = statistics.fmean(first), statistics.fmean(second)
    return Effect(m2 - m1, math.sqrt(var(first) + var(second)), (m1, m2), (len(first), len(second)))


@dataclass
class Outcome:
    claim: Claim
    verdict: str  # "reproduces", "does not reproduce", "inconclusive", "cannot at this scale"
    effect: Effect | None
    why: str
    measured: dict[str, list[float]] = field(default_factory=dict)  # arm → the metric per seed


def _signed(effect: Effect, sign: int, min_effect: float) -> tuple[str, str]:
    e, se = effect.effect, effect.se
    if sign * e > 0 and abs(e) >= max(2 * se, min_effect):
        return "reproduces", f"effect {e:+.3f} ± {se:.3f} (se) has the paper's sign and |effect| ≥ {'2·se' if 2 * se >= min_effect else f'min_effect {min_effect:g}'}"
    if sign * e < 0 and abs(e) >= 2 * se:
        return "does not reproduce", f"effect {e:+.3f} ± {se:.3f} (se) has the opposite sign, |effect| ≥ 2·se"
    return "inconclusive", f"effect {e:+.3f} ± {se:.3f} (se): |effect| < {'2·se' if 2 * se >= min_effect else f'min_effect {min_effect:g}'}"


def verdict(claim: Claim, values: dict[str, dict[str, list[float]]]) -> Outcome:
    """The verdict of ``claim`` from ``values[metric][arm]`` = that metric per completed seed."""
    arms = list(claim.arms)
    measured = {a: values.get(claim.metric, {}).get(a, []) for a in arms}
    missing = [a for a in arms if len(measured[a]) < 2]
    if missing:
        return Outcome(claim, "cannot at this scale", None,
                       f"fewer than 2 completed seeds with {claim.metric} in arm(s) {missing}", measured)
    for cond in claim.requires:
        got = values.get(cond.metric, {}).get(cond.arm, [])
        if not got:
            return Outcome(claim, "cannot at this scale", None, f"precondition {cond.text}: not measured", measured)
        if not cond.holds(statistics.fmean(got)):
            return Outcome(claim, "cannot at this scale", None,
                           f"precondition {cond.text} fails: {statistics.fmean(got):.3f} "
                           "(the experiment cannot test the claim at this scale)", measured)
    first, last = measured[arms[0]], measured[arms[-1]]
    effect = difference(first, last)
    if claim.expect == "within":
        e, se = abs(effect.effect), effect.se
        if e + 2 * se <= claim.margin:
            result = ("reproduces", f"|effect| + 2·se = {e + 2 * se:.3f} ≤ margin {claim.margin:g}")
        elif e - 2 * se > claim.margin:
            result = ("does not reproduce", f"|effect| − 2·se = {e - 2 * se:.3f} > margin {claim.margin:g}")
        else:
            result = ("inconclusive", f"|effect| {e:.3f} ± 2·se {2 * se:.3f} straddles margin {claim.margin:g}")
    else:
        sign = 1 if claim.expect in ("greater", "increasing") else -1
        result = _signed(effect, sign, claim.min_effect)
        if claim.expect in ("increasing", "decreasing") and result[0] == "reproduces":
            means = [statistics.fmean(measured[a]) for a in arms]
            against = [f"{a} → {b}" for a, b, m1, m2 in zip(arms, arms[1:], means, means[1:])
                       if sign * (m2 - m1) < 0]
            if against:
                result = ("does not reproduce (not monotone)",
                          f"{result[1]}, but the means step against the paper's direction at {', '.join(against)}")
            effect = Effect(effect.effect, effect.se, tuple(means), tuple(len(measured[a]) for a in arms))
    verdict_, why = result
    for cond in claim.check:
        got = values.get(cond.metric, {}).get(cond.arm, [])
        if not got:
            verdict_, why = "cannot at this scale", f"{why}; check {cond.text}: not measured"
        elif not cond.holds(statistics.fmean(got)):
            verdict_ = "does not reproduce" if verdict_ != "cannot at this scale" else verdict_
            why = f"{why}; check {cond.text} fails: {statistics.fmean(got):.3f}"
        else:
            why = f"{why}; check {cond.text} holds: {statistics.fmean(got):.3f}"
    return Outcome(claim, verdict_, effect, why, measured)


def _spread(xs: list[float]) -> str:
    if not xs:
        return "–"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.fmean(xs):.3f} ± {sd:.3f} (n={len(xs)})"


def markdown(outcomes: list[Outcome], *, header: str = "") -> str:
    """``claims.md``: one row per claim (claim, paper, our setting, the arms' metric mean ± sample
    std, the effect ± se, the verdict) and, below, why each verdict."""
    lines = ["# Claims from the literature, measured", ""]
    if header:
        lines += [header, ""]
    lines += ["Statistic: the difference of the arms' means over seeds (last arm − first), ± its "
              "standard error sqrt(s1²/n1 + s2²/n2); a claim **reproduces** when the effect has the "
              "paper's sign and exceeds 2·se (rules in `fedsim/claims.py`). Arm values: mean ± "
              "sample std over seeds.", "",
              "| claim | paper | our setting | metric: arms | effect ± se | verdict |",
              "|---|---|---|---|---|---|"]
    for o in outcomes:
        c = o.claim
        arms = "<br>".join(f"{a}: {_spread(o.measured.get(a, []))}" for a in c.arms)
        eff = f"{o.effect.effect:+.3f} ± {o.effect.se:.3f}" if o.effect else "–"
        lines.append(f"| {c.claim} | {c.paper} | {c.setting or '–'} | `{c.metric}`<br>{arms} | {eff} | "
                     f"**{o.verdict}** |")
    lines += ["", "## Why each verdict", ""]
    for o in outcomes:
        sets = "; ".join(f"{a}: {' '.join(s) or '(the config as is)'}" for a, s in o.claim.arms.items())
        lines += [f"- **{o.claim.id}** ({o.claim.config}; arms — {sets}): {o.verdict} — {o.why}."]
    return "\n".join(lines) + "\n"
