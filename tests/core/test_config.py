"""Configs are validated before anything starts; every error names field, value and what is
allowed; the CLI exits 2 without starting Ray."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fedsim.config import Config, ConfigError, load_config, parse_override, problems_of
from fedsim.runner import run_checks

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_defaults_and_shipped_configs_validate():
    from fedsim.runner import load

    assert load_config(None).clients.num == 10
    for path in sorted((ROOT / "configs").rglob("*.toml")):
        if path == ROOT / "configs" / "claims.toml":
            continue  # a claims file (fedsim claims; tests/core/test_claims.py), not a run's config
        cfg = load(path)
        assert cfg.rounds >= 1, path


@pytest.mark.parametrize(
    "text, expect",
    [
        ("roundz = 3", ["roundz", "unknown key"]),
        ("rounds = 'ten'", ["rounds", "'ten'", "integer"]),
        ("rounds = 0", ["rounds", "0", "greater than or equal to 1"]),
        ("[clients]\nlr = -1.0", ["clients.lr", "-1.0", "greater than 0"]),
        ("[data]\npartition = 'zipf'", ["data.partition", "'zipf'", "allowed: iid, dirichlet, pathological, quantity_skew"]),
        ("[clients]\nnum = 5\nper_round = 6", ["per_round=6", "clients.num=5"]),
        ("[attack]\nmalicious = [0, 12]", ["attack.malicious", "12", "clients.num=10"]),
        ("[attack.data]\ntarget = 'dragon'", ["dragon", "star"]),
        ("[model]\nname = 'no-such-net'", ["model.name", "no-such-net", "fedsim-tiny-resnet"]),
        ("rounds = [", ["not valid TOML"]),
    ],
)
def test_config_errors_name_field_value_and_allowed(tmp_path, text, expect):
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, text), extra_checks=run_checks())
    for fragment in expect:
        assert fragment in str(e.value), (fragment, str(e.value))


def test_registry_checks_reject_unknown_rule_and_params(tmp_path):
    from fedsim.runner import load

    with pytest.raises(ConfigError, match="strategy.name='mean'.*allowed: fedavg"):
        load(_write(tmp_path, "[strategy]\nname = 'mean'"))
    with pytest.raises(ConfigError, match="strategy.params.f: fedavg has no parameter 'f'"):
        load(_write(tmp_path, "[strategy]\nname = 'fedavg'\nparams = { f = 2 }"))
    with pytest.raises(ConfigError, match="attack.data.trigger"):
        load(_write(tmp_path, "[attack.data.trigger]\nname = 'laser'"))


def test_overrides_are_toml_values():
    assert parse_override("rounds=5") == (["rounds"], 5)
    assert parse_override("attack.enabled=false") == (["attack", "enabled"], False)
    assert parse_override("name=abc") == (["name"], "abc")
    cfg = load_config(None, ["rounds=3", "attack.malicious=[2]", "clients.lr=1e-3"])
    assert (cfg.rounds, cfg.attack.malicious, cfg.clients.lr) == (3, [2], 1e-3)
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["rounds"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["rounds=4", "strategy.params={}"])
    again = load_config(_write(tmp_path, cfg.to_toml()))
    assert again == cfg
    assert Config.model_validate_json(cfg.model_dump_json()) == cfg


def test_cli_exits_2_on_bad_config_without_starting(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", "run", str(_write(tmp_path, "rounds = -2")), "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 2
    assert "rounds=-2" in proc.stderr
    assert not out.exists()


def test_cli_refuses_a_non_empty_out_directory(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    proc = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", "run", str(ROOT / "configs" / "quickstart.toml"), "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 2 and "not empty" in proc.stderr
    assert (out / "summary.json").read_text() == "{}"


@pytest.mark.parametrize(
    "text, expect",
    [
        ("rounds = '3'", ["rounds='3'", "valid integer"]),
        ("rounds = 3.0", ["rounds=3.0", "valid integer"]),
        ("[attack]\nenabled = 'yes'", ["attack.enabled='yes'", "valid boolean"]),
        ("[attack]\nenabled = 1", ["attack.enabled=1", "valid boolean"]),
        ("[clients]\nnum = true", ["clients.num=True", "valid integer"]),
        ("seed = 1e14", ["seed=100000000000000.0", "valid integer"]),
    ],
)
def test_types_are_strict(tmp_path, text, expect):
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, text))
    for fragment in expect:
        assert fragment in str(e.value), (fragment, str(e.value))


def test_an_int_is_taken_where_a_float_is_due(tmp_path):
    cfg = load_config(_write(tmp_path, "[clients]\nlr = 1\n[data]\nalpha = 2"), ["strategy.server_lr=2"])
    assert (cfg.clients.lr, cfg.data.alpha, cfg.strategy.server_lr) == (1.0, 2.0, 2.0)
    assert isinstance(cfg.clients.lr, float)
    cfg = load_config(None, ["rounds=3", "attack.enabled=false", "model.init=scratch", "clients.lr=1e-3"])
    assert (cfg.rounds, cfg.attack.enabled, cfg.model.init, cfg.clients.lr) == (3, False, "scratch", 1e-3)
    with pytest.raises(ConfigError, match="attack.enabled='yes'"):
        load_config(None, ["attack.enabled=yes"])


def test_seed_range_keeps_every_derived_seed_valid():
    from fedsim.runner import load

    with pytest.raises(ConfigError, match=r"seed: 100000000000000 is out of range; allowed: 0 ≤ seed < 2\*\*32"):
        load(None, ["seed=100000000000000", "strategy.name='flame'"])
    with pytest.raises(ConfigError, match="seed: -1 is out of range"):
        load_config(None, ["seed=-1"])
    cfg = load(None, [f"seed={2**32 - 1}", "strategy.name='flame'"])
    # the largest derived seed (strategies/robust_strategy.py, clients/attacks/byzantine.py)
    torch.Generator().manual_seed(cfg.seed * 1_000_003 + 10**6)


def test_impossible_dirichlet_split_fails_before_anything_starts():
    overrides = ["clients.num=50", "clients.per_round=10", "data.partition='dirichlet'",
                 "data.alpha=0.001", "data.train_size=200"]
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides, run_checks())
    for fragment in ("data.partition='dirichlet'", "data.alpha=0.001", "clients.num=50", "data.train_size=200"):
        assert fragment in str(e.value), (fragment, str(e.value))
    # a feasible skewed split passes, and is the one the clients draw (fedsim.app._partition)
    from fedsim.app import _partition

    cfg = load_config(None, ["clients.num=10", "data.partition='dirichlet'", "data.alpha=0.1", "data.train_size=200"])
    assert min(len(_partition(cfg.model_dump_json(), pid, 32)) for pid in range(10)) >= 2


def test_client_cpus_beyond_what_ray_may_use_is_refused(monkeypatch):
    from fedsim import ray_session, runner

    with pytest.raises(ConfigError, match=r"resources.client_cpus=4.0 exceeds the 2 CPUs Ray may use \(resources.total_cpus\)"):
        runner.load(None, ["resources.client_cpus=4", "resources.total_cpus=2"])
    monkeypatch.setattr(ray_session, "available_cpus", lambda: 2)
    with pytest.raises(ConfigError, match="client_cpus=3.0 exceeds the 2 CPUs.*all of this machine's"):
        runner.load(None, ["resources.client_cpus=3"])
    # total_cpus may exceed the cores (Ray counts logical CPUs)
    assert runner.load(None, ["resources.client_cpus=4", "resources.total_cpus=8"]).resources.client_cpus == 4.0


def _float_fields(model=Config, prefix=""):
    """Dotted names of every float field of the config model (``float`` or ``float | None``),
    found by walking the pydantic sections, so a field added later is covered too."""
    import typing

    from pydantic import BaseModel

    for name, info in model.model_fields.items():
        kinds = typing.get_args(info.annotation) or (info.annotation,)
        section = next((k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)), None)
        if section is not None:
            yield from _float_fields(section, f"{prefix}{name}.")
        elif float in kinds:
            yield f"{prefix}{name}"


FLOAT_FIELDS = sorted(_float_fields())


def test_the_walk_finds_the_float_fields_the_black_box_test_broke():
    for field in ("clients.lr", "clients.weight_decay", "strategy.server_lr", "model.pretrain_lr",
                  "defense.cleanclip.lr", "faults.round_timeout_s", "simclr.temperature", "data.alpha",
                  "attack.update.pgd_eps"):
        assert field in FLOAT_FIELDS, field


@pytest.mark.parametrize("field", FLOAT_FIELDS)
@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_every_float_field_refuses_non_finite_values_before_start(field, value):
    # inf used to pass validation: the config reaches the clients as JSON, where inf becomes
    # null, and every client failed to re-validate it after Ray had started.
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"{field}={value}"])
    assert f"{field}={value}" in str(e.value) and "finite" in str(e.value)


@pytest.mark.parametrize("override, key", [
    ("strategy.params={beta=inf}", "strategy.params.beta=inf"),
    ("attack.data.trigger.params={alpha=-inf}", "attack.data.trigger.params.alpha=-inf"),
    ("data.params={weights=[1.0, nan]}", "data.params.weights[1]=nan"),
])
def test_free_form_params_refuse_non_finite_values_by_their_full_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert key in str(e.value)


def test_finite_floats_still_pass():
    assert load_config(None, ["clients.lr=1e-3", "faults.round_timeout_s=1e9"]).clients.lr == 1e-3


# fedsim validate in one pass (issue #24 item 10): misspelt keys come with the closest field
# and do not hide the checks of the rest; an unknown name comes with the closest allowed one.

def test_a_misspelt_key_suggests_the_field_and_the_other_problems_are_reported_with_it(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('rouns = 3\n[strategy]\nname = "krum"\n[attack.data]\npoison_rat = 0.3\ntarget = "zebra"\n')
    with pytest.raises(ConfigError) as e:
        load_config(config, extra_checks=run_checks())
    problems = problems_of(e.value)
    assert "rouns: unknown key (value 3); check the spelling (did you mean 'rounds'?)" in problems
    assert "attack.data.poison_rat: unknown key (value 0.3); check the spelling (did you mean 'poison_rate'?)" in problems
    assert any(p.startswith("attack.data.target='zebra' is not a class") for p in problems)
    assert any("missing 1 required keyword-only argument: 'f'" in p for p in problems)  # krum's (mutmut renames it)
    assert len(problems) == 4


def test_no_suggestion_when_nothing_is_close_and_field_errors_are_not_hidden_by_the_rest(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(None, ["qqqq=1", "rounds=0"])
    problems = problems_of(e.value)
    assert "qqqq: unknown key (value 1); check the spelling" in problems  # no "did you mean"
    assert any(p.startswith("rounds=0:") for p in problems) and len(problems) == 2


def test_an_unknown_name_suggests_the_closest_allowed_one():
    from fedsim.config import did_you_mean, invalid

    assert did_you_mean("krumm", ["fedavg", "krum", "multi_krum"]) == " (did you mean 'krum'?)"
    assert did_you_mean("zzz", ["fedavg", "krum"]) == ""
    text = invalid(["strategy.name='krumm' is unknown; allowed: fedavg, krum, multi_krum"])
    assert text.endswith("allowed: fedavg, krum, multi_krum (did you mean 'krum'?)")
    assert invalid(["x='q' is unknown; allowed: a, b"]).endswith("allowed: a, b")
    from fedsim.runner import load  # the partition's name is the data family's (fedsim.app.check_names)

    with pytest.raises(ConfigError, match="data.partition='dirichlett' is unknown; allowed: iid, .*did you mean 'dirichlet'"):
        load(None, ["data.partition='dirichlett'"])


def test_a_config_that_names_another_rule_or_trigger_does_not_inherit_the_bases_params(tmp_path):
    base = tmp_path / "base.toml"
    base.write_text('[strategy]\nname = "krum"\nparams = { f = 2 }\nserver_lr = 0.5\n'
                    '[attack.data.trigger]\nname = "badnet"\nparams = { size = 4 }\n')
    child = tmp_path / "child.toml"
    child.write_text('extends = "base.toml"\n[strategy]\nname = "median"\n[attack.data.trigger]\nname = "blended"\n')
    cfg = load_config(child)
    assert (cfg.strategy.name, cfg.strategy.params, cfg.strategy.server_lr) == ("median", {}, 0.5)
    assert (cfg.attack.data.trigger.name, cfg.attack.data.trigger.params) == ("blended", {})
    # the same name keeps them; explicit params replace them whole
    child.write_text('extends = "base.toml"\n[strategy]\nname = "krum"\n[attack.data.trigger]\nparams = { size = 6 }\n')
    cfg = load_config(child)
    assert cfg.strategy.params == {"f": 2} and cfg.attack.data.trigger.params == {"size": 6}
