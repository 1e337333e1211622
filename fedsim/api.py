"""The Python API: what the command line does, from a notebook, with results as pandas
DataFrames. Re-exported by ``fedsim`` (``import fedsim; fedsim.run(...)``); the names avoid those of
fedsim's modules (``fedsim.config``, ``fedsim.runner``)::

    import fedsim

    cfg = fedsim.make_config("configs/quickstart.toml", {"rounds": 3, "data.train_size": 600})
    result = fedsim.run(cfg, out="runs/q3")          # a Result: .summary, .rounds, .config
    result.rounds[["round", "clean_accuracy", "attack_success_rate"]]

    table = fedsim.run_sweep("configs/sweeps/defense-vs-attack.toml", out="runs/dva",
                             only={"defense": ["fedavg"]}, seeds=1)   # one row per run
    fedsim.runs("runs/dva")                                        # the same, read back
    fedsim.rounds("runs/dva")                                      # one row per run and round

Overrides are a dict of dotted config keys → Python values (what ``--set key=value`` sets)
or a list of ``"key=value"`` strings. Each function is a thin layer over the module the
command uses (``fedsim.runner``, ``fedsim.sweep_run``, ``fedsim.results``), so the numbers are
the command's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

if TYPE_CHECKING:  # pandas and the config model load on use: ``import fedsim`` stays light
    import pandas as pd

    from fedsim.config import Config

Overrides = Mapping[str, Any] | Iterable[str] | None


def toml_value(value: Any) -> str:
    """A Python value as the TOML text ``--set`` parses: scalars as TOML writes them, lists as
    arrays, dicts as inline tables (``{ f = 2 }``). TypeError for what TOML cannot hold."""
    import re

    import tomli_w

    if isinstance(value, Mapping):
        keys = [k if isinstance(k, str) and re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(str(k))
                for k in value]
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in zip(keys, value.values())) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if value is None:
        raise TypeError("None has no TOML form (leave the key out for its default)")
    return tomli_w.dumps({"v": value}).partition("=")[2].strip()


def _dotted(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``{"strategy": {"name": "krum", "params": {"f": 2}}}`` → ``{"strategy.name": "krum",
    "strategy.params": {"f": 2}}``: a section given as a dict sets its keys one by one (the
    section's other keys keep the config's values); a ``params`` table is set whole, as in
    ``fedsim.grid.flatten``."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, Mapping) and key.rsplit(".", 1)[-1] != "params" and value:
            out.update(_dotted({f"{key}.{k}": v for k, v in value.items()}))
        else:
            out[key] = value
    return out


def _merged(overrides: Overrides, sets: Mapping[str, Any]) -> list[str]:
    """``overrides`` then the keyword overrides (``rounds=3``, ``**{"strategy.name": "krum"}``)."""
    return overrides_of(overrides) + overrides_of(dict(sets))


def overrides_of(overrides: Overrides) -> list[str]:
    """``{"rounds": 3, "clients.lr": 1e-3}`` → ``["rounds=3", "clients.lr=0.001"]`` (each value
    written as TOML, as ``--set`` reads it: ``toml_value``); a list of strings is taken as it
    is. TypeError naming the key for a value TOML cannot hold (None, an object)."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        raise TypeError(f"overrides={overrides!r}: expected a dict of key → value or a list of "
                        "'key=value' strings, not one string")
    if isinstance(overrides, Mapping):
        out = []
        for key, value in _dotted(overrides).items():
            try:
                out.append(f"{key}={toml_value(value)}")
            except TypeError as e:
                raise TypeError(f"override {key!r}={value!r}: not a TOML value ({e})") from e
        return out
    items = list(overrides)
    bad = [i for i in items if not isinstance(i, str)]
    if bad:
        raise TypeError(f"overrides: expected 'key=value' strings, got {bad!r}")
    return items


def make_config(path: str | Path | None = None, overrides: Overrides = None, **sets: Any) -> "Config":
    """A validated config, as ``fedsim validate`` checks it: the file (None: the defaults)
    with the overrides (as for ``run``). Raises fedsim.config.ConfigError naming every problem."""
    from fedsim.runner import load

    return load(path, _merged(overrides, sets))


@dataclass
class Result:
    """One run directory, read: the resolved config, the summary, and the rounds."""

    path: Path
    summary: dict

    @property
    def ok(self) -> bool:
        return self.summary.get("status") == "completed"

    @property
    def config(self) -> "Config":
        from fedsim.config import load_config

        return load_config(self.path / "config.toml")

    @property
    def rounds(self) -> "pd.DataFrame":
        """One row per round of ``rounds.jsonl``; nested records flattened (``retrieval.…``)."""
        return _rounds_frame(self.path)

    def __repr__(self) -> str:
        s = self.summary
        return (f"Result({str(self.path)!r}, status={s.get('status')!r}, CA={s.get('clean_accuracy')}, "
                f"ASR={s.get('attack_success_rate')})")


def _rounds_frame(path: Path) -> "pd.DataFrame":
    import pandas as pd

    file = Path(path) / "rounds.jsonl"
    records = [json.loads(line) for line in file.read_text().splitlines() if line.strip()] if file.is_file() else []
    return pd.json_normalize(records) if records else pd.DataFrame(columns=["round"])


