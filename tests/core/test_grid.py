"""fedsim.grid: labels of values, axes declared in a ``[sweep]`` table or by ``--grid`` (every
problem named, exact messages), the cells they expand to, flat configs, and the axes recovered
from finished runs' configs; expected values written out by hand."""

import pytest

from fedsim.config import ConfigError
from fedsim.grid import (Axis, Cell, _common_prefix, axes_of, axis_conflicts, axis_of, axis_option, expand,
                         flatten, infer_axes, label_in, label_of, merge_axes)

SEED_HINT = "; give the number of seeds instead: seeds = K (or --seeds K)"


# ---- labels ----------------------------------------------------------------------------------
@pytest.mark.parametrize("value, label", [
    ("median", "median"), (0.5, "0.5"), (3, "3"), (True, "true"), (False, "false"),
    ([0, 1], "0-1"), ((2, 3, 4), "2-3-4"), ({"f": 2}, "f-2"), ({"f": 2, "m": True}, "f-2_m-true"),
    ({"p": [1, 2]}, "p-1-2"), ([True, [1, 2]], "true-1-2"),
    ("a b/c", "a-b-c"), ("a  //b", "a-b"), ("A.z_+-9", "A.z_+-9"), ("é", "-"),
    ("", "empty"), ([], "empty"), ({}, "empty"), (None, "None"),
])
def test_label_of_is_a_short_file_name_safe_text(value, label):
    assert label_of(value) == label


# ---- one axis from its declaration -----------------------------------------------------------
def test_a_list_declares_an_axis_over_its_key_labelled_by_its_values():
    axis, problems = axis_of("strategy.name", ["fedavg", "median", 0.5, [1, 2]], "sweep.x")
    assert problems == []
    assert axis == Axis("strategy.name", (("fedavg", {"strategy.name": "fedavg"}),
                                          ("median", {"strategy.name": "median"}),
                                          ("0.5", {"strategy.name": 0.5}), ("1-2", {"strategy.name": [1, 2]})))
    assert axis.keys == ["strategy.name"]


def test_a_table_declares_an_axis_of_labelled_settings_copied():
    spec = {"patch": {"attack.data.enabled": True, "attack.byzantine.name": "none"},
            "lie": {"attack.data.enabled": False, "attack.byzantine.name": "lie", "attack.extra": 1}}
    axis, problems = axis_of("attack", spec, "sweep.attack")
    assert problems == []
    assert axis == Axis("attack", (("patch", {"attack.data.enabled": True, "attack.byzantine.name": "none"}),
                                   ("lie", {"attack.data.enabled": False, "attack.byzantine.name": "lie",
                                            "attack.extra": 1})))
    assert axis.keys == ["attack.data.enabled", "attack.byzantine.name", "attack.extra"]
    spec["patch"]["attack.data.enabled"] = "changed later"
    assert axis.values[0][1]["attack.data.enabled"] is True


@pytest.mark.parametrize("key, problem", [
    ("", "w: '' is not a dotted config key"),
    ("a..b", "w: 'a..b' is not a dotted config key"),
    ("a.", "w: 'a.' is not a dotted config key"),
    (".a", "w: '.a' is not a dotted config key"),
    ("seed", "w: 'seed' cannot be swept" + SEED_HINT),
    ("name", "w: 'name' cannot be swept"),
])
def test_a_list_over_a_key_that_cannot_be_swept_is_refused(key, problem):
    assert axis_of(key, [1, 2], "w") == (None, [problem])


@pytest.mark.parametrize("key", ["a", "a.b", "seeds.x", "x.seed", "named"])
def test_keys_that_can_be_swept(key):
    axis, problems = axis_of(key, [1], "w")
    assert problems == [] and axis == Axis(key, (("1", {key: 1}),))


def test_every_problem_of_a_table_is_named():
    spec = {"ok": {"a.b": 1}, "num": 3, "empty": {}, "bad": {"seed": 1, "x..y": 2, "name": 3},
            "a b": {"c": 1}, "u/v": {"c": 2}}
    assert axis_of("ax", spec, "sweep.ax") == (None, [
        "sweep.ax.num: expected a table of dotted config keys → values, got 3",
        "sweep.ax.empty: expected a table of dotted config keys → values, got {}",
        "sweep.ax.bad: 'seed' cannot be swept" + SEED_HINT,
        "sweep.ax.bad: 'x..y' is not a dotted config key",
        "sweep.ax.bad: 'name' cannot be swept",
        "sweep.ax.a b: not a file-name-safe label; use letters, digits, . _ + -",
        "sweep.ax.u/v: not a file-name-safe label; use letters, digits, . _ + -",
    ])


