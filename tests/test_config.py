"""Configs are validated before anything starts; every error names field, value and what is
allowed; the CLI exits 2 without starting Ray."""

import subprocess
import sys
from pathlib import Path

import pytest

from fedsim.config import Config, ConfigError, load_config, parse_override

ROOT = Path(__file__).resolve().parent.parent


def _write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_defaults_and_shipped_configs_validate():
    from fedsim.runner import load

    assert load_config(None).clients.num == 10
    for path in sorted((ROOT / "configs").rglob("*.toml")):
        cfg = load(path)
        assert cfg.rounds >= 1, path


@pytest.mark.parametrize(
    "text, expect",
    [
        ("roundz = 3", ["roundz", "unknown key"]),
        ("rounds = 'ten'", ["rounds", "'ten'", "integer"]),
        ("rounds = 0", ["rounds", "0", "greater than or equal to 1"]),
        ("[clients]\nlr = -1.0", ["clients.lr", "-1.0", "greater than 0"]),
        ("[data]\npartition = 'zipf'", ["data.partition", "'zipf'", "'iid' or 'dirichlet'"]),
        ("[clients]\nnum = 5\nper_round = 6", ["per_round=6", "clients.num=5"]),
        ("[attack]\nmalicious = [0, 12]", ["attack.malicious", "12", "clients.num=10"]),
        ("[attack.data]\ntarget = 'dragon'", ["dragon", "star"]),
        ("[model]\nname = 'no-such-net'", ["model.name", "no-such-net", "fedsim-tiny-resnet"]),
        ("rounds = [", ["not valid TOML"]),
    ],
)
def test_config_errors_name_field_value_and_allowed(tmp_path, text, expect):
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, text))
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