def load_run(path: str | Path) -> Result:
    """A finished (or failed, or interrupted) run directory. FileNotFoundError when ``path``
    holds no summary.json."""
    path = Path(path)
    file = path / "summary.json"
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no summary.json (not a run directory, or a run that never started)")
    return Result(path, json.loads(file.read_text()))


def run(config_or_path: "Config | str | Path", out: str | Path | None = None, *, overrides: Overrides = None,
        quiet: bool = False, **sets: Any) -> Result:
    """Run one experiment, as ``fedsim run``: ``config_or_path`` is a Config (``make_config``) or
    a TOML file; ``overrides`` (a dict or ``"key=value"`` strings), then keyword overrides
    (``rounds=3``, ``strategy={"name": "krum", "params": {"f": 2}}``,
    ``**{"attack.data.poison_rate": 0.25}``) apply on top. Returns the Result (its ``ok`` is
    False for a run in which no round aggregated); the run directory is ``out`` (default
    ``runs/<name>-<timestamp>``). ``quiet``: no progress lines. Ctrl-C raises
    KeyboardInterrupt after the run directory says "interrupted"."""
    from fedsim.config import Config, validate_config
    from fedsim.runner import load as load_file, prepare_out, run as run_config, run_checks

    sets = _merged(overrides, sets)
    if isinstance(config_or_path, Config):
        cfg = config_or_path
        if sets:
            import tomllib

            from fedsim.config import apply_overrides

            cfg = validate_config(apply_overrides(tomllib.loads(cfg.to_toml()), sets), run_checks())
    else:
        cfg = load_file(config_or_path, sets)
    run_dir = prepare_out(out, cfg)
    run_config(cfg, run_dir, log=(lambda _msg: None) if quiet else None)
    return load_run(run_dir.path)


def runs(*paths: str | Path) -> "pd.DataFrame":
    """One row per run directory found in ``paths`` (run directories or folders of them, e.g. a
    sweep's): its label on each axis, the swept keys, seed, status, final and max ASR, final CA,
    mean TPR/FPR, wall time, folder — the rows of ``results.csv`` — plus the initial model's CA
    and ASR."""
    import pandas as pd

    from fedsim.results import csv_rows, find_runs, grid_axes, load_run

    if not paths:
        raise TypeError("runs() needs at least one folder")
    found = [load_run(p) for p in find_runs(paths)]
    rows = csv_rows(found, grid_axes(paths, found))
    for row, r in zip(rows, found):
        # results.csv writes swept values as text; a DataFrame keeps the config's own values
        row.update({k: r.config[k] for k in row if k in r.config})
        row["initial_ca"] = r.summary.get("initial_clean_accuracy")
        row["initial_asr"] = r.summary.get("initial_attack_success_rate")
    return pd.DataFrame(rows)


def rounds(*paths: str | Path) -> "pd.DataFrame":
    """One row per (run, round) of the run directories in ``paths``, with the run's folder name
    (``run``) and seed first."""
    import pandas as pd

    from fedsim.results import find_runs, load_run

    if not paths:
        raise TypeError("rounds() needs at least one folder")
    frames = []
    for p in find_runs(paths):
        frame = _rounds_frame(p)
        frame.insert(0, "seed", load_run(p).config.get("seed"))
        frame.insert(0, "run", p.name)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def sweep(config_path: str | Path, out: str | Path | None = None, *, grid: Mapping[str, list] | None = None,
          seeds: int | None = None, only: Mapping[str, Iterable[str]] | None = None, overrides: Overrides = None,
          jobs: int | None = None, **sets: Any) -> "pd.DataFrame":
    """Run a grid, as ``fedsim sweep``: the config's ``[sweep]`` axes, plus ``grid`` (key →
    values, as ``--grid``), ``seeds`` runs per cell, ``only`` (axis → labels, as ``--only``),
    overrides as for ``run`` in every cell. Writes the sweep folder (default
    ``runs/sweep-<file name>``; a re-run skips completed cells) and returns ``runs(out)``.
    Raises ConfigError before anything runs when a cell is invalid."""
    from fedsim.sweep_run import default_out, plan, run_plan, start_worker_server

    if jobs != 1:  # the cells' workers' imports beside plan's own
        start_worker_server()
    sets = _merged(overrides, sets)
    grid_items = overrides_of({key: list(values) for key, values in (grid or {}).items()})
    only_items = [f"{axis}={','.join([labels] if isinstance(labels, str) else labels)}"
                  for axis, labels in (only or {}).items()]
    folder = Path(out) if out is not None else default_out(config_path)
    p = plan(config_path, sets, grid_items, seeds, out=folder, only=only_items)
    run_plan(p, folder, config=config_path, overrides=sets, jobs=jobs)
    return runs(folder)


run_sweep = sweep


def load(path: str | Path) -> "Result | pd.DataFrame":
    """A run directory as a Result, or a folder of runs (a sweep's) as ``runs(path)``."""
    path = Path(path)
    if (path / "summary.json").is_file():  # a run directory, finished or not
        return load_run(path)
    return runs(path)