def test_neither_a_list_nor_a_table_is_refused():
    assert axis_of("x", 3, "w") == (None, [
        "w=3: expected a list of values, or a table of labelled settings ([sweep.<axis>.<label>] with "
        "\"dotted.key\" = value lines)"])
    assert axis_of("x", "abc", "w")[1][0].startswith("w='abc': expected a list of values")


def test_an_axis_without_values_is_refused():
    assert axis_of("x", [], "w") == (None, ["w: no values"])
    assert axis_of("x", {}, "w") == (None, ["w: no values"])


def test_values_with_the_same_label_are_refused_naming_each_label_once():
    assert axis_of("x", ["a b", "a-b", 1, "1", 2, 1], "w") == (
        None, ["w: values ['1', 'a-b'] give the same label twice (cell names would clash)"])
    assert axis_of("x", ["a", "b"], "w")[1] == []


# ---- a [sweep] table -------------------------------------------------------------------------
def test_a_sweep_table_gives_its_axes_in_order_and_its_seed_count():
    table = {"strategy.name": ["fedavg", "median"], "seeds": 3,
             "attack": {"patch": {"attack.data.enabled": True}}}
    axes, seeds, problems = axes_of(table)
    assert (seeds, problems) == (3, [])
    assert axes == [Axis("strategy.name", (("fedavg", {"strategy.name": "fedavg"}),
                                           ("median", {"strategy.name": "median"}))),
                    Axis("attack", (("patch", {"attack.data.enabled": True}),))]
    assert axes_of({"x": [1]}) == ([Axis("x", (("1", {"x": 1}),))], None, [])
    assert axes_of({"seeds": 1}) == ([], 1, [])


@pytest.mark.parametrize("seeds", [0, -1, True, False, 2.0, "2"])
def test_a_seed_count_must_be_a_positive_integer(seeds):
    axes, count, problems = axes_of({"seeds": seeds, "x": [1]})
    assert count is None
    assert problems == [f"sweep.seeds={seeds!r}: expected an integer ≥ 1"]
    assert axes == [Axis("x", (("1", {"x": 1}),))]


def test_a_sweep_tables_problems_name_the_axis_as_written_there():
    axes, seeds, problems = axes_of({"strategy.name": [], "attack": {}, "rounds": [1, 2], "seeds": 0}, "grid")
    assert problems == ["grid.seeds=0: expected an integer ≥ 1", 'grid."strategy.name": no values',
                        "grid.attack: no values"]
    assert (seeds, [a.name for a in axes]) == (None, ["rounds"])


# ---- --grid ----------------------------------------------------------------------------------
def test_grid_option_declares_an_axis_over_a_dotted_key():
    assert axis_option('strategy.name=["fedavg", "median"]') == Axis(
        "strategy.name", (("fedavg", {"strategy.name": "fedavg"}), ("median", {"strategy.name": "median"})))
    assert axis_option("clients.lr=[0.1, 0.01]") == Axis(
        "clients.lr", (("0.1", {"clients.lr": 0.1}), ("0.01", {"clients.lr": 0.01})))


def test_grid_option_refuses_a_single_value_and_a_bad_axis():
    with pytest.raises(ConfigError) as e:
        axis_option("strategy.name=median")
    assert str(e.value) == ("--grid 'strategy.name=median': expected key=[value, ...], e.g. "
                            "--grid 'strategy.name=[\"fedavg\", \"median\"]'")
    with pytest.raises(ConfigError) as e:
        axis_option("seed=[1, 2]")
    assert str(e.value) == "--grid 'seed=[1, 2]': 'seed' cannot be swept" + SEED_HINT
    with pytest.raises(ConfigError) as e:
        axis_option("x=[1, 1]")
    assert str(e.value) == "--grid 'x=[1, 1]': values ['1'] give the same label twice (cell names would clash)"


def test_grid_options_replace_declared_axes_of_the_same_name_in_place_and_append_new_ones():
    a, b, c = Axis("a", (("1", {"a": 1}),)), Axis("b", (("1", {"b": 1}),)), Axis("c", (("1", {"c": 1}),))
    b2, d = Axis("b", (("2", {"b": 2}),)), Axis("d", (("1", {"d": 1}),))
    assert merge_axes([a, b, c], [d, b2]) == [a, b2, c, d]
    assert merge_axes([a], []) == [a]
    assert merge_axes([], [d, b2]) == [d, b2]


