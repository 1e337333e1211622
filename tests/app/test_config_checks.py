"""The config checks the app layer owns (fedsim.app.build.config_checks): the families' names
first — every problem at once, each naming the field, the value and what is allowed — and the
other checks only once those names exist; the objective's limits read from its OBJECTIVES entry."""

from __future__ import annotations

import pytest

from fedsim.app.build import check_objective, config_checks
from fedsim.app.data_plan import check_names
from fedsim.config import ConfigError, load_config, problems_of
from fedsim.data import DATASETS, GENERATED, check_source
from fedsim.models import TINY_MODELS, check_name
from fedsim.objectives import OBJECTIVES, Objective


def test_check_source_knows_generated_data_and_the_registered_sources():
    check_source("shapes", None, {})  # generated: no path
    check_source("csv", "pairs.csv", {"image_column": "x"})  # a source's params are its opener's to check
    with pytest.raises(ValueError, match=r"^name='shapes' is generated: it takes no path and no params$"):
        check_source("shapes", "x", {})
    with pytest.raises(ValueError, match="name='shapes' is generated"):
        check_source("shapes", None, {"a": 1})
    with pytest.raises(ValueError, match=r"^name='csv' needs path = the dataset's file or folder$"):
        check_source("csv", None, {})
    allowed = ", ".join([*GENERATED, *DATASETS])
    with pytest.raises(ValueError, match=rf"^name='parquet' is unknown; allowed: {allowed}$"):
        check_source("parquet", "x", {})
    # where generated data is not an option ([eval], [model.warm]: None means it), it is not offered
    with pytest.raises(ValueError, match=rf"^name='shapes' is unknown; allowed: {', '.join(DATASETS)}$"):
        check_source("shapes", None, {}, generated=False)


def test_check_name_takes_the_tiny_models_and_open_clip_architectures():
    for name in (*TINY_MODELS, "RN50", "ViT-B-32"):
        check_name(name)
    with pytest.raises(ValueError, match=rf"model.name='RN5' is unknown; allowed: {', '.join(TINY_MODELS)} or any"):
        check_name("RN5")


def test_every_unknown_name_is_reported_at_once_with_its_field():
    cfg = load_config(None, ["data.name='parquet'", "data.path='x'", "eval.name='nope'", "eval.path='y'",
                             "model.warm.name='nah'", "model.warm.path='z'", "data.partition='dirichlett'",
                             "model.name='RN5'"])
    with pytest.raises(ConfigError) as e:
        check_names(cfg)
    problems = problems_of(e.value)
    assert [p.split("=")[0] for p in problems] == ["data.name", "eval.name", "model.warm.name", "data.partition",
                                                  "model.name"]
    assert "data.partition='dirichlett' is unknown; allowed: iid, dirichlet, pathological, quantity_skew " \
           "(did you mean 'dirichlet'?)" in problems
    check_names(load_config(None))  # the defaults exist


def test_generated_data_is_a_training_source_only_and_takes_no_params():
    # [eval] and [model.warm] read a source (None means the generated one); data.name may be it
    for field in ("eval", "model.warm"):
        with pytest.raises(ConfigError) as e:
            check_names(load_config(None, [f"{field}.name='shapes'"]))
        assert problems_of(e.value) == [f"{field}.name='shapes' is unknown; allowed: {', '.join(DATASETS)}"]
    check_names(load_config(None, ["data.name='shapes'"]))
    with pytest.raises(ConfigError) as e:
        check_names(load_config(None, ["data.params={ a = 1 }"]))
    assert problems_of(e.value) == ["data.name='shapes' is generated: it takes no path and no params"]


def test_the_other_checks_wait_for_the_names():
    # an unknown model would make the attack's check fail on its image size, less clearly: it waits
    with pytest.raises(ConfigError) as e:
        load_config(None, ["model.name='RN5'", "attack.data.trigger.name='nope'"], config_checks())
    assert problems_of(e.value) == [
        f"model.name='RN5' is unknown; allowed: {', '.join(TINY_MODELS)} or any open_clip architecture name"]
    # once the names exist, the attack's problem is found
    with pytest.raises(ConfigError, match="attack.data.trigger: trigger 'nope' is unknown"):
        load_config(None, ["attack.data.trigger.name='nope'"], config_checks())
    assert [c.__name__ for c in config_checks()] == [
        "check_names", "check_objective", "check_data", "check_model", "check_training", "check_strategy",
        "check_attack"]


def test_an_objective_refuses_another_objectives_section(monkeypatch):
    # a third objective that owns a section: [simclr] and its own are each refused under the others
    monkeypatch.setitem(OBJECTIVES, "toy", Objective("toy", section="simclr"))
    cfg = load_config(None, ["simclr.temperature=0.2"])
    with pytest.raises(ConfigError, match=r"simclr=\{.*'temperature': 0.2.*\} applies to objective = 'simclr' only, "
                                          r"but objective = 'clip'; set objective = \"simclr\" or remove \[simclr\]"):
        check_objective(cfg)
    check_objective(load_config(None))  # every section at its defaults: nothing to refuse


def test_one_pass_reports_an_unknown_name_beside_a_wrong_value_and_a_misspelt_key():
    from fedsim.runner import load

    with pytest.raises(ConfigError) as e:
        load(None, ["data.name='cifar'", "rounds=0", "model.name='RN5'", "clients.lrr=1.0"])
    problems = problems_of(e.value)
    assert problems[:2] == ["rounds=0: Input should be greater than or equal to 1",
                            "clients.lrr: unknown key (value 1.0); check the spelling (did you mean 'lr'?)"]
    assert problems[2].startswith("data.name='cifar' is unknown; allowed: shapes, cifar10") and \
        problems[2].endswith("(did you mean 'cifar10'?)")
    assert problems[3].startswith("model.name='RN5' is unknown") and len(problems) == 4
    # the checks that read several fields wait for valid fields: a wrong target is not reported yet
    with pytest.raises(ConfigError) as e:
        load(None, ["rounds=0", "attack.data.target='zebra'"])
    assert problems_of(e.value) == ["rounds=0: Input should be greater than or equal to 1"]
