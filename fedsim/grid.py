"""The axes of a grid of runs: declared in a config's ``[sweep]`` table or by ``--grid``,
expanded into cells (one run each), or recovered from the configs of finished runs.

An axis has a name and labelled values; each value sets one or more dotted config keys (the
keys ``--set`` takes). In a ``[sweep]`` table::

    seeds = 3                                   # runs per cell: seed, seed + 1, seed + 2
    "strategy.name" = ["fedavg", "median"]      # one key: its values label themselves

    [sweep.attack.badnet]                       # several keys: axis "attack", value "badnet"
    "attack.data.enabled" = true
    "attack.byzantine.name" = "none"

A cell is one value of every axis and one seed; its name joins the labels in axis order and
the seed (``median__badnet__seed0``), so it is stable across re-runs of the same grid.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

from fedsim.config import ConfigError, parse_override

SEEDS_KEY = "seeds"
# Keys no axis may sweep: the seed has its own count, the name is set per cell.
RESERVED = ("seed", "name")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


@dataclass(frozen=True)
class Axis:
    name: str
    values: tuple[tuple[str, dict[str, Any]], ...]  # (label, {dotted key: value})

    @property
    def keys(self) -> list[str]:
        """Every key some value of the axis sets, in order of first appearance."""
        return list(dict.fromkeys(k for _, settings in self.values for k in settings))

    def to_json(self) -> dict:
        return {"name": self.name, "values": [{"label": lb, "settings": s} for lb, s in self.values]}

    @classmethod
    def from_json(cls, data: dict) -> "Axis":
        return cls(data["name"], tuple((v["label"], v["settings"]) for v in data["values"]))


def union_axes(recorded: list[Axis], new: list[Axis]) -> list[Axis] | None:
    """The axes of a folder that two sweeps of one grid ran into (``--only`` subsets, one after
    another): each axis's recorded values, then the new sweep's values whose labels it lacks; a
    label in both takes the new sweep's settings (the cells it ran are those). None when the
    two do not have the same axes in the same order (not one grid: the new sweep's axes
    stand)."""
    if [a.name for a in recorded] != [a.name for a in new]:
        return None
    merged = []
    for old, now in zip(recorded, new):
        current = dict(now.values)
        values = [(label, current.pop(label, settings)) for label, settings in old.values]
        merged.append(Axis(now.name, tuple(values + list(current.items()))))
    return merged


@dataclass(frozen=True)
class Cell:
    name: str
    labels: dict[str, str]  # axis name → label
    seed: int
    settings: dict[str, Any]  # dotted key → value, every axis's plus the seed


def label_of(value: Any) -> str:
    """A value as a short, file-name-safe label: ``"median"`` → ``median``, ``0.5`` → ``0.5``,
    ``true`` → ``true``, ``[0, 1]`` → ``0-1``, ``{f = 2}`` → ``f-2``."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, dict):
        text = "_".join(f"{k}-{label_of(v)}" for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        text = "-".join(label_of(v) for v in value)
    else:
        text = str(value)
    return _UNSAFE.sub("-", text) or "empty"


def _key_problem(key: str, where: str) -> str | None:
    if not key or any(not part for part in key.split(".")):
        return f"{where}: {key!r} is not a dotted config key"
    if key in RESERVED:
        return (f"{where}: {key!r} cannot be swept" +
                ("; give the number of seeds instead: seeds = K (or --seeds K)" if key == "seed" else ""))
    return None


def axis_of(name: str, spec: Any, where: str) -> tuple[Axis | None, list[str]]:
    """One axis from its declaration: a non-empty list of values of the key ``name``, or a
    table of labels, each a table of dotted config keys → values. Returns (axis, problems)."""
    if isinstance(spec, list):
        problem = _key_problem(name, where)
        if problem:
            return None, [problem]
        values = tuple((label_of(v), {name: v}) for v in spec)
    elif isinstance(spec, dict):
        problems = [f"{where}.{label}: expected a table of dotted config keys → values, got {settings!r}"
                    for label, settings in spec.items() if not isinstance(settings, dict) or not settings]
        problems += [p for label, settings in spec.items() if isinstance(settings, dict)
                     for key in settings if (p := _key_problem(key, f"{where}.{label}"))]
        problems += [f"{where}.{label}: not a file-name-safe label; use letters, digits, . _ + -"
                     for label in spec if label_of(label) != label]
        if problems:
            return None, problems
        values = tuple((label, dict(settings)) for label, settings in spec.items())
    else:
        return None, [f"{where}={spec!r}: expected a list of values, or a table of labelled "
                      "settings ([sweep.<axis>.<label>] with \"dotted.key\" = value lines)"]
    if not values:
        return None, [f"{where}: no values"]
    labels = [label for label, _ in values]
    twice = sorted({lb for lb in labels if labels.count(lb) > 1})
    if twice:
        return None, [f"{where}: values {twice} give the same label twice (cell names would clash)"]
    return Axis(name, values), []


def axes_of(table: dict, where: str = "sweep") -> tuple[list[Axis], int | None, list[str]]:
    """The axes and the seed count (None: not given) of a ``[sweep]`` table, and its problems."""
    axes, problems, seeds = [], [], table.get(SEEDS_KEY)
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        problems.append(f"{where}.{SEEDS_KEY}={seeds!r}: expected an integer ≥ 1")
        seeds = None
    for name, spec in table.items():
        if name == SEEDS_KEY:
            continue
        axis, found = axis_of(name, spec, f"{where}.{name}" if "." not in name else f'{where}."{name}"')
        problems += found
        axes += [axis] if axis else []
    return axes, seeds, problems


def axis_option(item: str) -> Axis:
    """``--grid key=[a,b,c]`` → an axis over ``key``."""
    path, value = parse_override(item)
    if not isinstance(value, list):
        raise ConfigError(f"--grid {item!r}: expected key=[value, ...], e.g. "
                          "--grid 'strategy.name=[\"fedavg\", \"median\"]'")
    axis, problems = axis_of(".".join(path), value, f"--grid {item!r}")
    if problems:
        raise ConfigError("\n  ".join(problems))
    return axis


def merge_axes(declared: list[Axis], given: list[Axis]) -> list[Axis]:
    """The config's axes with ``--grid`` ones: an axis of the same name is replaced in place,
    a new one is appended."""
    by_name = {a.name: a for a in given}
    merged = [by_name.pop(a.name, a) for a in declared]
    return merged + list(by_name.values())


def select(axes: list[Axis], item: str) -> tuple[list[Axis], list[str]]:
    """``--only axis=label[,label...]``: the axes with ``axis`` cut to the named values (in the
    axis's own order), so a subset of a grid runs as cells of the same names — e.g. the FedAvg
    row first, for its power check — and the full grid later skips them. Returns the axes and
    the problems (an unknown axis or label, an empty list)."""
    name, sep, rest = item.partition("=")
    name = name.strip()
    labels = [lb.strip() for lb in rest.split(",") if lb.strip()]
    by_name = {a.name: a for a in axes}
    if not sep or not name or not labels:
        return axes, [f"--only {item!r}: expected axis=label[,label...], e.g. --only defense=fedavg"]
    if name not in by_name:
        return axes, [f"--only {item!r}: no axis named {name!r}; the axes are {sorted(by_name)}"]
    known = [lb for lb, _ in by_name[name].values]
    unknown = [lb for lb in labels if lb not in known]
    if unknown:
        return axes, [f"--only {item!r}: axis {name!r} has no value {lb!r}; its values are {known}"
                      for lb in unknown]
    return [Axis(a.name, tuple(v for v in a.values if v[0] in labels)) if a.name == name else a
            for a in axes], []


def axis_conflicts(axes: list[Axis]) -> list[str]:
    """Keys set by two axes (or one inside a table another sets): the cell would depend on
    which axis is applied last."""
    owner: dict[str, str] = {}
    problems = []
    for axis in axes:
        for key in axis.keys:
            for other, name in owner.items():
                if name != axis.name and (key == other or key.startswith(other + ".")
                                          or other.startswith(key + ".")):
                    problems.append(f"sweep: axes {name!r} and {axis.name!r} both set {min(key, other, key=len)!r}")
        owner.update({key: axis.name for key in axis.keys})
    return problems


def expand(axes: list[Axis], seeds: list[int]) -> list[Cell]:
    """Every cell: the cartesian product of the axes' values in declaration order (the first
    axis varies slowest), each with every seed (innermost, so a cell's seeds run together)."""
    cells = []
    for combo in itertools.product(*(axis.values for axis in axes)):
        labels = {axis.name: label for axis, (label, _) in zip(axes, combo)}
        settings = {k: v for _, s in combo for k, v in s.items()}
        for seed in seeds:
            name = "__".join([*labels.values(), f"seed{seed}"])
            cells.append(Cell(name, labels, seed, {**settings, "seed": seed}))
    return cells


def flatten(table: dict, prefix: str = "") -> dict[str, Any]:
    """A nested config table as dotted keys → values; a ``params`` table (a rule's, a
    trigger's, an attack's) stays one value, as it is replaced whole."""
    flat = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and key != "params":
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def label_in(axis: Axis, config: dict[str, Any]) -> str | None:
    """The label of the value of ``axis`` whose every setting the flat ``config`` holds (of
    several, the one with the most settings: the most specific)."""
    # a key the config lacks is unset: it matches an inferred value None (``infer_axes``),
    # never a declared one (TOML has no None)
    matching = [(len(settings), -i, label) for i, (label, settings) in enumerate(axis.values)
                if all(config.get(k) == v for k, v in settings.items())]
    return max(matching)[2] if matching else None


def infer_axes(configs: list[dict[str, Any]]) -> list[Axis]:
    """The axes of a set of runs from their flat configs alone: the keys whose values differ
    (``seed`` and ``name`` aside), keys that change together forming one axis, in the order of
    the first config's keys. A one-key axis is named by its key; a several-key axis by the
    keys' common dotted prefix (else by the keys joined with +), its labels ``key=value`` of
    the keys after that prefix."""
    keys = list(dict.fromkeys(k for c in configs for k in c))
    groups: dict[tuple, list[str]] = {}
    for key in keys:
        if key in RESERVED:
            continue
        texts = [repr(c.get(key)) for c in configs]
        if len(set(texts)) > 1:
            # the partition of the runs by this key's value, in a canonical numbering
            first: dict[str, int] = {}
            groups.setdefault(tuple(first.setdefault(t, len(first)) for t in texts), []).append(key)
    axes = []
    for group in groups.values():
        prefix = _common_prefix(group) if len(group) > 1 else ""
        distinct: list[dict] = []
        for c in configs:
            settings = {k: c.get(k) for k in group}
            if settings not in distinct:
                distinct.append(settings)
        labels = _distinct_labels([[_short_label(v) for v in s.values()] for s in distinct],
                                  [[label_of(v) for v in s.values()] for s in distinct])
        if len(group) > 1:
            labels = [",".join(f"{k[len(prefix):]}={part}" for k, part in zip(group, parts)) for parts in labels]
        else:
            labels = [parts[0] for parts in labels]
        name = group[0] if len(group) == 1 else (prefix.rstrip(".") or "+".join(group))
        axes.append(Axis(name, tuple(zip(labels, distinct))))
    return axes


def _short_label(value: Any) -> str:
    """An inferred value's label: ``unset`` for a key a run's config lacks, a path's file name
    (``/tmp/…/warm_full.pt`` → ``warm_full.pt``), else ``label_of``."""
    if value is None:
        return "unset"
    if isinstance(value, str) and "/" in value.rstrip("/"):
        return label_of(value.rstrip("/").rsplit("/", 1)[1])
    return label_of(value)


def _distinct_labels(short: list[list[str]], full: list[list[str]]) -> list[list[str]]:
    """Per distinct value, its short label parts; where two values' short labels coincide,
    the full ``label_of`` ones; where those coincide too ("a b" and "a/b" both "a-b"), a
    suffix ``~2``, ``~3`` … in first-seen order. Distinct values never share a label."""
    joined = [tuple(s) for s in short]
    chosen = [list(s) if joined.count(tuple(s)) == 1 else list(f) for s, f in zip(short, full)]
    seen: dict[tuple, int] = {}
    out = []
    for parts in chosen:
        key = tuple(parts)
        seen[key] = seen.get(key, 0) + 1
        out.append(parts if seen[key] == 1 else parts[:-1] + [f"{parts[-1]}~{seen[key]}"])
    return out


def _common_prefix(keys: list[str]) -> str:
    """The longest dotted prefix (ending in '.') shared by ``keys``."""
    parts = [k.split(".")[:-1] for k in keys]
    common = []
    for level in zip(*parts):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return "".join(p + "." for p in common)