# ---- conflicts -------------------------------------------------------------------------------
def _axis(name, *keys):
    return Axis(name, (("a", {k: 1 for k in keys}), ("b", {k: 2 for k in keys})))


def test_every_conflict_is_named_with_the_shorter_key():
    axes = [_axis("one", "x.y", "p"), _axis("two", "x.y.z", "q"), _axis("three", "x", "p")]
    assert axis_conflicts(axes) == [
        "sweep: axes 'one' and 'two' both set 'x.y'",
        "sweep: axes 'one' and 'three' both set 'x'",
        "sweep: axes 'two' and 'three' both set 'x'",
        "sweep: axes 'one' and 'three' both set 'p'",
    ]
    assert axis_conflicts([_axis("one", "x", "x.y")]) == []
    assert axis_conflicts([_axis("one", "x"), _axis("two", "y"), _axis("three", "xy", "x_y")]) == []


# ---- cells -----------------------------------------------------------------------------------
def test_expand_crosses_the_axes_first_slowest_with_the_seeds_innermost():
    rule = Axis("rule", (("fedavg", {"strategy.name": "fedavg"}), ("median", {"strategy.name": "median"})))
    attack = Axis("attack", (("patch", {"attack.data.enabled": True, "attack.byzantine.name": "none"}),
                             ("lie", {"attack.data.enabled": False, "attack.byzantine.name": "lie"})))
    cells = expand([rule, attack], [7, 8])
    assert [c.name for c in cells] == [
        "fedavg__patch__seed7", "fedavg__patch__seed8", "fedavg__lie__seed7", "fedavg__lie__seed8",
        "median__patch__seed7", "median__patch__seed8", "median__lie__seed7", "median__lie__seed8"]
    assert cells[2] == Cell("fedavg__lie__seed7", {"rule": "fedavg", "attack": "lie"}, 7,
                            {"strategy.name": "fedavg", "attack.data.enabled": False,
                             "attack.byzantine.name": "lie", "seed": 7})
    assert expand([], [0, 1]) == [Cell("seed0", {}, 0, {"seed": 0}), Cell("seed1", {}, 1, {"seed": 1})]
    assert expand([rule], []) == []


# ---- flat configs ----------------------------------------------------------------------------
def test_flatten_gives_dotted_keys_and_keeps_params_whole():
    table = {"seed": 1, "strategy": {"name": "krum", "params": {"f": 2, "m": {"x": 1}}},
             "attack": {"data": {"enabled": True, "trigger": {"name": "patch", "params": {}}}, "malicious": [0]}}
    assert flatten(table) == {
        "seed": 1, "strategy.name": "krum", "strategy.params": {"f": 2, "m": {"x": 1}},
        "attack.data.enabled": True, "attack.data.trigger.name": "patch", "attack.data.trigger.params": {},
        "attack.malicious": [0]}
    assert flatten({"a": {"b": 1}}, "top.") == {"top.a.b": 1}
    assert flatten({"params": {"a": 1}}) == {"params": {"a": 1}}
    assert flatten({}) == {}


# ---- a config's label ------------------------------------------------------------------------
def test_of_equally_specific_values_the_first_declared_labels_the_config():
    config = {"x": 1, "y": 2}
    assert label_in(Axis("a", (("first", {"x": 1}), ("second", {"y": 2}))), config) == "first"
    assert label_in(Axis("a", (("second", {"y": 2}), ("first", {"x": 1}))), config) == "second"
    assert label_in(Axis("a", (("x", {"x": 2}), ("y", {"y": 3}))), config) is None


def test_a_value_matches_only_a_config_holding_the_key_with_that_value():
    axis = Axis("a", (("none", {"x": None}),))
    assert label_in(axis, {"x": None}) == "none"
    # a key the config lacks is unset: the inferred value None (issue #24's dropped run)
    assert label_in(axis, {}) == "none"
    assert label_in(Axis("a", (("one", {"x": 1}),)), {}) is None
    assert label_in(Axis("a", (("one", {"x": 1}),)), {"x": 2}) is None
    assert label_in(Axis("a", (("all", {}),)), {"x": 2}) == "all"


