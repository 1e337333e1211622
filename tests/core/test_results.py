"""fedsim.results: run directories found and read, each run's labels, results.csv and
results.md (mean ± sample std over seeds, "(k of n)", cells in axis order), the power check's
scenarios, the heatmaps' and curves' contents (read back from the figures), and what
``write_results`` writes; expected values computed by hand."""

import csv
import json
import math
from pathlib import Path

import pytest
import tomli_w

from fedsim import results
from fedsim.grid import Axis
from fedsim.results import Run

PNG = b"\x89PNG\r\n\x1a\n"
RULE = Axis("rule", (("fedavg", {"strategy.name": "fedavg"}), ("median", {"strategy.name": "median"}),
                     ("krum", {"strategy.name": "krum"})))
ATTACK = Axis("attack", (("patch", {"attack.data.enabled": True, "attack.byzantine.name": "none"}),
                         ("lie", {"attack.data.enabled": False, "attack.byzantine.name": "lie"})))
LR = Axis("clients.lr", (("0.1", {"clients.lr": 0.1}), ("0.5", {"clients.lr": 0.5})))


def summary(asr=None, ca=None, status="completed", **more) -> dict:
    return {"status": status, "attack_success_rate": asr, "clean_accuracy": ca, **more}


def run(rule="fedavg", attack="patch", seed=0, s=None, rounds=(), labels=None, lr=0.1, path=None, **config) -> Run:
    c = {"strategy.name": rule, "seed": seed, "clients.lr": lr, **config}
    if attack is not None:
        c.update(dict(ATTACK.values)[attack])
    return Run(Path(path or f"{rule}-{attack}-{seed}"), c, s if s is not None else summary(), list(rounds), labels)


def write_dir(path: Path, config: dict, s: dict, rounds: list[dict] | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "config.toml").write_text(tomli_w.dumps(config))
    (path / "summary.json").write_text(json.dumps(s))
    if rounds is not None:
        (path / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rounds))
    return path


# ---- finding and reading run directories -----------------------------------------------------
def test_a_run_is_completed_only_with_that_status():
    assert Run(Path("r"), {}, {"status": "completed"}, []).completed
    assert not Run(Path("r"), {}, {"status": "failed"}, []).completed
    assert not Run(Path("r"), {}, {}, []).completed


def test_a_run_directory_holds_a_config_and_a_summary_file(tmp_path):
    assert results.is_run_dir(write_dir(tmp_path / "run", {"seed": 0}, {}))
    (tmp_path / "config-only").mkdir()
    (tmp_path / "config-only" / "config.toml").write_text("")
    assert not results.is_run_dir(tmp_path / "config-only")
    (tmp_path / "summary-only").mkdir()
    (tmp_path / "summary-only" / "summary.json").write_text("{}")
    assert not results.is_run_dir(tmp_path / "summary-only")
    (tmp_path / "folders" / "config.toml").mkdir(parents=True)
    (tmp_path / "folders" / "summary.json").mkdir()
    assert not results.is_run_dir(tmp_path / "folders")


def test_find_runs_takes_run_dirs_and_the_run_dirs_directly_inside_folders(tmp_path):
    grid = tmp_path / "grid"
    for name in ("b", "a", "c.failed-12", "d.failed-", "e.failed-1x"):
        write_dir(grid / name, {"seed": 0}, {})
    write_dir(grid / "nested" / "deep", {"seed": 0}, {})
    (grid / "notes.txt").write_text("")
    single = write_dir(tmp_path / "single", {"seed": 1}, {})
    assert results.find_runs([grid, str(single)]) == [
        grid / "a", grid / "b", grid / "d.failed-", grid / "e.failed-1x", single]
    assert results.find_runs([single, grid]) == [
        single, grid / "a", grid / "b", grid / "d.failed-", grid / "e.failed-1x"]
    # a run directory is taken as it is, even when it holds others
    write_dir(single / "inner", {"seed": 2}, {})
    assert results.find_runs([single]) == [single]


