"""``fedsim sweep`` and ``fedsim report``: the grid (order, seeds, several keys per value,
names), validation of every cell before any starts, failures recorded without stopping the
sweep, re-runs that skip, resume or set aside, cells side by side (``--jobs``: scheduling,
failures, Ctrl-C, and each cell's numbers equal to its run alone), and the tables and figures
checked against numbers computed by hand from run directories written here."""

import csv
import json
import math
import os
import re
import signal
import statistics
import subprocess
import threading
import time
import tomllib
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
import tomli_w

import fedsim.sweep_run as sweep
from fedsim import ray_session, runner
from fedsim.cli import main
from fedsim.config import load_config
from fedsim.grid import Axis, expand, infer_axes, label_of
from fedsim.report import RunDirectory, summarize
from fedsim.sweep_run import plan

PNG = b"\x89PNG\r\n\x1a\n"
# Small enough for the config checks to be instant (no run starts in the unit tests).
BASE = """
name = "grid"
seed = 7
rounds = 2
[data]
train_size = 200
test_size = 100
[model]
init = "scratch"
[clients]
num = 4
per_round = 4
[attack]
malicious = [0]
[resources]
total_cpus = 2
engine = "ray"  # the shared-cluster tests: cells on Ray (the in-process engine needs none)
"""
ATTACKS = """
[sweep.attack.patch]
"attack.data.enabled" = true
"attack.byzantine.name" = "none"
[sweep.attack.lie]
"attack.data.enabled" = false
"attack.byzantine.name" = "lie"
"""


class FakeCluster:
    """``ray_session.start_cluster`` and ``ray_session.end_ray`` for the sweeps with fake runs: records
    what was started and ended, starts nothing."""

    def __init__(self, tmp_path):
        self.started, self.ended, self.tmp = [], [], tmp_path

    def start(self, cpus):
        folder = self.tmp / f"{ray_session.RAY_PREFIX}{len(self.started)}"
        folder.mkdir()
        self.started.append(cpus)
        return folder, f"127.0.0.1:{6000 + len(self.started)}"

    def end(self, folder, grace_s=5.0):
        self.ended.append(folder.name)


@pytest.fixture(autouse=True)
def fake_cluster(request, tmp_path, monkeypatch):
    """No real Ray cluster for the sweeps whose runs are fakes (the slow tests run real ones)."""
    cluster = FakeCluster(tmp_path)
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setattr(ray_session, "start_cluster", cluster.start)
        monkeypatch.setattr(ray_session, "end_ray", cluster.end)
    return cluster


def write_config(tmp_path, sweep: str) -> str:
    path = tmp_path / "grid.toml"
    path.write_text(BASE + sweep)
    return str(path)


def test_the_grid_is_the_cartesian_product_in_declaration_order_with_seeds_innermost(tmp_path):
    config = write_config(tmp_path, '[sweep]\nseeds = 2\n"strategy.name" = ["median", "fedavg"]\n' + ATTACKS)
    p = plan(config)
    names = [c.name for c, _ in p.cells]
    assert names == [
        "median__patch__seed7", "median__patch__seed8", "median__lie__seed7", "median__lie__seed8",
        "fedavg__patch__seed7", "fedavg__patch__seed8", "fedavg__lie__seed7", "fedavg__lie__seed8",
    ]
    # every key of a multi-key value reaches the cell's config, and only that cell's
    for cell, cfg in p.cells:
        lie = cell.labels["attack"] == "lie"
        assert (cfg.attack.data.enabled, cfg.attack.byzantine.name) == (not lie, "lie" if lie else "none")
        assert cfg.strategy.name == cell.labels["strategy.name"] and cfg.seed == cell.seed
        assert cfg.name == f"grid-{cell.name}" and cfg.rounds == 2
    # stable: the same grid gives the same names; unique
    assert [c.name for c, _ in plan(config).cells] == names and len(set(names)) == len(names)


def test_seeds_option_grid_option_and_set_apply_to_every_cell(tmp_path):
    config = write_config(tmp_path, '[sweep]\nseeds = 2\n"strategy.name" = ["median", "fedavg"]\n')
    p = plan(config, overrides=["rounds=3"], grid=["strategy.name=['geometric_median', 'median']", "clients.lr=[1e-3, 1]"],
             seeds=3)
    assert [a.name for a in p.axes] == ["strategy.name", "clients.lr"]  # replaced in place, then appended
    assert [c.name for c, _ in p.cells][:4] == ["geometric_median__0.001__seed7", "geometric_median__0.001__seed8",
                                                "geometric_median__0.001__seed9",
                                                "geometric_median__1__seed7"]
    assert len(p.cells) == 2 * 2 * 3
    assert {cfg.rounds for _, cfg in p.cells} == {3}
    assert {(cfg.strategy.name, cfg.clients.lr) for _, cfg in p.cells} == {
        ("geometric_median", 1e-3), ("geometric_median", 1.0), ("median", 1e-3), ("median", 1.0)}


def test_expand_without_axes_is_one_cell_per_seed_and_labels_are_file_name_safe():
    assert [c.name for c in expand([], [0, 1])] == ["seed0", "seed1"]
    assert [label_of(v) for v in ("a b/c", 0.5, -1.0, True, [0, 3], {"f": 2, "m": 5})] == \
        ["a-b-c", "0.5", "-1.0", "true", "0-3", "f-2_m-5"]
    axis = Axis("k", (("x", {"a": 1}), ("y", {"a": 2, "b": 3})))
    assert axis.keys == ["a", "b"]