# ---- axes recovered from configs -------------------------------------------------------------
def test_infer_axes_from_configs_in_the_order_of_the_keys_first_appearance():
    configs = [
        {"name": "r0", "seed": 0, "clients.lr": 0.1, "strategy.name": "fedavg", "rounds": 2},
        {"name": "r1", "seed": 1, "x.flag": True, "clients.lr": 0.1, "strategy.name": "median", "rounds": 2},
        {"name": "r2", "seed": 0, "clients.lr": 0.5, "strategy.name": "fedavg", "rounds": 2},
        {"name": "r3", "seed": 0, "clients.lr": 0.5, "strategy.name": "median", "rounds": 2},
    ]
    assert infer_axes(configs) == [
        Axis("clients.lr", (("0.1", {"clients.lr": 0.1}), ("0.5", {"clients.lr": 0.5}))),
        Axis("strategy.name", (("fedavg", {"strategy.name": "fedavg"}), ("median", {"strategy.name": "median"}))),
        Axis("x.flag", (("unset", {"x.flag": None}), ("true", {"x.flag": True}))),
    ]


def test_keys_that_partition_the_runs_alike_form_one_axis_named_by_their_common_prefix():
    configs = [{"attack.data.enabled": e, "attack.byzantine.name": b, "strategy.name": s}
               for e, b in ((True, "none"), (False, "lie")) for s in ("fedavg", "median")]
    assert infer_axes(configs) == [
        Axis("attack", (("data.enabled=true,byzantine.name=none",
                         {"attack.data.enabled": True, "attack.byzantine.name": "none"}),
                        ("data.enabled=false,byzantine.name=lie",
                         {"attack.data.enabled": False, "attack.byzantine.name": "lie"}))),
        Axis("strategy.name", (("fedavg", {"strategy.name": "fedavg"}), ("median", {"strategy.name": "median"}))),
    ]


def test_an_axis_is_named_by_the_whole_common_prefix_less_its_last_dot():
    configs = [{"attack.X.p": 1, "attack.X.q": 1}, {"attack.X.p": 2, "attack.X.q": 2}]
    [axis] = infer_axes(configs)
    assert axis.name == "attack.X" and [lb for lb, _ in axis.values] == ["p=1,q=1", "p=2,q=2"]


def test_keys_without_a_common_prefix_are_joined_with_plus():
    configs = [{"a": 1, "b.c": "x"}, {"a": 2, "b.c": "y"}, {"a": 1, "b.c": "x"}]
    assert infer_axes(configs) == [Axis("a+b.c", (("a=1,b.c=x", {"a": 1, "b.c": "x"}),
                                                  ("a=2,b.c=y", {"a": 2, "b.c": "y"})))]


def test_keys_changing_with_different_values_but_the_same_partition_are_one_axis():
    # "p" and "q" take different values, but split the runs the same way: one axis
    configs = [{"k.p": 1, "k.q": "z"}, {"k.p": 2, "k.q": "y"}, {"k.p": 1, "k.q": "z"}]
    [axis] = infer_axes(configs)
    assert axis.name == "k" and [lb for lb, _ in axis.values] == ["p=1,q=z", "p=2,q=y"]
    # a different partition: two axes
    configs = [{"p": 1, "q": 1}, {"p": 2, "q": 1}, {"p": 1, "q": 2}]
    assert [a.name for a in infer_axes(configs)] == ["p", "q"]


def test_nothing_changes_no_axis():
    assert infer_axes([{"a": 1, "seed": 0, "name": "x"}, {"a": 1, "seed": 1, "name": "y"}]) == []
    assert infer_axes([{"a": 1}]) == []
    assert infer_axes([]) == []


@pytest.mark.parametrize("keys, prefix", [
    (["a.b.c", "a.b.d"], "a.b."), (["a.b.c", "a.x.d"], "a."), (["a.x", "b.y"], ""), (["x", "y"], ""),
    (["a.b", "a.b.c"], "a."), (["a.b.c.d", "a.b.c.e", "a.b.f"], "a.b."), (["a.b.c"], "a.b."), (["a"], ""),
])
def test_common_prefix_is_whole_dotted_parts(keys, prefix):
    assert _common_prefix(keys) == prefix


def test_an_axis_as_json_and_back():
    axis = Axis("attack", (("patch", {"attack.data.enabled": True}), ("lie", {"attack.byzantine.name": "lie"})))
    data = {"name": "attack", "values": [{"label": "patch", "settings": {"attack.data.enabled": True}},
                                         {"label": "lie", "settings": {"attack.byzantine.name": "lie"}}]}
    assert axis.to_json() == data
    assert Axis.from_json(data) == axis