def test_find_runs_refuses_a_missing_path_and_a_folder_without_runs(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        results.find_runs([tmp_path / "missing"])
    assert str(e.value) == f"{tmp_path / 'missing'} is not a directory"
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    with pytest.raises(FileNotFoundError) as e:
        results.find_runs([tmp_path / "empty", str(tmp_path / "other")])
    assert str(e.value) == (f"no run directory (config.toml + summary.json) in "
                            f"{tmp_path / 'empty'}, {tmp_path / 'other'}")


def test_load_run_reads_the_flat_config_the_summary_the_rounds_and_the_recorded_labels(tmp_path):
    path = write_dir(tmp_path / "grid" / "cell", {"seed": 3, "strategy": {"name": "krum", "params": {"f": 1}}},
                     {"status": "completed", "clean_accuracy": 0.5})
    (path / "rounds.jsonl").write_text('{"round": 1}\n\n{"round": 2}\n')
    (tmp_path / "grid" / "sweep.jsonl").write_text(json.dumps({"cell": "cell", "labels": {"rule": "krum"}}) + "\n")
    assert results.load_run(path) == Run(path, {"seed": 3, "strategy.name": "krum", "strategy.params": {"f": 1}},
                                         {"status": "completed", "clean_accuracy": 0.5},
                                         [{"round": 1}, {"round": 2}], {"rule": "krum"})
    (path / "rounds.jsonl").unlink()
    assert results.load_run(path).rounds == []


def test_the_recorded_labels_are_the_last_valid_line_naming_the_cell(tmp_path):
    cell = tmp_path / "cell"
    assert results.recorded_labels(cell) is None
    (tmp_path / "sweep.jsonl").mkdir()
    assert results.recorded_labels(cell) is None
    (tmp_path / "sweep.jsonl").rmdir()
    lines = [{"cell": "cell", "labels": {"rule": "first"}},
             "not json",
             [1, 2],
             {"cell": "other", "labels": {"rule": "other"}},
             {"cell": "cell", "labels": "not a table"},
             {"cell": "cell", "labels": {"rule": "last"}},
             {"cell": "cell"},
             "{cut short"]
    (tmp_path / "sweep.jsonl").write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines))
    assert results.recorded_labels(cell) == {"rule": "last"}
    (tmp_path / "sweep.jsonl").write_text(json.dumps({"cell": "other", "labels": {"rule": "x"}}) + "\n")
    assert results.recorded_labels(cell) is None