def test_an_invalid_cell_fails_the_whole_sweep_up_front_naming_every_problem(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "run", lambda *a, **k: pytest.fail("a cell was started"))
    config = write_config(tmp_path, '[sweep]\nseeds = 2\n"strategy.name" = ["fedavg", "nosuchrule"]\n'
                                    '"clients.lr" = [3e-4, -1.0]\n')
    out = tmp_path / "out"
    assert main(["sweep", config, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0] == "fedsim: invalid config:"
    assert len(lines) == 3, lines  # each problem once, with the cells that have it
    lr = next(line for line in lines if line.strip().startswith("clients.lr=-1.0"))
    assert lr.endswith("[4 of 8 cells: fedavg__-1.0__seed7, fedavg__-1.0__seed8, nosuchrule__-1.0__seed7 "
                       "and 1 more]"), lr
    # a field error hides the later checks of its cell: the rule is reported by the others
    rule = next(line for line in lines if "nosuchrule" in line and "strategy" in line)
    assert rule.endswith("[2 of 8 cells: nosuchrule__0.0003__seed7, nosuchrule__0.0003__seed8]"), rule
    assert not out.exists()


@pytest.mark.parametrize("sweep, expect", [
    ('[sweep]\n"seed" = [1, 2]\n', "seeds = K"),
    ('[sweep]\nseeds = 0\n"strategy.name" = ["fedavg"]\n', "sweep.seeds=0"),
    ('[sweep]\n"strategy.name" = "fedavg"\n', "expected a list of values"),
    ('[sweep]\n"strategy.name" = ["a b", "a/b"]\n', "same label twice"),
    ('[sweep]\n"strategy.name" = ["fedavg"]\n[sweep.defense.x]\n"strategy.name" = "median"\n', "both set"),
])
def test_a_malformed_grid_exits_2(tmp_path, capsys, sweep, expect):
    assert main(["sweep", write_config(tmp_path, sweep), "--out", str(tmp_path / "out")]) == 2
    assert expect in capsys.readouterr().err


def test_set_on_a_swept_key_is_refused(tmp_path, capsys):
    config = write_config(tmp_path, '[sweep]\n"strategy.name" = ["fedavg", "median"]\n')
    assert main(["sweep", config, "--set", "strategy.name='krum'", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "sets a key the sweep varies ('strategy.name'); drop one of them" in err
    assert "run one cell with `fedsim run CONFIG --set ...`" in err


def test_run_takes_the_base_config_of_a_sweep_file_and_says_so(tmp_path, capsys, monkeypatch):
    seen = []
    monkeypatch.setattr(runner, "run", lambda cfg, *a, **k: seen.append(cfg) or {"status": "completed"})
    config = write_config(tmp_path, '[sweep]\n"strategy.name" = ["fedavg", "median"]\n')
    assert main(["run", config, "--out", str(tmp_path / "run")]) == 0
    assert [c.strategy.name for c in seen] == ["fedavg"]
    assert "the [sweep] table of" in capsys.readouterr().err
    assert load_config(config).rounds == 2


# ---- fake runs: run directories written by hand, no training -------------------------------

def fake_rounds(ca: float, asr: float, rounds: int = 2) -> list[dict]:
    """Rounds ending at (ca, asr); detection rates only when the rule is not fedavg."""
    return [{"round": r, "clean_accuracy": ca - 0.1 * (rounds - r), "attack_success_rate": asr * r / rounds,
             "tpr": 0.5, "fpr": 0.25} for r in range(1, rounds + 1)]


def write_run(path: Path, cfg, ca: float, asr: float, status: str = "completed") -> None:
    d = RunDirectory(path)
    d.write_config(cfg.to_toml())
    rounds = fake_rounds(ca, asr) if status == "completed" else fake_rounds(ca, asr)[:1]
    for r in rounds:
        d.append_round(r)
    d.write_summary(summarize(rounds, initial={"clean_accuracy": 0.3, "attack_success_rate": 0.05}, wall_s=3.0,
                              extra={"name": cfg.name, "seed": cfg.seed, "status": status,
                                     **({"error": "boom"} if status != "completed" else {})}))


# (rule, byzantine attack) → final (CA, ASR) of seeds 0, 1, 2
NUMBERS = {
    ("fedavg", "none"): [(0.70, 0.90), (0.74, 0.80), (0.72, 0.40)],
    ("fedavg", "lie"): [(0.50, 0.00), (0.60, 0.10), (0.40, 0.20)],
    ("median", "none"): [(0.75, 0.10), (0.77, 0.20), (0.76, 0.60)],
    ("median", "lie"): [(0.70, 0.05), (0.80, 0.05), (0.90, 0.05)],
}


@pytest.fixture
def fake_runs(tmp_path):
    """12 run directories: rule × (no attack | LIE, data poisoning off with it) × 3 seeds;
    the (median, lie) seed 2 run failed."""
    root = tmp_path / "runs"
    for (rule, byz), per_seed in NUMBERS.items():
        for seed, (ca, asr) in enumerate(per_seed):
            overrides = [f"strategy.name='{rule}'", f"attack.byzantine.name='{byz}'",
                         f"attack.data.enabled={'false' if byz == 'lie' else 'true'}", f"seed={seed}",
                         f"name='{rule}-{byz}-{seed}'"]
            failed = (rule, byz, seed) == ("median", "lie", 2)
            write_run(root / f"{rule}-{byz}-{seed}", load_config(None, overrides), ca, asr,
                      "failed" if failed else "completed")
    return root


def test_report_infers_the_axes_and_computes_mean_and_sample_std_over_seeds(fake_runs, capsys):
    assert main(["report", str(fake_runs)]) == 0
    md = (fake_runs / "results.md").read_text()
    # two axes recovered from the configs: the attack keys change together (one axis), then the rule
    attack_none, attack_lie = "data.enabled=true,byzantine.name=none", "data.enabled=false,byzantine.name=lie"
    asr = md.split("## final ASR")[1].split("##")[0]
    assert "| attack \\ strategy.name | fedavg | median |" in asr
    # fedavg/none ASR 0.9, 0.8, 0.4: mean 0.7, sample std sqrt(((.2)²+(.1)²+(.3)²)/2) = 0.2646
    assert f"| {attack_none} | 0.700 ± 0.265 | 0.300 ± 0.265 |" in asr
    # median/lie: seed 2 failed, so the mean of 2 of 3 (0.05, 0.05: std 0)
    assert f"| {attack_lie} | 0.100 ± 0.100 | 0.050 ± 0.000 (2 of 3) |" in asr
    ca = md.split("## final CA")[1].split("##")[0]
    assert f"| {attack_none} | 0.720 ± 0.020 | 0.760 ± 0.010 |" in ca
    assert f"| {attack_lie} | 0.500 ± 0.100 | 0.750 ± 0.071 (2 of 3) |" in ca
    expected = statistics.stdev([0.70, 0.80])
    assert f"{expected:.3f}" == "0.071"
    for name in ("heatmap_asr.png", "heatmap_ca.png", "curves_asr.png", "curves_ca.png"):
        assert (fake_runs / name).read_bytes()[:8] == PNG, name


def test_results_csv_has_one_row_per_run_with_every_swept_key(fake_runs):
    assert main(["report", str(fake_runs)]) == 0
    with (fake_runs / "results.csv").open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == [
        "attack", "strategy.name", "attack.data.enabled", "attack.byzantine.name", "seed", "status",
        "final_asr", "max_asr", "final_ca", "mean_tpr", "mean_fpr", "wall_s", "run_dir", "error"]
    assert len(rows) == 12
    row = next(r for r in rows if r["run_dir"].endswith("fedavg-none-1"))
    assert (row["strategy.name"], row["attack.byzantine.name"], row["seed"], row["status"]) == \
        ("fedavg", "none", "1", "completed")
    assert (float(row["final_asr"]), float(row["final_ca"]), float(row["mean_tpr"])) == (0.8, 0.74, 0.5)
    failed = next(r for r in rows if r["run_dir"].endswith("median-lie-2"))
    assert (failed["status"], failed["error"]) == ("failed", "boom")


def test_report_of_a_list_of_run_dirs_needs_out_and_ignores_set_aside_folders(fake_runs, tmp_path, capsys):
    dirs = [str(fake_runs / "fedavg-none-0"), str(fake_runs / "median-none-0")]
    assert main(["report", *dirs]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["report", *dirs, "--out", str(tmp_path / "two")]) == 0
    md = (tmp_path / "two" / "results.md").read_text()
    assert "| runs \\ strategy.name | fedavg | median |" in md  # one axis: the rule
    assert (tmp_path / "two" / "heatmap_ca.png").read_bytes()[:8] == PNG
    (fake_runs / "fedavg-none-0").rename(fake_runs / "fedavg-none-0.failed-1")
    assert main(["report", str(fake_runs)]) == 0
    with (fake_runs / "results.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 11


def test_infer_axes_groups_keys_that_change_together():
    configs = [{"a.x": 1, "a.y": "p", "b": 1, "seed": s, "name": str(s)} for s in (0, 1)] + \
              [{"a.x": 2, "a.y": "q", "b": 1, "seed": s, "name": "z"} for s in (0, 1)]
    [axis] = infer_axes(configs)
    assert axis.name == "a" and [label for label, _ in axis.values] == ["x=1,y=p", "x=2,y=q"]


# ---- sweeps over a fake runner --------------------------------------------------------------

class FakeRunner:
    """``runner.run`` writing a fake run directory (numbers from the cell), failing for the
    cells in ``fail``; counts the runs started."""

    def __init__(self, fail=()):
        self.fail, self.started, self.addresses = set(fail), [], []

    def __call__(self, cfg, run_dir, *, log=None, verbose=False, ray_address=None):
        self.started.append(cfg.name)
        self.addresses.append(ray_address)
        log(f"fedsim: {cfg.name} → {run_dir.path}")
        if any(cfg.name.endswith(name) for name in self.fail):
            raise RuntimeError(f"cell {cfg.name} broke")
        ca, asr = 0.5 + 0.1 * (cfg.strategy.name == "median") + 0.01 * cfg.seed, 0.2 * cfg.attack.data.enabled
        rounds = fake_rounds(ca, asr, cfg.rounds)
        for r in rounds:
            run_dir.append_round(r)
            log(f"round {r['round']:2d}  CA {r['clean_accuracy']:.3f}")
        summary = summarize(rounds, initial=None, wall_s=1.0,
                            extra={"name": cfg.name, "seed": cfg.seed, "status": "completed"})
        run_dir.write_summary(summary)
        return summary


def test_a_failing_cell_is_recorded_and_the_sweep_goes_on(tmp_path, capsys, monkeypatch):
    fake = FakeRunner(fail=["fedavg__lie__seed7"])
    monkeypatch.setattr(runner, "run", fake)
    config = write_config(tmp_path, '[sweep]\n"strategy.name" = ["fedavg", "median"]\n' + ATTACKS)
    out = tmp_path / "out"
    assert main(["sweep", config, "--out", str(out)]) == 1
    assert len(fake.started) == 4  # the failing cell was the second; the others still ran
    captured = capsys.readouterr()
    assert "[2/4] fedavg__lie__seed7: ran: failed: RuntimeError: cell grid-fedavg__lie__seed7 broke\n" in captured.out
    assert "[3/4] median__patch__seed7: ran: CA 0.670  ASR 0.200\n" in captured.out
    assert "1 failed: fedavg__lie__seed7" in captured.err
    status = [json.loads(line) for line in (out / "sweep.jsonl").read_text().splitlines()]
    assert [(s["cell"], s["status"]) for s in status] == [
        ("fedavg__patch__seed7", "completed"), ("fedavg__lie__seed7", "failed"),
        ("median__patch__seed7", "completed"), ("median__lie__seed7", "completed")]
    assert status[1]["error"] == "RuntimeError: cell grid-fedavg__lie__seed7 broke"
    with (out / "results.csv").open() as f:
        rows = {Path(r["run_dir"]).name: r for r in csv.DictReader(f)}
    assert len(rows) == 4
    assert rows["fedavg__lie__seed7"]["status"] == "failed"
    assert rows["fedavg__lie__seed7"]["error"] == "RuntimeError: cell grid-fedavg__lie__seed7 broke"
    assert (rows["median__lie__seed7"]["strategy.name"], rows["median__lie__seed7"]["attack"]) == ("median", "lie")
    assert "round  2  CA" in (out / "sweep.log").read_text()
    asr = (out / "results.md").read_text().split("## final ASR")[1].split("##")[0]
    assert "| strategy.name \\ attack | patch | lie |" in asr
    assert "| fedavg | 0.200 | none completed |" in asr and "| median | 0.200 | 0.000 |" in asr
    for name in ("heatmap_asr.png", "heatmap_ca.png", "curves_asr.png", "curves_ca.png"):
        assert (out / name).read_bytes()[:8] == PNG


def test_a_rerun_skips_completed_cells_resumes_resumable_ones_and_sets_others_aside(tmp_path, monkeypatch):
    config = write_config(tmp_path, '[sweep]\nseeds = 2\n"strategy.name" = ["fedavg", "median"]\n')
    out = tmp_path / "out"
    first = FakeRunner(fail=["median__seed8"])
    monkeypatch.setattr(runner, "run", first)
    assert main(["sweep", config, "--out", str(out)]) == 1
    assert len(first.started) == 4

    # an interrupted run holding a checkpoint: resumable
    (out / "fedavg__seed8" / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    resumed = []

    def resume(run_dir, *, log=None, ray_address=None):
        resumed.append(Path(run_dir).name)
        assert ray_address == "127.0.0.1:6002"  # the second sweep's cluster
        summary = {**json.loads((Path(run_dir) / "summary.json").read_text()), "status": "completed",
                   "clean_accuracy": 0.5, "attack_success_rate": 0.1}
        RunDirectory(run_dir).write_summary(summary)
        return summary

    monkeypatch.setattr(runner, "resumable", lambda d: Path(d).name == "fedavg__seed8", raising=False)
    monkeypatch.setattr(runner, "resume", resume, raising=False)
    second = FakeRunner()
    monkeypatch.setattr(runner, "run", second)
    assert main(["sweep", config, "--out", str(out)]) == 0
    assert second.started == ["grid-median__seed8"] and resumed == ["fedavg__seed8"]
    # the failed cell's folder is kept aside, never deleted
    aside = out / "median__seed8.failed-1"
    assert json.loads((aside / "summary.json").read_text())["status"] == "failed"
    assert json.loads((out / "median__seed8" / "summary.json").read_text())["status"] == "completed"

    third = FakeRunner()
    monkeypatch.setattr(runner, "run", third)
    monkeypatch.setattr(runner, "resumable", lambda d: pytest.fail("a completed cell was checked"), raising=False)
    assert main(["sweep", config, "--out", str(out)]) == 0
    assert third.started == []
    with (out / "results.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 4  # the set-aside folder is not a result


def test_the_cells_that_run_share_one_cluster_ended_with_the_sweep(tmp_path, fake_cluster, monkeypatch):
    fake = FakeRunner(fail=["fedavg__lie__seed7"])
    monkeypatch.setattr(runner, "run", fake)
    config = write_config(tmp_path, '[sweep]\n"strategy.name" = ["fedavg", "median"]\n' + ATTACKS)
    out = tmp_path / "out"
    seen = []
    monkeypatch.setattr(ray_session, "end_leftover_session", lambda d: seen.append(d))
    assert main(["sweep", config, "--out", str(out)]) == 1
    # one cluster with the cells' CPUs, every run on it (a failed one too), ended at the end
    assert fake_cluster.started == [2] and fake.addresses == ["127.0.0.1:6001"] * 4
    assert fake_cluster.ended == [f"{ray_session.RAY_PREFIX}0"] and not (out / ray_session.RAY_SESSION).exists()
    assert seen == [out]  # what a killed sweep left running is ended first
    # every cell completed before (the failed one aside): nothing runs, no cluster starts
    for name in ("fedavg__lie__seed7",):
        RunDirectory(out / name).write_summary({"status": "completed", "clean_accuracy": 0.5,
                                                "attack_success_rate": 0.0})
    assert main(["sweep", config, "--out", str(out)]) == 0
    assert fake_cluster.started == [2] and len(fake.started) == 4


def test_the_cluster_is_named_in_the_sweep_folder_while_it_lives(tmp_path, fake_cluster, monkeypatch):
    out = tmp_path / "out"
    named = []

    def run(cfg, run_dir, *, log=None, ray_address=None):
        named.append((out / ray_session.RAY_SESSION).read_text())
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run", run)
    config = write_config(tmp_path, '[sweep]\n"strategy.name" = ["fedavg", "median"]\n')
    assert main(["sweep", config, "--out", str(out)]) == 130
    assert named == [str(tmp_path / f"{ray_session.RAY_PREFIX}0")]
    assert fake_cluster.ended == [f"{ray_session.RAY_PREFIX}0"]  # Ctrl-C ends it too


@pytest.mark.parametrize("extra, why", [
    ('"resources.ray_address" = ["127.0.0.1:7000"]\n"strategy.name" = ["fedavg", "median"]\n', "own cluster"),
    ('"resources.total_cpus" = [1, 2]\n', "different CPUs"),
    ("seeds = 1\n", "a single cell"),
])
def test_no_shared_cluster_when_cells_name_their_own_differ_in_cpus_or_are_alone(
        tmp_path, fake_cluster, monkeypatch, extra, why):
    fake = FakeRunner()
    monkeypatch.setattr(runner, "run", fake)
    config = write_config(tmp_path, "[sweep]\n" + extra)
    assert main(["sweep", config, "--out", str(tmp_path / "out")]) == 0, why
    assert fake_cluster.started == [] and set(fake.addresses) == {None}, why


def test_a_cluster_that_fails_to_start_leaves_each_run_its_own_session(tmp_path, monkeypatch):
    def broken(cpus):
        raise subprocess.CalledProcessError(1, ["ray", "start"])

    monkeypatch.setattr(ray_session, "start_cluster", broken)
    fake = FakeRunner()
    monkeypatch.setattr(runner, "run", fake)
    out = tmp_path / "out"
    assert main(["sweep", write_config(tmp_path, '[sweep]\nseeds = 2\n'), "--out", str(out)]) == 0
    assert fake.addresses == [None, None]
    assert "no shared Ray cluster (CalledProcessError" in (out / "sweep.log").read_text()


@pytest.mark.parametrize("text", ['{"status": "comp', '["completed"]'])
def test_a_cell_whose_summary_was_cut_short_is_set_aside_and_run_again(tmp_path, monkeypatch, text):
    monkeypatch.setattr(runner, "run", FakeRunner())
    config = write_config(tmp_path, "[sweep]\nseeds = 2\n")
    out = tmp_path / "out"
    assert main(["sweep", config, "--out", str(out)]) == 0
    (out / "seed7" / "summary.json").write_text(text)
    again = FakeRunner()
    monkeypatch.setattr(runner, "run", again)
    assert main(["sweep", config, "--out", str(out)]) == 0
    assert again.started == ["grid-seed7"]
    assert (out / "seed7.failed-1" / "summary.json").read_text() == text


def test_a_rerun_reads_older_cell_configs_with_the_defaults_of_fields_added_since(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "run", FakeRunner())
    config = write_config(tmp_path, '[sweep]\n"strategy.name" = ["fedavg", "median"]\n')
    out = tmp_path / "out"
    assert main(["sweep", config, "--out", str(out)]) == 0
    written = out / "fedavg__seed7" / "config.toml"
    older = tomllib.loads(written.read_text())
    del older["faults"], older["objective"]  # as a fedsim without them wrote it
    written.write_text(tomli_w.dumps(older))
    monkeypatch.setattr(runner, "run", lambda *a, **k: pytest.fail("a completed cell was run again"))
    assert main(["sweep", config, "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("skipped, completed before") == 2
    written.write_text("rounds = [")  # no config of any version
    assert main(["sweep", config, "--out", str(out)]) == 2
    assert "fedavg__seed7 holds a run of a different config" in capsys.readouterr().err


def test_results_label_each_run_as_its_cell_was_run_not_by_the_first_matching_value(tmp_path, monkeypatch):
    # "roclip" sets as many keys as "fedavg" and its runs hold fedavg's settings too (a tie a
    # config cannot break); a run that wrote a learned BadCLIP-like pattern into its config
    # matches no value of its axis at all.
    class LearnsAPattern(FakeRunner):
        def __call__(self, cfg, run_dir, **kw):
            summary = super().__call__(cfg, run_dir, **kw)
            config = tomllib.loads((run_dir.path / "config.toml").read_text())
            config["attack"]["data"]["trigger"]["params"]["pattern"] = [[[0.5]]]
            (run_dir.path / "config.toml").write_text(tomli_w.dumps(config))
            return summary

    monkeypatch.setattr(runner, "run", LearnsAPattern())
    config = write_config(tmp_path, """
[sweep.defense.fedavg]
"strategy.name" = "fedavg"
"strategy.params" = {}
[sweep.defense.roclip]
"strategy.name" = "fedavg"
"clients.training" = "roclip"
""")
    out = tmp_path / "out"
    assert main(["sweep", config, "--out", str(out)]) == 0
    with (out / "results.csv").open() as f:
        rows = {Path(r["run_dir"]).name: r["defense"] for r in csv.DictReader(f)}
    assert rows == {"fedavg__seed7": "fedavg", "roclip__seed7": "roclip"}
    assert "| roclip |" in (out / "results.md").read_text()
    # fedsim report of the same folder gives the same labels
    assert main(["report", str(out), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "results.csv").read_text() == (out / "results.csv").read_text()


def test_a_rerun_with_a_changed_config_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "run", FakeRunner())
    config = write_config(tmp_path, '[sweep]\n"strategy.name" = ["fedavg", "median"]\n')
    out = tmp_path / "out"
    assert main(["sweep", config, "--out", str(out)]) == 0
    monkeypatch.setattr(runner, "run", lambda *a, **k: pytest.fail("a cell was started"))
    assert main(["sweep", config, "--out", str(out), "--set", "rounds=3"]) == 2
    assert "holds a run of a different config" in capsys.readouterr().err


# ---- cells side by side (--jobs): the pool's scheduling over worker threads ---------------

IN_PROCESS = ["--set", "resources.engine='inprocess'"]


class ThreadWorker:
    """``sweep._Worker`` as a thread of this process running the same ``_run_and_report``, so
    the fake ``runner.run`` is seen and the pool's scheduling, messages, records and Ctrl-C
    steps are those of the real workers. ``crash``: cells whose worker dies without a word."""

    crash: set = set()

    def __init__(self, conn, execute, path, cfg, threads):
        self.interrupts, self.killed, self.exitcode = 0, False, None
        self.stop = threading.Event()  # what a Ctrl-C sets in a real run
        conn = Connection(os.dup(conn.fileno()), readable=False)  # its own, as a child's (the pool closes its)
        self.thread = threading.Thread(target=self._main, args=(conn, execute, path, cfg), daemon=True)
        self.thread.stop = self.stop
        self.thread.start()

    def _main(self, conn, execute, path, cfg):
        if path.name in self.crash:
            conn.close()
            self.exitcode = -9
            return
        sweep._run_and_report(conn, execute, path, cfg)
        self.exitcode = 0

    def interrupt(self):
        self.interrupts += 1
        self.stop.set()

    def kill(self):
        self.killed = True

    def join(self):
        self.thread.join(10)
        assert not self.thread.is_alive()


class Overlapping(FakeRunner):
    """FakeRunner whose runs last a moment, counting how many are in flight at once; a run
    that gets ``stop`` set (Ctrl-C) writes an interrupted summary and raises KeyboardInterrupt,
    as ``runner.run`` does; ``ctrl_c``: cells that press Ctrl-C once ``ctrl_c_when`` runs
    have begun."""

    def __init__(self, fail=(), ctrl_c=(), ctrl_c_when=1):
        super().__init__(fail)
        self.ctrl_c, self.ctrl_c_when, self.lock = set(ctrl_c), ctrl_c_when, threading.Lock()
        self.begun, self.now, self.most = 0, 0, 0

    def __call__(self, cfg, run_dir, **kw):
        with self.lock:
            self.begun, self.now = self.begun + 1, self.now + 1
            self.most = max(self.most, self.now)
        try:
            if any(cfg.name.endswith(name) for name in self.ctrl_c):
                for _ in range(500):
                    if self.begun >= self.ctrl_c_when:
                        break
                    time.sleep(0.01)
                os.kill(os.getpid(), signal.SIGINT)
            stop = getattr(threading.current_thread(), "stop", threading.Event())  # none: in this thread
            if stop.wait(0.5):
                run_dir.write_config(cfg.to_toml())
                run_dir.write_summary({"name": cfg.name, "status": "interrupted", "error": "stopped by the user"})
                raise KeyboardInterrupt
            return super().__call__(cfg, run_dir, **kw)
        finally:
            with self.lock:
                self.now -= 1


@pytest.fixture
def threads(monkeypatch):
    workers = []

    class Recorded(ThreadWorker):
        def __init__(self, *args):
            super().__init__(*args)
            workers.append(self)

    monkeypatch.setattr(sweep, "_Worker", Recorded)
    monkeypatch.setattr(ThreadWorker, "crash", set())
    return workers


def test_jobs_run_cells_side_by_side_each_once_and_a_failing_or_dying_cell_does_not_stop_the_others(
        tmp_path, capsys, monkeypatch, threads):
    fake = Overlapping(fail=["fedavg__lie__seed7"])
    monkeypatch.setattr(runner, "run", fake)
    ThreadWorker.crash = {"median__patch__seed7"}
    config = write_config(tmp_path, '[sweep]\n"strategy.name" = ["fedavg", "median"]\n' + ATTACKS)
    out = tmp_path / "out"
    assert main(["sweep", config, "--out", str(out), "--jobs", "2", *IN_PROCESS]) == 1
    cells = ["fedavg__patch__seed7", "fedavg__lie__seed7", "median__patch__seed7", "median__lie__seed7"]
    # each cell in a worker of its own, two at a time, once (the dead one never got to run)
    assert len(threads) == 4 and fake.most == 2
    assert sorted(fake.started) == sorted(f"grid-{c}" for c in cells if c != "median__patch__seed7")
    captured = capsys.readouterr()
    assert "up to 2 at a time" in captured.out
    lines = [line for line in captured.out.splitlines() if line.startswith("[")]
    assert sorted(line.split("]")[0] for line in lines) == ["[1/4", "[2/4", "[3/4", "[4/4"]
    assert any(re.fullmatch(r"\[\d/4\] fedavg__patch__seed7: ran: CA 0\.570  ASR 0\.200  \(\d+ s\)", line)
               for line in lines), lines
    assert any("fedavg__lie__seed7: ran: failed: RuntimeError: cell grid-fedavg__lie__seed7 broke" in line
               for line in lines)
    assert "2 failed: fedavg__lie__seed7, median__patch__seed7" in captured.err
    status = {s["cell"]: s for s in map(json.loads, (out / "sweep.jsonl").read_text().splitlines())}
    assert {c: s["status"] for c, s in status.items()} == {
        "fedavg__patch__seed7": "completed", "fedavg__lie__seed7": "failed",
        "median__patch__seed7": "failed", "median__lie__seed7": "completed"}
    assert status["median__patch__seed7"]["error"] == "its worker process ended with exit code -9"
    with (out / "results.csv").open() as f:
        rows = {Path(r["run_dir"]).name: r for r in csv.DictReader(f)}
    assert set(rows) == set(cells)
    assert rows["median__patch__seed7"]["error"] == "its worker process ended with exit code -9"
    assert float(rows["median__lie__seed7"]["final_ca"]) == pytest.approx(0.67)
    # the runs' progress lines, each after its cell's name
    log = (out / "sweep.log").read_text()
    assert "median__lie__seed7: round  2  CA 0.670" in log and "fedavg__patch__seed7: round  1" in log

    # a re-run starts the two that did not complete and no worker for the others
    again = Overlapping()
    monkeypatch.setattr(runner, "run", again)
    ThreadWorker.crash = set()
    threads.clear()
    assert main(["sweep", config, "--out", str(out), "--jobs", "2", *IN_PROCESS]) == 0
    assert sorted(again.started) == ["grid-fedavg__lie__seed7", "grid-median__patch__seed7"]
    assert len(threads) == 2
    assert capsys.readouterr().out.count("skipped, completed before") == 2


def test_ctrl_c_interrupts_every_running_cell_starts_no_other_and_keeps_what_finished(
        tmp_path, capsys, monkeypatch, threads):
    fake = Overlapping(ctrl_c=["-median__seed7"], ctrl_c_when=4)  # once the fourth has begun
    monkeypatch.setattr(runner, "run", fake)
    config = write_config(tmp_path, '[sweep]\nseeds = 2\n"strategy.name" = ["fedavg", "median", "geometric_median"]\n')
    out = tmp_path / "out"
    assert main(["sweep", config, "--out", str(out), "--jobs", "2", *IN_PROCESS]) == 130
    assert "finished cells are kept" in capsys.readouterr().err
    # two cells completed, then Ctrl-C in the third: it and the fourth were told once, none
    # was killed, no other started, and no worker is left
    assert len(threads) == 4 and [w.interrupts for w in threads] == [0, 0, 1, 1]
    assert not any(w.killed or w.thread.is_alive() for w in threads)
    status = [json.loads(line) for line in (out / "sweep.jsonl").read_text().splitlines()]
    assert sorted((s["cell"], s["status"], s["action"]) for s in status) == [
        ("fedavg__seed7", "completed", "ran"), ("fedavg__seed8", "completed", "ran"),
        ("median__seed7", "interrupted", "stopped by the user"),
        ("median__seed8", "interrupted", "stopped by the user")]
    for cell in ("median__seed7", "median__seed8"):
        assert json.loads((out / cell / "summary.json").read_text())["status"] == "interrupted"
    with (out / "results.csv").open() as f:  # what finished is tabulated
        assert sorted((Path(r["run_dir"]).name, r["status"]) for r in csv.DictReader(f)) == [
            ("fedavg__seed7", "completed"), ("fedavg__seed8", "completed"),
            ("median__seed7", "interrupted"), ("median__seed8", "interrupted")]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    # the same command runs the rest, the interrupted ones afresh (no checkpoint: set aside)
    again = Overlapping()
    monkeypatch.setattr(runner, "run", again)
    assert main(["sweep", config, "--out", str(out), "--jobs", "2", *IN_PROCESS]) == 0
    assert sorted(again.started) == ["grid-geometric_median__seed7", "grid-geometric_median__seed8",
                                    "grid-median__seed7", "grid-median__seed8"]
    assert (out / "median__seed7.failed-1").is_dir()


def test_a_worker_that_does_not_end_is_told_again_then_killed(tmp_path, monkeypatch, threads):
    class Stubborn(Overlapping):
        def __call__(self, cfg, run_dir, **kw):
            # Ctrl-C only once both cells have begun: pressed by the first at once, it could
            # reach the sweep before it started the second (seen on a loaded 2-core CI run)
            with self.lock:
                self.begun += 1
            for _ in range(500):
                if self.begun >= 2:
                    break
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGINT)
            threading.current_thread().stop.wait(5)  # deaf to the first Ctrl-C...
            time.sleep(1.5)  # ...and the second
            raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run", Stubborn())
    monkeypatch.setattr(sweep, "GRACE_S", 0.05)
    monkeypatch.setattr(sweep, "KILL_S", 0.05)
    config = write_config(tmp_path, "[sweep]\nseeds = 2\n")
    assert main(["sweep", config, "--out", str(tmp_path / "out"), "--jobs", "2", *IN_PROCESS]) == 130
    assert [(w.interrupts, w.killed) for w in threads] == [(2, True), (2, True)]


def test_cells_on_ray_run_one_after_another_on_the_shared_cluster_whatever_jobs_says(
        tmp_path, fake_cluster, monkeypatch):
    monkeypatch.setattr(sweep, "_Worker", lambda *a: pytest.fail("a cell on Ray got a worker"))
    fake = FakeRunner()
    monkeypatch.setattr(runner, "run", fake)
    config = write_config(tmp_path, '[sweep]\n"strategy.name" = ["fedavg", "median"]\n')  # BASE: engine = "ray"
    assert main(["sweep", config, "--out", str(tmp_path / "out"), "--jobs", "2"]) == 0
    assert fake_cluster.started == [2] and fake.addresses == ["127.0.0.1:6001"] * 2


def test_in_a_mixed_sweep_the_in_process_cells_run_side_by_side_then_those_on_ray_one_by_one(
        tmp_path, capsys, monkeypatch, threads):
    fake = Overlapping()
    monkeypatch.setattr(runner, "run", fake)
    config = write_config(tmp_path, '[sweep]\nseeds = 2\n"resources.engine" = ["ray", "inprocess"]\n')
    assert main(["sweep", config, "--out", str(tmp_path / "out"), "--jobs", "2"]) == 0
    assert len(threads) == 2 and fake.most == 2
    assert fake.started[2:] == ["grid-ray__seed7", "grid-ray__seed8"]
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert [line.split(":")[0] for line in lines[2:]] == ["[3/4] ray__seed7", "[4/4] ray__seed8"]


def test_default_jobs_fill_the_cores_and_a_cell_server_gets_its_share_unless_its_config_names_it(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ray_session, "available_cpus", lambda: 8)
    cfgs = [load_config(None, [f"resources.client_threads={t}", f"resources.engine='{e}'"])
            for t, e in ((1, "inprocess"), (2, "inprocess"), (1, "inprocess"), (1, "ray"))]
    assert sweep.default_jobs(cfgs) == 3  # 8 cores // 2 threads a client = 4, but 3 in-process cells
    assert sweep.default_jobs(cfgs[:1] * 20) == 8
    assert sweep.default_jobs(cfgs[3:]) == 1  # Ray's cells: one at a time
    assert sweep.server_threads(cfgs[0], 3) == 2 and sweep.server_threads(cfgs[0], 16) == 1
    assert sweep.server_threads(load_config(None, ["resources.client_cpus=2.5"]), 16) == 3
    assert sweep.server_threads(load_config(None, ["resources.total_cpus=2"]), 3) is None
    config = write_config(tmp_path, "[sweep]\nseeds = 2\n")
    assert main(["sweep", config, "--jobs", "0"]) == 2
    assert "--jobs 0: expected an integer ≥ 1" in capsys.readouterr().err


CONTRASTIVE_DEFENSES = {"cleanclip", "roclip", "adversarial", "eminspector"}


def test_the_sweep_configs_of_the_repository_cross_every_defense_with_its_configs_settings():
    root = Path(__file__).resolve().parents[2]
    p = plan(root / "configs" / "sweeps" / "defense-vs-attack.toml")
    contrastive = plan(root / "configs" / "sweeps" / "contrastive-defenses.toml")
    defenses = {f.stem for f in (root / "configs" / "defenses").glob("*.toml")}
    rules = defenses - CONTRASTIVE_DEFENSES
    assert {c.labels["defense"] for c, _ in p.cells} == rules | {"fedavg"}
    assert len(p.cells) == len(rules | {"fedavg"}) * 8 * 3
    assert {c.labels["defense"] for c, _ in contrastive.cells} == CONTRASTIVE_DEFENSES | {"fedavg"}
    by_label = {c.labels["defense"]: cfg for c, cfg in [*p.cells, *contrastive.cells]}
    for name in defenses:  # the same rule, parameters and training mode as configs/defenses
        own = load_config(root / "configs" / "defenses" / f"{name}.toml")
        assert by_label[name].strategy == own.strategy, name
        assert by_label[name].clients.training == own.clients.training, name
        assert by_label[name].defense == own.defense, name
    attacks = {c.labels["attack"]: cfg.attack for c, cfg in p.cells}
    assert attacks["lie"].byzantine.name == "lie" and not attacks["lie"].data.enabled
    assert attacks["model_replacement"].update.name == "model_replacement"
    assert attacks["badnet"].data.enabled and attacks["badnet"].update.name == "none"
    # the power check's no-attack column and the norm-bounded backdoors (issue #22)
    assert not attacks["none"].enabled
    assert attacks["pgd"].update.pgd_eps == 2.0 and attacks["pgd"].data.enabled
    assert attacks["neurotoxin"].update.name == "neurotoxin" and attacks["neurotoxin"].update.pgd_eps == 2.0
    assert attacks["badnet"].update.pgd_eps is None and attacks["model_replacement"].update.pgd_eps is None
    assert attacks["model_replacement"].start_round == p.cells[0][1].rounds
    # the powered norm-bounded value: 4 attackers, eps 3; the others keep the quickstart's 2
    assert attacks["pgd4"].malicious == [0, 1, 2, 3] and attacks["pgd4"].update.pgd_eps == 3.0
    assert attacks["pgd4"].data.enabled and attacks["pgd4"].update.name == "none"
    assert attacks["neurotoxin4"].malicious == [0, 1, 2, 3] and attacks["neurotoxin4"].update.pgd_eps == 3.0
    assert attacks["neurotoxin4"].update.name == "neurotoxin" and attacks["neurotoxin4"].data.enabled
    assert all(a.malicious == [0, 1] for label, a in attacks.items() if label not in {"pgd4", "neurotoxin4"})


# ---- end to end: real runs through Flower -------------------------------------------------

TINY = ["rounds=1", "data.train_size=200", "data.test_size=100", "model.init='scratch'", "clients.num=2",
        "clients.per_round=2", "attack.malicious=[0]", "resources.total_cpus=2", "resources.engine='ray'"]


@pytest.mark.slow
def test_a_real_sweep_of_eight_runs_then_a_rerun_that_skips_them_all(tmp_path, capsys, monkeypatch):
    root = Path(__file__).resolve().parents[2]
    config = tmp_path / "grid.toml"
    config.write_text(f'extends = "{root / "configs" / "quickstart.toml"}"\n' + ATTACKS)
    out = tmp_path / "out"
    argv = ["sweep", str(config), "--out", str(out), "--grid", "strategy.name=['fedavg', 'median']",
            "--seeds", "2", *(a for item in TINY for a in ("--set", item))]
    clusters = []
    start = ray_session.start_cluster
    monkeypatch.setattr(ray_session, "start_cluster", lambda cpus: clusters.append(start(cpus)) or clusters[-1])
    assert main(argv) == 0, capsys.readouterr()
    # the cells shared one Ray cluster, gone with the sweep
    [(folder, address)] = clusters
    assert ray_session.session_processes(folder) == [] and not folder.exists()
    assert not (out / ray_session.RAY_SESSION).exists()
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {r["status"] for r in rows} == {"completed"}
    # a cell's numbers are those of the same run on a Ray session of its own
    alone = runner.run(runner.load(out / "lie__median__seed1" / "config.toml"), tmp_path / "alone", log=lambda m: None)
    assert alone["status"] == "completed"

    def numbers(run):
        rounds = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
        return [(r["clean_accuracy"], r["attack_success_rate"], r["update_norms"]) for r in rounds]

    assert numbers(tmp_path / "alone") == numbers(out / "lie__median__seed1")
    assert {(r["strategy.name"], r["attack"], r["seed"]) for r in rows} == {
        (rule, attack, seed) for rule in ("fedavg", "median") for attack in ("patch", "lie") for seed in "01"}
    for r in rows:
        for column in ("final_asr", "max_asr", "final_ca", "wall_s"):
            assert math.isfinite(float(r[column])), (column, r)
    assert "| fedavg |" in (out / "results.md").read_text()
    for name in ("heatmap_asr.png", "heatmap_ca.png", "curves_asr.png", "curves_ca.png"):
        assert (out / name).read_bytes()[:8] == PNG
    capsys.readouterr()

    monkeypatch.setattr(runner, "run", lambda *a, **k: pytest.fail("a finished cell was run again"))
    assert main(argv) == 0
    assert capsys.readouterr().out.count("skipped, completed before") == 8


@pytest.mark.slow
def test_cells_side_by_side_give_each_cell_the_numbers_of_the_same_run_alone(tmp_path, capsys, monkeypatch):
    import psutil

    root = Path(__file__).resolve().parents[2]
    config = tmp_path / "grid.toml"
    config.write_text(f'extends = "{root / "configs" / "quickstart.toml"}"\n' + ATTACKS)
    out = tmp_path / "out"
    tiny = [item for item in TINY if not item.startswith("resources.engine")]  # the default: in-process
    pids = []

    class Recorded(sweep._Worker):
        def __init__(self, *args):
            super().__init__(*args)
            pids.append(self.process.pid)

    monkeypatch.setattr(sweep, "_Worker", Recorded)
    argv = ["sweep", str(config), "--out", str(out), "--grid", "strategy.name=['fedavg', 'median']", "--jobs", "2",
            *(a for item in tiny for a in ("--set", item))]
    assert main(argv) == 0, capsys.readouterr()
    assert len(pids) == 4 and not any(psutil.pid_exists(pid) for pid in pids)  # a worker per cell, all gone
    me = psutil.Process()
    assert [p for p in me.children(recursive=True) if p.ppid() != me.pid] == []  # nothing the fork server forked

    def numbers(run):
        rounds = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in rounds]

    cells = sorted(d for d in out.iterdir() if (d / "rounds.jsonl").is_file())
    assert len(cells) == 4
    for cell in cells:
        alone = runner.run(runner.load(cell / "config.toml"), tmp_path / "alone" / cell.name, log=lambda m: None)
        assert alone["status"] == "completed"
        assert numbers(tmp_path / "alone" / cell.name) == numbers(cell), cell.name
        side = json.loads((cell / "summary.json").read_text())
        assert {k: side[k] for k in side if k.startswith("initial")} == \
            {k: alone[k] for k in alone if k.startswith("initial")}, cell.name


@pytest.mark.parametrize("jobs, expect", [([], ["fork server", "plan"]), (["--jobs", "2"], ["fork server", "plan"]),
                                          (["--jobs", "1"], ["plan"])])
def test_the_workers_fork_server_starts_before_the_cells_are_planned_unless_one_job_is_asked(
        tmp_path, monkeypatch, jobs, expect):
    # plan imports fedsim.runner (the registries' checks) and so does the fork server the
    # workers come from: started first, its import runs beside plan's instead of after it
    seen = []
    real_plan = sweep.plan
    monkeypatch.setattr(sweep, "start_worker_server", lambda: seen.append("fork server"))
    monkeypatch.setattr(sweep, "plan", lambda *a, **k: (seen.append("plan"), real_plan(*a, **k))[1])
    monkeypatch.setattr(sweep, "run_plan", lambda *a, **k: [])
    assert main(["sweep", write_config(tmp_path, "[sweep]\nseeds = 2\n"), "--out", str(tmp_path / "out"), *jobs]) == 0
    assert seen == expect
