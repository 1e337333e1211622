"""A grid's axes (``fedsim.grid``): which value of an axis a run's config is labelled with, and
which pairs of axes conflict (``fedsim.sweep_run.plan`` refuses them)."""

from pathlib import Path

import pytest

from fedsim.config import ConfigError
from fedsim.grid import Axis, axis_conflicts, label_in
from fedsim.results import Run, labels_of
from fedsim.sweep_run import plan

# Three values of one axis; a config holding a = 1 and b = 2 matches all three. The most
# specific (most settings) is neither the first nor the last declared.
DEFENSE = Axis("defense", (
    ("plain", {"strategy.name": "fedavg"}),
    ("roclip", {"strategy.name": "fedavg", "clients.training": "roclip"}),
    ("clip", {"clients.training": "roclip"}),
))


@pytest.mark.parametrize("config, label", [
    ({"strategy.name": "fedavg", "clients.training": "roclip"}, "roclip"),  # all three match
    ({"strategy.name": "fedavg", "clients.training": "standard"}, "plain"),
    ({"strategy.name": "median", "clients.training": "roclip"}, "clip"),
    ({"strategy.name": "median", "clients.training": "standard"}, None),
    ({"strategy.name": "fedavg"}, "plain"),  # a key the config lacks matches nothing
])
def test_a_config_takes_the_label_of_the_most_specific_matching_value(config, label):
    assert label_in(DEFENSE, config) == label


def test_the_most_specific_value_wins_whatever_the_declaration_order():
    config = {"strategy.name": "fedavg", "clients.training": "roclip", "seed": 3}
    for order in ((0, 1, 2), (1, 0, 2), (2, 0, 1), (0, 2, 1), (2, 1, 0)):
        axis = Axis("defense", tuple(DEFENSE.values[i] for i in order))
        assert label_in(axis, config) == "roclip", order


def test_a_run_without_recorded_labels_is_labelled_from_its_config():
    run = Run(Path("r"), {"strategy.name": "fedavg", "clients.training": "roclip"}, {}, [], labels=None)
    assert labels_of(run, [DEFENSE]) == ("roclip",)


# ------------------------------------------------------------------ conflicting axes
def _axis(name, *keys):
    return Axis(name, (("a", {k: 1 for k in keys}), ("b", {k: 2 for k in keys})))


@pytest.mark.parametrize("first, second, shared", [
    (_axis("strategy", "strategy"), _axis("strategy.name", "strategy.name"), "strategy"),
    (_axis("strategy.name", "strategy.name"), _axis("strategy", "strategy"), "strategy"),
    (_axis("attack", "attack.data.enabled", "attack.data"), _axis("target", "attack.data.target"), "attack.data"),
    (_axis("defense", "clients.lr"), _axis("lr", "clients.lr"), "clients.lr"),
])
def test_an_axis_setting_a_key_inside_anothers_conflicts_either_way_round(first, second, shared):
    problems = axis_conflicts([first, second])
    assert problems == [f"sweep: axes {first.name!r} and {second.name!r} both set {shared!r}"]


def test_keys_that_only_share_a_prefix_of_their_name_do_not_conflict():
    # "clients.lr_schedule" is not inside "clients.lr", nor "strategy.name2" inside "strategy.name"
    lr, schedule = _axis("lr", "clients.lr"), _axis("schedule", "clients.lr_schedule")
    assert axis_conflicts([lr, schedule]) == [] and axis_conflicts([schedule, lr]) == []
    x, y = _axis("x", "strategy.name"), _axis("y", "strategy.name2")
    assert axis_conflicts([x, y]) == [] and axis_conflicts([y, x]) == []
    # one axis may set a key and a key inside it (it is applied as a whole)
    assert axis_conflicts([_axis("attack", "attack.data", "attack.data.enabled")]) == []


def test_a_sweep_over_a_table_and_a_key_inside_it_is_refused(tmp_path):
    config = tmp_path / "grid.toml"
    config.write_text('[model]\ninit = "scratch"\n[sweep]\n"strategy.name" = ["fedavg", "median"]\n'
                      '[sweep.whole.krum]\n"strategy" = { name = "krum", params = { f = 1 } }\n')
    with pytest.raises(ConfigError, match="axes 'strategy.name' and 'whole' both set 'strategy'"):
        plan(config)


# --only: a subset of a declared grid, cells named as in the full grid.
_GRID = ('[model]\ninit = "scratch"\n[sweep]\nseeds = 2\n"strategy.name" = ["fedavg", "median", "geometric_median"]\n'
         '[sweep.attack.none]\n"attack.enabled" = false\n[sweep.attack.lie]\n"attack.byzantine.name" = "lie"\n'
         '"attack.data.enabled" = false\n')


def test_only_keeps_the_named_values_in_the_axis_order_and_the_full_grids_cell_names(tmp_path):
    config = tmp_path / "grid.toml"
    config.write_text(_GRID)
    full = [cell.name for cell, _ in plan(config).cells]
    assert len(full) == 12
    some = [cell.name for cell, _ in plan(config, only=["strategy.name=geometric_median,fedavg"]).cells]
    # the axis's declaration order, not the option's; seeds innermost, as in the full grid
    assert some == ["fedavg__none__seed0", "fedavg__none__seed1", "fedavg__lie__seed0", "fedavg__lie__seed1",
                    "geometric_median__none__seed0", "geometric_median__none__seed1", "geometric_median__lie__seed0",
                    "geometric_median__lie__seed1"]
    assert set(some) <= set(full)
    both = [cell.name for cell, _ in plan(config, only=["attack=lie", "strategy.name=median"]).cells]
    assert both == ["median__lie__seed0", "median__lie__seed1"]