def test_grid_axes_come_from_the_first_sweep_json_among_the_paths_else_from_the_configs(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    (tmp_path / "b" / "sweep.json").write_text(json.dumps({"axes": [RULE.to_json(), LR.to_json()]}))
    runs = [run("fedavg", lr=0.1), run("median", lr=0.1)]
    assert results.grid_axes([tmp_path / "a", str(tmp_path / "b")], runs) == [RULE, LR]
    (tmp_path / "a" / "sweep.json").mkdir()  # not a file: skipped
    assert results.grid_axes([tmp_path / "a", tmp_path / "b"], runs) == [RULE, LR]
    assert results.grid_axes([tmp_path / "a"], runs) == [
        Axis("strategy.name", (("fedavg", {"strategy.name": "fedavg"}), ("median", {"strategy.name": "median"})))]


# ---- labels and cells ------------------------------------------------------------------------
def test_a_run_is_labelled_as_recorded_else_by_its_config_else_with_a_question_mark():
    r = run("median", "lie", labels={"rule": "krum", "attack": "unknown"})
    assert results.labels_of(r, [RULE, ATTACK]) == ("krum", "lie")
    assert results.labels_of(run("trimmed", "patch"), [RULE, ATTACK]) == ("?", "patch")
    assert results.labels_of(run("median", "patch", labels={}), [RULE]) == ("median",)
    assert results.labels_of(run(), []) == ()


def test_swept_keys_are_every_axis_key_once_in_order():
    both = Axis("both", (("x", {"clients.lr": 1, "strategy.name": "a"}),))
    assert results.swept_keys([RULE, ATTACK, both]) == [
        "strategy.name", "attack.data.enabled", "attack.byzantine.name", "clients.lr"]
    assert results.swept_keys([]) == []


def test_cells_group_the_seeds_in_axis_order_with_unlabelled_runs_last():
    runs = [run("median", "patch", 0), run("trimmed", "patch", 0), run("fedavg", "lie", 0),
            run("median", "patch", 1), run("fedavg", "patch", 0), run("median", None, 0)]
    grouped = results.cells(runs, [RULE, ATTACK])
    assert list(grouped) == [("fedavg", "patch"), ("fedavg", "lie"), ("median", "patch"), ("median", "?"),
                             ("?", "patch")]
    assert grouped[("median", "patch")] == [runs[0], runs[3]]
    assert results.cells(runs[:2], []) == {(): runs[:2]}


# ---- one number per cell ---------------------------------------------------------------------
def test_mean_std_is_the_mean_and_the_sample_standard_deviation():
    assert results.mean_std([0.5]) == "0.500"
    assert results.mean_std([0.4, 0.6]) == "0.500 ± 0.141"  # √(0.02 / 1); the population's: 0.100
    assert results.mean_std([0.9, 0.8, 0.4]) == "0.700 ± 0.265"
    assert results.mean_std([1, 1]) == "1.000 ± 0.000"


def test_a_cell_counts_its_completed_runs_that_recorded_the_key():
    done = [Run(Path(str(i)), {}, summary(asr=a), []) for i, a in enumerate((0.4, 0.6))]
    failed = Run(Path("f"), {}, summary(asr=0.9, status="failed"), [])
    unrecorded = Run(Path("u"), {}, summary(asr=None), [])
    assert results.cell_text(done, "attack_success_rate") == "0.500 ± 0.141"
    assert results.cell_text([*done, failed], "attack_success_rate") == "0.500 ± 0.141 (2 of 3)"
    assert results.cell_text([done[0], unrecorded], "attack_success_rate") == "0.400 (1 of 2)"
    assert results.cell_text([unrecorded], "attack_success_rate") == "n/a"
    assert results.cell_text([Run(Path("v"), {}, {"status": "completed"}, [])], "attack_success_rate") == "n/a"
    assert results.cell_text([failed], "attack_success_rate") == "none completed"


def _s(asr, ca, status="completed"):
    return summary(asr=asr, ca=ca, status=status, max_attack_success_rate=asr + 0.05,
                   mean_tpr=0.5, mean_fpr=0.25, wall_s=3.0)


def _grid():
    return [run("fedavg", "patch", 0, _s(0.9, 0.6)), run("fedavg", "patch", 1, _s(0.7, 0.6)),
            run("fedavg", "lie", 0, _s(0.1, 0.4)), run("fedavg", "lie", 1, _s(0.2, 0.5, "failed")),
            run("median", "patch", 10, _s(0.3, 0.7)), run("trimmed", "lie", 2, _s(0.0, 0.8))]


def test_results_markdown_of_two_axes_in_full():
    md = results.results_markdown(_grid(), [RULE, ATTACK])
    head = ('# Results of 6 runs\n\nMean ± sample standard deviation over seeds 0, 1, 10, 2 of the completed '
            'runs of each cell; "(k of n)": only k of the cell\'s n runs completed.\n\n')
    assert md.startswith(head)
    sections = md[len(head):].split("\n\n")
    assert sections[0] == "## final ASR"
    assert sections[1] == ("| rule \\ attack | patch | lie |\n|---|---|---|\n"
                           "| fedavg | 0.800 ± 0.141 | 0.100 (1 of 2) |\n"
                           "| median | 0.300 | – |\n"
                           "| ? | – | 0.000 |")
    assert [sections[i] for i in (2, 4, 6, 8)] == ["## max ASR", "## final CA", "## mean TPR", "## mean FPR"]
    assert sections[3].splitlines()[2] == "| fedavg | 0.850 ± 0.141 | 0.150 (1 of 2) |"
    assert sections[5].splitlines()[2:] == ["| fedavg | 0.600 ± 0.000 | 0.400 (1 of 2) |",
                                            "| median | 0.700 | – |", "| ? | – | 0.800 |"]
    assert sections[7].splitlines()[3] == "| median | 0.500 | – |"
    assert sections[9] == ("| rule \\ attack | patch | lie |\n|---|---|---|\n"
                           "| fedavg | 0.250 ± 0.000 | 0.250 (1 of 2) |\n"
                           "| median | 0.250 | – |\n"
                           "| ? | – | 0.250 |\n")
    assert len(sections) == 10


def test_results_markdown_of_one_axis_three_axes_and_none():
    runs = _grid()[:3]
    md = results.results_markdown(runs, [ATTACK])
    assert "| runs \\ attack | patch | lie |\n|---|---|---|\n| all | 0.800 ± 0.141 | 0.100 |\n" in md
    md = results.results_markdown(runs, [])
    assert md.startswith("# Results of 3 runs\n")
    assert "## final ASR\n\n| runs \\  | all runs |\n|---|---|\n| all | 0.567 ± 0.416 |\n" in md
    md = results.results_markdown(runs, [RULE, LR, ATTACK])
    assert ("| rule / clients.lr \\ attack | patch | lie |\n|---|---|---|\n"
            "| fedavg / 0.1 | 0.800 ± 0.141 | 0.100 |\n\n") in md


# ---- results.csv -----------------------------------------------------------------------------
def test_csv_rows_give_labels_swept_values_seed_status_metrics_and_the_error():
    params = Axis("strategy.params", (("f-1", {"strategy.params": {"f": 1}}), ("l", {"strategy.params": [1, 2]})))
    runs = [run("fedavg", "patch", 0, _s(0.9, 0.6), **{"strategy.params": {"f": 1}}),
            run("median", "lie", 1, {**_s(0.1, 0.4, "failed"), "error": "boom"}, path="x/y",
                **{"strategy.params": [1, 2]})]
    rows = results.csv_rows(runs, [RULE, ATTACK, params])
    assert rows[0] == {"rule": "fedavg", "attack": "patch", "strategy.params": "f-1", "strategy.name": "fedavg",
                       "attack.data.enabled": True, "attack.byzantine.name": "none", "seed": 0,
                       "status": "completed", "final_asr": 0.9, "max_asr": 0.9 + 0.05, "final_ca": 0.6,
                       "mean_tpr": 0.5, "mean_fpr": 0.25, "wall_s": 3.0, "run_dir": "fedavg-patch-0", "error": ""}
    assert list(rows[0]) == list(rows[1])
    assert (rows[1]["attack.data.enabled"], rows[1]["error"], rows[1]["run_dir"], rows[1]["seed"]) == \
        (False, "boom", "x/y", 1)
    # a dict or list value as JSON in the csv (the axis "strategy.params" is its own column)
    rows = results.csv_rows(runs, [RULE, Axis("p", (("a", {"strategy.params": {"f": 1}}),))])
    assert (rows[0]["strategy.params"], rows[1]["strategy.params"], rows[1]["p"]) == ('{"f": 1}', "[1, 2]", "?")
    rows = results.csv_rows([Run(Path("r"), {}, {}, [])], [])
    assert rows == [{"seed": None, "status": None, "final_asr": None, "max_asr": None, "final_ca": None,
                     "mean_tpr": None, "mean_fpr": None, "wall_s": None, "run_dir": "r", "error": ""}]


def test_results_csv_text():
    assert results.results_csv([{"a": 1, "b": "x,y"}, {"a": None, "b": 2.5}]) == 'a,b\n1,"x,y"\n,2.5\n'
    assert results.results_csv([{"run_dir": "r", "seed": 0}]) == "run_dir,seed\nr,0\n"
    assert results.results_csv([]) == "run_dir\n"


# ---- the power check's scenarios -------------------------------------------------------------
@pytest.mark.parametrize("config, described", [
    ({"attack.enabled": False, "attack.byzantine.name": "lie"}, "none"),
    ({"attack.malicious": []}, "none"),
    ({}, "badnet"),
    ({"attack.data.trigger.name": "blended"}, "blended"),
    ({"attack.data.mode": "badencoder", "attack.data.trigger.name": "badnet"}, "badencoder"),
    ({"attack.data.mode": "badencoder", "attack.data.enabled": False, "attack.byzantine.name": "lie"}, "lie"),
    ({"attack.data.enabled": False, "attack.byzantine.name": "lie"}, "lie"),
    ({"attack.data.trigger.name": "wanet", "attack.update.name": "model_replacement"}, "wanet+model_replacement"),
    ({"attack.update.name": "scale", "attack.byzantine.name": "ipm"}, "badnet+scale+ipm"),
    ({"attack.data.enabled": False}, "attack"),
    ({"attack.data.enabled": False, "attack.update.name": "none", "attack.byzantine.name": "none"}, "attack"),
])
def test_the_scenario_names_the_attack_a_config_describes(config, described):
    assert results.scenario_of(Run(Path("r"), config, {}, []), []) == described


def test_the_scenario_adds_the_labels_of_the_axes_that_set_no_defense_key():
    config = {"attack.data.trigger.name": "badnet", "strategy.name": "median", "clients.lr": 0.5,
              "rounds": 6, "clients.training": "roclip", "defense.cleanclip.enabled": True,
              "clients.roclip_k": 1, "clients.adversarial_eps": 2}
    r = Run(Path("r"), config, {}, [])
    axes = [Axis("trigger", (("badnet_p1", {"attack.data.trigger.name": "badnet"}),)), RULE, LR,
            Axis("rounds", (("r6", {"rounds": 6}),)),
            Axis("training", (("roclip", {"clients.training": "roclip"}),)),
            Axis("cleanclip", (("on", {"defense.cleanclip.enabled": True}),)),
            Axis("k", (("k1", {"clients.roclip_k": 1}),)),
            Axis("eps", (("e2", {"clients.adversarial_eps": 2}),)),
            Axis("mixed", (("m", {"rounds": 6, "strategy.name": "median"}),))]
    assert results.scenario_of(r, axes) == "badnet (badnet_p1 / 0.5 / r6)"
    # labels that only repeat the attack add nothing
    assert results.scenario_of(r, [Axis("trigger", (("badnet", {"attack.data.trigger.name": "badnet"}),)),
                                   RULE]) == "badnet"
    assert results.scenario_of(r, [RULE]) == "badnet"


def test_power_check_groups_the_runs_by_scenario():
    runs = [run("fedavg", None, 0, summary(ca=0.7, initial_clean_accuracy=0.7), **{"attack.enabled": False}),
            run("fedavg", "patch", 0, summary(asr=0.9, ca=0.6)),
            run("fedavg", "patch", 1, summary(asr=0.7, ca=0.6)),
            run("median", "patch", 0, summary(asr=0.0, ca=0.6)),
            run("fedavg", "lie", 0, summary(asr=0.0, ca=0.55))]
    verdicts = results.power_check(runs, [RULE, ATTACK])
    assert [(v.scenario, v.measured, v.powered) for v in verdicts] == [
        ("no attack", "final CA 0.700 vs initial 0.700 (1 seeds)", True),
        ("badnet (patch)", "final ASR 0.800 (2 seeds)", True),
        ("lie", "final CA 0.550, +0.150 below the no-attack run's 0.700 (1 seeds)", True)]


def test_each_objective_is_a_setting_with_its_own_no_attack_check():
    objective = Axis("objective", (("clip", {"objective": "clip"}), ("simclr", {"objective": "simclr"})))
    on_off = Axis("attack", (("none", {"attack.enabled": False}), ("patch", {"attack.enabled": True})))
    runs = [run("fedavg", None, 0, summary(ca=ca, initial_clean_accuracy=initial, asr=asr), objective=o,
                **{"attack.enabled": attacked})
            for o, attacked, ca, initial, asr in [("clip", False, 0.81, 0.72, 0.08), ("clip", True, 0.72, 0.72, 0.91),
                                                  ("simclr", False, 0.80, 0.89, 0.11), ("simclr", True, 0.58, 0.89, 0.11)]]
    axes = [RULE, objective, on_off]
    assert [results.setting_of(r, axes) for r in runs] == ["clip", "clip", "simclr", "simclr"]
    assert results.setting_of(runs[0], [RULE, ATTACK, on_off]) == ""
    # pooled, the two attack-free runs (0.805 vs initial 0.805) would pass
    assert [(v.scenario, v.powered) for v in results.power_check(runs, axes)] == [
        ("no attack (clip)", True), ("no attack (simclr)", False),
        ("badnet (clip / patch)", True), ("badnet (simclr / patch)", False)]


# ---- the figures' numbers --------------------------------------------------------------------
def _equal(a, b):
    return len(a) == len(b) and all((math.isnan(x) and math.isnan(y)) or x == pytest.approx(y) for x, y in zip(a, b))


def test_the_heatmap_means_over_the_first_two_axes():
    runs = [run("fedavg", "patch", 0, summary(asr=0.9), lr=0.1), run("fedavg", "patch", 1, summary(asr=0.6), lr=0.5),
            run("fedavg", "patch", 2, summary(asr=0.0, status="failed")),
            run("fedavg", "lie", 0, summary(asr=None)), run("median", "lie", 0, summary(asr=0.2))]
    rows, cols, matrix = results._mean_grid(runs, [RULE, ATTACK, LR], "attack_success_rate")
    assert (rows, cols) == (["fedavg", "median", "krum"], ["patch", "lie"])
    assert [_equal(m, e) for m, e in zip(matrix, [[0.75, math.nan], [math.nan, 0.2], [math.nan, math.nan]])] == \
        [True] * 3
    rows, cols, matrix = results._mean_grid(runs, [ATTACK], "attack_success_rate")
    assert (rows, cols) == ([""], ["patch", "lie"]) and _equal(matrix[0], [0.75, 0.2])
    rows, cols, matrix = results._mean_grid(runs, [], "attack_success_rate")
    assert (rows, cols) == ([""], ["all runs"]) and _equal(matrix[0], [(0.9 + 0.6 + 0.2) / 3])


def test_the_series_per_round_with_the_initial_model_as_round_0():
    a = Run(Path("a"), {}, {"initial_clean_accuracy": 0.1},
            [{"round": 1, "clean_accuracy": 0.5}, {"round": 2, "clean_accuracy": 0.7}])
    b = Run(Path("b"), {}, {"initial_clean_accuracy": None},
            [{"round": 1, "clean_accuracy": 0.3}, {"round": 2, "clean_accuracy": None}, {"round": 3}])
    xs, mean, low, high = results._series([b, a], "clean_accuracy", "initial_clean_accuracy")
    assert xs == [0, 1, 2]
    assert mean == pytest.approx([0.1, 0.4, 0.7]) and low == [0.1, 0.3, 0.7] and high == [0.1, 0.5, 0.7]
    assert results._series([], "clean_accuracy", "initial_clean_accuracy") == ([], [], [], [])


@pytest.fixture
def figures(monkeypatch):
    """The figures the code closes, kept open to be read."""
    import matplotlib.pyplot as plt

    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    yield kept
    for fig in kept:
        fig.clear()
    plt.close("all")


def test_the_heatmap_shows_each_mean_on_its_cell(tmp_path, figures):
    runs = [run("fedavg", "patch", 0, summary(asr=0.9)), run("fedavg", "patch", 1, summary(asr=0.6)),
            run("median", "lie", 0, summary(asr=0.2)), run("median", "patch", 0, summary(asr=0.6))]
    path = results.plot_heatmap(runs, [RULE, ATTACK, LR], "attack_success_rate", "final ASR", tmp_path / "h.png")
    assert path == tmp_path / "h.png" and path.read_bytes()[:8] == PNG
    [fig] = figures
    ax, bar = fig.axes
    assert [(t.get_position(), t.get_text(), t.get_color()) for t in ax.texts] == [
        ((0, 0), "0.75", "black"), ((1, 0), "–", "black"), ((0, 1), "0.60", "black"), ((1, 1), "0.20", "white"),
        ((0, 2), "–", "black"), ((1, 2), "–", "black")]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["patch", "lie"]
    assert list(ax.get_xticks()) == [0, 1]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["fedavg (baseline)", "median", "krum"]
    assert list(ax.get_yticks()) == [0, 1, 2]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("attack", "rule")
    assert ax.get_title() == "final ASR (mean over seeds and other axes)"
    assert {(t.get_horizontalalignment(), t.get_verticalalignment()) for t in ax.texts} == {("center", "center")}
    [image] = ax.images
    assert image.get_clim() == (0, 1)
    assert image.get_array()[0, 0] == pytest.approx(0.75)
    assert bar.get_label() == "<colorbar>"


def test_the_heatmap_of_two_axes(tmp_path, figures):
    runs = [run("fedavg", "patch", 0, summary(asr=0.65)), run("median", "lie", 0, summary(asr=0.5))]
    results.plot_heatmap(runs, [RULE, ATTACK], "attack_success_rate", "final ASR", tmp_path / "h.png")
    [ax, _] = figures[0].axes
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("attack", "rule", "final ASR (mean over seeds)")
    assert [(t.get_text(), t.get_color()) for t in ax.texts] == [
        ("0.65", "black"), ("–", "black"), ("–", "black"), ("0.50", "white"), ("–", "black"), ("–", "black")]


def test_the_heatmap_of_one_axis_and_of_none(tmp_path, figures):
    runs = [run("fedavg", "patch", 0, summary(ca=0.5)), run("median", "patch", 0, summary(ca=0.7))]
    results.plot_heatmap(runs, [RULE], "clean_accuracy", "final CA", tmp_path / "one.png")
    results.plot_heatmap(runs, [], "clean_accuracy", "final CA", tmp_path / "none.png")
    one, none = (fig.axes[0] for fig in figures)
    assert [t.get_text() for t in one.texts] == ["0.50", "0.70", "–"]
    assert (one.get_xlabel(), one.get_ylabel(), one.get_title()) == ("rule", "", "final CA (mean over seeds)")
    assert [t.get_text() for t in one.get_yticklabels()] == [""]
    assert [t.get_text() for t in none.texts] == ["0.60"]
    assert [t.get_text() for t in none.get_xticklabels()] == ["all runs"]
    assert (none.get_xlabel(), none.get_ylabel()) == ("", "")


def _curve_runs():
    rounds = lambda *cas: [{"round": i + 1, "clean_accuracy": ca} for i, ca in enumerate(cas)]  # noqa: E731
    return [run("fedavg", "patch", 0, summary(initial_clean_accuracy=0.1), rounds(0.5, 0.6)),
            run("fedavg", "patch", 1, summary(initial_clean_accuracy=0.3), rounds(0.7, 0.8)),
            run("fedavg", "lie", 0, summary(), rounds(0.2)),
            run("median", "lie", 0, summary(), rounds(0.4, 0.45)),
            run("median", "patch", 0, summary(), [])]


def test_the_curves_one_panel_per_value_of_the_first_axis(tmp_path, figures):
    path = results.plot_curves(_curve_runs(), [RULE, ATTACK], "clean_accuracy", "initial_clean_accuracy", "CA",
                               tmp_path / "c.png")
    assert path == tmp_path / "c.png" and path.read_bytes()[:8] == PNG
    [fig] = figures
    fedavg, median = fig.axes
    assert fig._suptitle.get_text() == "CA per round: mean over seeds, band min–max"
    assert (fedavg.get_title(), median.get_title()) == ("rule = fedavg", "rule = median")
    assert [(ln.get_label(), list(ln.get_xdata())) for ln in fedavg.lines] == [("patch", [0, 1, 2]), ("lie", [1])]
    assert list(fedavg.lines[0].get_ydata()) == pytest.approx([0.2, 0.6, 0.7])
    assert list(fedavg.lines[1].get_ydata()) == pytest.approx([0.2])
    assert [(ln.get_label(), list(ln.get_xdata())) for ln in median.lines] == [("lie", [1, 2])]
    band = fedavg.collections[0].get_paths()[0].vertices
    assert band[:, 1].min() == pytest.approx(0.1) and band[:, 1].max() == pytest.approx(0.8)
    assert (band[:, 0].min(), band[:, 0].max()) == (0, 2)
    assert len(fedavg.collections) == 2 and len(median.collections) == 1
    assert fedavg.get_shared_x_axes().joined(fedavg, median) and fedavg.get_shared_y_axes().joined(fedavg, median)
    for ax in (fedavg, median):
        assert ax.get_ylim() == (0, 1)
        assert ax.get_xlabel() == "round"
        assert ax.xaxis.get_major_locator()._integer
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [ln.get_label() for ln in ax.lines]


def test_the_curves_of_one_axis_share_a_panel_and_panels_wrap_after_four(tmp_path, figures):
    results.plot_curves(_curve_runs(), [ATTACK], "clean_accuracy", "initial_clean_accuracy", "CA",
                        tmp_path / "one.png")
    results.plot_curves(_curve_runs(), [], "clean_accuracy", "initial_clean_accuracy", "CA", tmp_path / "none.png")
    one, none = figures
    [ax] = one.axes
    assert ax.get_title() == "CA"
    assert [ln.get_label() for ln in ax.lines] == ["patch", "lie"]
    assert [ln.get_label() for ln in none.axes[0].lines] == ["all runs"]
    results.plot_curves(_curve_runs(), [RULE, ATTACK, LR], "clean_accuracy", "initial_clean_accuracy", "CA",
                        tmp_path / "three.png")
    assert [ln.get_label() for ln in figures[2].axes[0].lines] == ["patch / 0.1", "lie / 0.1"]
    many = Axis("rule", tuple((f"r{i}", {"strategy.name": f"r{i}"}) for i in range(6)))
    runs = [Run(Path(str(i)), {"strategy.name": f"r{i}", "clients.lr": 0.1}, summary(),
                [{"round": 1, "clean_accuracy": 0.5}]) for i in range(6)]
    results.plot_curves(runs, [many, LR], "clean_accuracy", "initial_clean_accuracy", "CA", tmp_path / "six.png")
    fig = figures[3]
    assert len(fig.axes) == 8
    assert [ax.get_visible() for ax in fig.axes] == [True] * 6 + [False] * 2
    assert [ax.get_title() for ax in fig.axes[:6]] == [f"rule = r{i}" for i in range(6)]
    assert [ax.get_xlabel() for ax in fig.axes] == [""] * 4 + ["round"] * 4
    assert [ln.get_label() for ln in fig.axes[0].lines] == ["0.1"]


# ---- write_results ---------------------------------------------------------------------------
def _write_grid(root: Path, baseline_asr: float) -> None:
    base = {"attack": {"data": {"enabled": True}, "byzantine": {"name": "none"}}, "clients": {"lr": 0.1}}
    for name, strategy, enabled, asr, seed in [("fedavg-none", "fedavg", False, 0.0, 0),
                                               ("fedavg-badnet", "fedavg", True, baseline_asr, 0),
                                               ("median-badnet", "median", True, 0.1, 0)]:
        config = {**base, "seed": seed, "name": name, "strategy": {"name": strategy},
                  "attack": {**base["attack"], "enabled": enabled}}
        write_dir(root / name, config,
                  summary(asr=asr, ca=0.7, initial_clean_accuracy=0.7, initial_attack_success_rate=0.0,
                          max_attack_success_rate=asr, wall_s=1.0),
                  [{"round": 1, "clean_accuracy": 0.7, "attack_success_rate": asr}])


def test_write_results_writes_the_tables_the_power_check_and_four_figures(tmp_path, capsys, figures):
    _write_grid(tmp_path / "runs", baseline_asr=0.9)
    out = tmp_path / "out" / "new"
    written = results.write_results([tmp_path / "runs"], out)
    assert written == [out / name for name in ("results.csv", "results.md", "heatmap_asr.png", "heatmap_ca.png",
                                               "curves_asr.png", "curves_ca.png")]
    for path in written[2:]:
        assert path.read_bytes()[:8] == PNG
    heat_asr, heat_ca, curves_asr, curves_ca = figures
    assert heat_asr.axes[0].get_title() == "final ASR (mean over seeds)"
    assert heat_ca.axes[0].get_title() == "final CA (mean over seeds)"
    assert curves_asr._suptitle.get_text() == "ASR per round: mean over seeds, band min–max"
    assert curves_ca._suptitle.get_text() == "CA per round: mean over seeds, band min–max"
    # round 0 is the initial model's ASR (0.0), then the round's
    assert [list(ln.get_xdata()) for ln in curves_asr.axes[0].lines] == [[0, 1]] * len(curves_asr.axes[0].lines)
    assert [list(ln.get_ydata()) for ln in curves_ca.axes[0].lines] == [[0.7, 0.7]] * len(curves_ca.axes[0].lines)
    runs = [results.load_run(p) for p in results.find_runs([tmp_path / "runs"])]
    axes = results.grid_axes([tmp_path / "runs"], runs)
    assert [a.name for a in axes] == ["attack.enabled", "strategy.name"]
    assert (out / "results.csv").read_text() == results.results_csv(results.csv_rows(runs, axes))
    with (out / "results.csv").open() as f:
        assert [r["run_dir"] for r in csv.DictReader(f)] == [str(tmp_path / "runs" / n) for n in
                                                             ("fedavg-badnet", "fedavg-none", "median-badnet")]
    md = (out / "results.md").read_text()
    verdicts = results.power_check(runs, axes)
    assert md == results.results_markdown(runs, axes) + "\n" + results.power.markdown(verdicts)
    assert "- badnet (true) (backdoor): final ASR 0.900 (1 seeds); needs ASR ≥ 0.8 — powered" in md
    assert capsys.readouterr().err == ""
    # the heatmaps show each cell's final ASR and CA (rows: attack.enabled true, false;
    # columns: fedavg, median — no median run without an attack)
    assert [t.get_text() for t in heat_asr.axes[0].texts] == ["0.90", "0.10", "0.00", "–"]
    assert [t.get_text() for t in heat_ca.axes[0].texts] == ["0.70", "0.70", "0.70", "–"]


def test_write_results_warns_naming_each_line_that_is_not_powered(tmp_path, capsys):
    _write_grid(tmp_path / "runs", baseline_asr=0.5)
    results.write_results([tmp_path / "runs"], tmp_path / "runs")
    assert capsys.readouterr().err == (
        f"fedsim: warning: the grid in {tmp_path / 'runs'} is not powered (its FedAvg baseline must show each "
        "attack and keep CA without one; results.md, 'Power check'):\n"
        "  badnet (true) (backdoor): final ASR 0.500 (1 seeds); needs ASR ≥ 0.8 — NOT powered\n")
    assert "**NOT powered**" in (tmp_path / "runs" / "results.md").read_text()


def test_write_results_warns_with_every_line_that_is_not_powered_on_its_own_line(tmp_path, capsys):
    _write_grid(tmp_path / "runs", baseline_asr=0.5)
    # the attack-free baseline loses CA as well: 0.7 → 0.2
    clean = tmp_path / "runs" / "fedavg-none" / "summary.json"
    clean.write_text(json.dumps({**json.loads(clean.read_text()), "clean_accuracy": 0.2}))
    results.write_results([tmp_path / "runs"], tmp_path / "out")
    assert capsys.readouterr().err.splitlines()[1:] == [
        "  no attack (no attack): final CA 0.200 vs initial 0.700 (1 seeds); needs CA ≥ initial − 0.03 — NOT powered",
        "  badnet (true) (backdoor): final ASR 0.500 (1 seeds); needs ASR ≥ 0.8 — NOT powered"]
