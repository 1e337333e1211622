"""The Python API (``fedsim.api``, re-exported by ``fedsim``): overrides as Python values, a
real run returning its summary and rounds as a DataFrame, and run folders read back as
DataFrames."""

import json
import subprocess
import sys
import tomllib

import pandas as pd
import pytest

import fedsim
from fedsim.api import overrides_of
from fedsim.config import ConfigError

TINY = {"rounds": 1, "data.train_size": 200, "data.test_size": 100, "model.init": "scratch",
        "clients.num": 2, "clients.per_round": 2, "attack.malicious": [0], "resources.engine": "inprocess"}


def test_import_fedsim_loads_neither_torch_nor_flower_and_names_the_api():
    code = ("import sys, fedsim; print(fedsim.__version__ != ''); "
            "print(any(m in sys.modules for m in ('torch', 'flwr', 'pandas'))); print(sorted(fedsim.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "True" and out[1] == "False"
    assert out[2] == str(sorted(["__version__", "make_config", "run", "sweep", "run_sweep", "load", "load_run",
                                 "runs", "rounds", "Result"]))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        fedsim.nothing  # noqa: B018


def test_overrides_are_written_as_toml_values_the_set_option_reads():
    assert overrides_of({"rounds": 3, "clients.lr": 1e-3, "model.init": "scratch", "attack.enabled": False,
                         "attack.malicious": [0, 1], "strategy.params": {"f": 2}}) == [
        "rounds=3", "clients.lr=0.001", 'model.init="scratch"', "attack.enabled=false",
        "attack.malicious=[0, 1]", "strategy.params={ f = 2 }"]
    assert overrides_of({"x.params": {"b c": [1.5, "x"], "d": {"e": True}}}) == [
        'x.params={ "b c" = [1.5, "x"], d = { e = true } }']
    assert overrides_of(["rounds=3"]) == ["rounds=3"] and overrides_of(None) == []
    with pytest.raises(TypeError, match="not one string"):
        overrides_of("rounds=3")
    with pytest.raises(TypeError, match="override 'rounds'=None: not a TOML value"):
        overrides_of({"rounds": None})
    with pytest.raises(TypeError, match="expected 'key=value' strings"):
        overrides_of([("rounds", 3)])


def test_keyword_overrides_set_sections_key_by_key_and_params_whole():
    from fedsim.api import _merged

    assert _merged({"rounds": 2}, {"strategy": {"name": "krum", "params": {"f": 2}}, "clients.lr": 1e-3}) == [
        "rounds=2", 'strategy.name="krum"', "strategy.params={ f = 2 }", "clients.lr=0.001"]
    # a section given as a dict keeps the config's other keys of that section
    cfg = fedsim.make_config(None, {"strategy.server_lr": 0.5}, strategy={"name": "krum", "params": {"f": 2}})
    assert (cfg.strategy.name, cfg.strategy.params, cfg.strategy.server_lr) == ("krum", {"f": 2}, 0.5)
    cfg = fedsim.make_config(None, **{"attack.data.poison_rate": 0.25})
    assert cfg.attack.data.poison_rate == 0.25


def test_fedsim_sweep_is_the_api_function_also_once_the_sweep_command_module_is_imported():
    import fedsim.api
    import fedsim.sweep_run  # noqa: F401 (what `fedsim sweep` runs)

    assert fedsim.sweep is fedsim.api.sweep and fedsim.run_sweep is fedsim.api.sweep


def test_make_config_applies_python_overrides_and_names_every_problem():
    cfg = fedsim.make_config(None, {"rounds": 4, "attack.malicious": [0, 1, 2], "strategy.params": {"f": 1},
                                    "strategy.name": "krum"})
    assert cfg.rounds == 4 and cfg.malicious == [0, 1, 2] and cfg.strategy.params == {"f": 1}
    with pytest.raises(ConfigError) as e:
        fedsim.make_config(None, {"rounds": 0, "clients.lr": -1.0})
    assert "rounds" in str(e.value) and "clients.lr" in str(e.value)


def test_a_run_from_python_returns_its_summary_and_rounds_and_reads_back_the_same(tmp_path):
    result = fedsim.run(fedsim.make_config(None, TINY), out=tmp_path / "a", quiet=True, name="api-run")
    assert result.ok and result.path == tmp_path / "a"
    assert result.summary["name"] == "api-run" and result.config.rounds == 1
    frame = result.rounds
    assert isinstance(frame, pd.DataFrame) and list(frame["round"]) == [1]
    assert frame.loc[0, "clean_accuracy"] == pytest.approx(result.summary["clean_accuracy"])
    assert "retrieval.i2t_r1" in frame.columns or any(c.startswith("retrieval.") for c in frame.columns)
    again = fedsim.load(tmp_path / "a")
    assert again.summary == result.summary and "status='completed'" in repr(again)
    assert list(fedsim.load(tmp_path)["final_ca"]) == [result.summary["clean_accuracy"]]  # a folder of runs
    # the same config as a file, with overrides on top
    config = tmp_path / "c.toml"
    config.write_text('name = "from-file"\n')
    other = fedsim.run(config, out=tmp_path / "b", overrides=TINY, quiet=True)
    assert other.summary["name"] == "from-file"
    assert tomllib.loads((tmp_path / "b" / "config.toml").read_text())["rounds"] == 1
    # same config and seed on the same machine: the same numbers
    assert other.summary["clean_accuracy"] == result.summary["clean_accuracy"]


def test_load_run_of_a_folder_without_a_summary_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no summary.json"):
        fedsim.load_run(tmp_path)


def _fake_run(folder, name, seed, lr, ca, asr, rounds=2):
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text(f'name = "{name}"\nseed = {seed}\n[clients]\nlr = {lr}\n')
    (folder / "summary.json").write_text(json.dumps({
        "status": "completed", "clean_accuracy": ca, "attack_success_rate": asr, "max_attack_success_rate": asr,
        "initial_clean_accuracy": 0.5, "initial_attack_success_rate": 0.1, "wall_s": 1.0}))
    (folder / "rounds.jsonl").write_text("".join(
        json.dumps({"round": r, "clean_accuracy": ca - 0.01 * (rounds - r), "retrieval": {"i2t_r1": 0.2}}) + "\n"
        for r in range(1, rounds + 1)))


def test_runs_and_rounds_read_folders_as_dataframes(tmp_path):
    _fake_run(tmp_path / "lr1__seed0", "x", 0, 0.001, 0.7, 0.9)
    _fake_run(tmp_path / "lr3__seed0", "x", 0, 0.003, 0.6, 0.2)
    _fake_run(tmp_path / "lr3__seed1", "x", 1, 0.003, 0.65, 0.3, rounds=3)
    table = fedsim.runs(tmp_path)
    assert list(table["run_dir"].map(lambda p: p.rsplit("/", 1)[-1])) == ["lr1__seed0", "lr3__seed0", "lr3__seed1"]
    assert list(table["final_ca"]) == [0.7, 0.6, 0.65] and list(table["final_asr"]) == [0.9, 0.2, 0.3]
    assert list(table["clients.lr"]) == [0.001, 0.003, 0.003] and list(table["seed"]) == [0, 0, 1]
    assert set(table["initial_ca"]) == {0.5}
    per_round = fedsim.rounds(tmp_path)
    assert len(per_round) == 2 + 2 + 3
    assert list(per_round.columns[:3]) == ["run", "seed", "round"]
    last = per_round[per_round["run"] == "lr3__seed1"]
    assert list(last["round"]) == [1, 2, 3] and list(last["seed"]) == [1, 1, 1]
    assert list(last["clean_accuracy"]) == pytest.approx([0.63, 0.64, 0.65])
    assert "retrieval.i2t_r1" in per_round.columns
    with pytest.raises(FileNotFoundError):
        fedsim.runs(tmp_path / "nothing")
    with pytest.raises(TypeError):
        fedsim.rounds()