@pytest.mark.parametrize("item, message", [
    ("defense=fedavg", "no axis named 'defense'; the axes are \\['attack', 'strategy.name'\\]"),
    ("attack=badnet", "axis 'attack' has no value 'badnet'; its values are \\['none', 'lie'\\]"),
    ("attack=", "expected axis=label"),
    ("attack", "expected axis=label"),
])
def test_only_with_an_unknown_axis_or_value_is_refused_naming_what_exists(tmp_path, item, message):
    config = tmp_path / "grid.toml"
    config.write_text(_GRID)
    with pytest.raises(ConfigError, match=message):
        plan(config, only=[item])


def test_the_only_option_reaches_the_plan_from_the_command_line(tmp_path, capsys):
    from fedsim.cli import main

    config = tmp_path / "grid.toml"
    config.write_text(_GRID)
    assert main(["sweep", str(config), "--only", "attack=nothing", "--out", str(tmp_path / "out")]) == 2
    assert "axis 'attack' has no value 'nothing'" in capsys.readouterr().err
    assert not (tmp_path / "out" / "fedavg__none__seed0").exists()


# Axes inferred from separate runs (fedsim report runs/a runs/b, issue #24): a key one run
# lacks is "unset", not a label no run matches; paths are labelled by their file name; two
# distinct values never share a label.

def test_an_unset_key_is_its_own_value_and_every_run_keeps_its_label():
    from fedsim.grid import infer_axes

    configs = [{"model.pretrained": "/tmp/abc/warm_full.pt", "seed": 0}, {"seed": 0}]
    [axis] = infer_axes(configs)
    assert axis.values == (("warm_full.pt", {"model.pretrained": "/tmp/abc/warm_full.pt"}),
                           ("unset", {"model.pretrained": None}))
    assert [label_in(axis, c) for c in configs] == ["warm_full.pt", "unset"]
    # a declared value never matches a config lacking its key
    assert label_in(Axis("x", (("a", {"k": 1}),)), {}) is None


def test_values_whose_labels_would_collide_get_distinct_labels():
    from fedsim.grid import infer_axes

    configs = [{"k": "a b"}, {"k": "a/b"}, {"k": "c/b"}, {"k": "x"}, {"k": "a b"}]
    [axis] = infer_axes(configs)
    labels = [label for label, _ in axis.values]
    assert labels == ["a-b", "a-b~2", "c-b", "x"]
    assert [label_in(axis, c) for c in configs] == ["a-b", "a-b~2", "c-b", "x", "a-b"]


def test_report_of_two_separate_runs_keeps_both(tmp_path):
    import json

    from fedsim.results import write_results

    for name, extra, ca in (("a", '[model]\npretrained = "/x/y/warm_full.pt"\n', 0.7), ("b", "", 0.6)):
        run = tmp_path / name
        run.mkdir()
        (run / "config.toml").write_text(f'name = "{name}"\nseed = 0\n' + extra)
        (run / "summary.json").write_text(json.dumps({"status": "completed", "clean_accuracy": ca,
                                                      "attack_success_rate": 0.1}))
    write_results([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    text = (tmp_path / "out" / "results.md").read_text()
    assert "warm_full.pt" in text and "unset" in text and "0.700" in text and "0.600" in text
    assert "?" not in text.split("## Power check")[0]


# Two --only sweeps of one grid into one folder: sweep.json keeps both subsets' values.
def test_a_second_only_sweep_into_a_folder_adds_its_values_to_the_recorded_grid(tmp_path):
    import json

    from fedsim.grid import union_axes
    from fedsim.sweep_run import grid_record

    config, out = tmp_path / "grid.toml", tmp_path / "out"
    config.write_text(_GRID)
    out.mkdir()
    first = plan(config, only=["attack=none", "strategy.name=median,fedavg"])
    (out / "sweep.json").write_text(json.dumps(grid_record(out, config, [], first)))
    second = plan(config, only=["attack=lie"])
    record = grid_record(out, config, [], second)
    axes = [Axis.from_json(a) for a in record["axes"]]
    assert [[label for label, _ in a.values] for a in axes] == [
        ["fedavg", "median", "geometric_median"], ["none", "lie"]]
    assert record["cells"][:4] == ["fedavg__none__seed0", "fedavg__none__seed1", "median__none__seed0",
                                   "median__none__seed1"]
    assert len(record["cells"]) == 4 + 6 and record["seeds"] == [0, 1]
    # a run of the first sweep keeps its label
    run = Run(Path("r"), {"strategy.name": "median", "attack.enabled": False}, {}, [], labels=None)
    assert labels_of(run, axes) == ("median", "none")
    # another config, other overrides or other axes: the new grid replaces the record
    assert [a["name"] for a in grid_record(out, config, ["rounds=2"], second)["axes"]] == ["strategy.name", "attack"]
    assert [v["label"] for v in grid_record(out, config, ["rounds=2"], second)["axes"][1]["values"]] == ["lie"]
    assert union_axes([Axis("a", (("x", {"k": 1}),))], [Axis("b", (("x", {"k": 1}),))]) is None
    # a label in both takes the new settings
    assert union_axes([Axis("a", (("x", {"k": 1}), ("y", {"k": 2})))], [Axis("a", (("x", {"k": 3}),))]) == [
        Axis("a", (("x", {"k": 3}), ("y", {"k": 2})))]
    (out / "sweep.json").write_text("not json")
    assert [v["label"] for v in grid_record(out, config, [], second)["axes"][1]["values"]] == ["lie"]
