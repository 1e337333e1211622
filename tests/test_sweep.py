"""``fedsim sweep`` and ``fedsim report``: the grid (order, seeds, several keys per value,
names), validation of every cell before any starts, failures recorded without stopping the
sweep, re-runs that skip, resume or set aside, and the tables and figures checked against
numbers computed by hand from run directories written here."""

import csv
import json
import math
import statistics
import subprocess
import tomllib
from pathlib import Path

import pytest
import tomli_w

from fedsim import runner
from fedsim.cli import main
from fedsim.config import load_config
from fedsim.grid import Axis, expand, infer_axes, label_of
from fedsim.report import RunDirectory, summarize
from fedsim.sweep import plan

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
    """``runner.start_cluster`` and ``runner.end_ray`` for the sweeps with fake runs: records
    what was started and ended, starts nothing."""

    def __init__(self, tmp_path):
        self.started, self.ended, self.tmp = [], [], tmp_path

    def start(self, cpus):
        folder = self.tmp / f"{runner.RAY_PREFIX}{len(self.started)}"
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
        monkeypatch.setattr(runner, "start_cluster", cluster.start)
        monkeypatch.setattr(runner, "end_ray", cluster.end)
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
    assert "sets a key the sweep varies ('strategy.name')" in capsys.readouterr().err


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
    assert f"| attack \\ strategy.name | fedavg | median |" in asr
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
    monkeypatch.setattr(runner, "end_leftover_session", lambda d: seen.append(d))
    assert main(["sweep", config, "--out", str(out)]) == 1
    # one cluster with the cells' CPUs, every run on it (a failed one too), ended at the end
    assert fake_cluster.started == [2] and fake.addresses == ["127.0.0.1:6001"] * 4
    assert fake_cluster.ended == [f"{runner.RAY_PREFIX}0"] and not (out / runner.RAY_SESSION).exists()
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
        named.append((out / runner.RAY_SESSION).read_text())
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run", run)
    config = write_config(tmp_path, '[sweep]\n"strategy.name" = ["fedavg", "median"]\n')
    assert main(["sweep", config, "--out", str(out)]) == 130
    assert named == [str(tmp_path / f"{runner.RAY_PREFIX}0")]
    assert fake_cluster.ended == [f"{runner.RAY_PREFIX}0"]  # Ctrl-C ends it too


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

    monkeypatch.setattr(runner, "start_cluster", broken)
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


CONTRASTIVE_DEFENSES = {"cleanclip", "roclip", "adversarial", "eminspector"}


def test_the_sweep_configs_of_the_repository_cross_every_defense_with_its_configs_settings():
    root = Path(__file__).resolve().parent.parent
    p = plan(root / "configs" / "sweeps" / "defense-vs-attack.toml")
    contrastive = plan(root / "configs" / "sweeps" / "contrastive-defenses.toml")
    defenses = {f.stem for f in (root / "configs" / "defenses").glob("*.toml")}
    rules = defenses - CONTRASTIVE_DEFENSES
    assert {c.labels["defense"] for c, _ in p.cells} == rules | {"fedavg"}
    assert len(p.cells) == len(rules | {"fedavg"}) * 3 * 3
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


# ---- end to end: real runs through Flower -------------------------------------------------

TINY = ["rounds=1", "data.train_size=200", "data.test_size=100", "model.init='scratch'", "clients.num=2",
        "clients.per_round=2", "attack.malicious=[0]", "resources.total_cpus=2", "resources.engine='ray'"]


@pytest.mark.slow
def test_a_real_sweep_of_eight_runs_then_a_rerun_that_skips_them_all(tmp_path, capsys, monkeypatch):
    root = Path(__file__).resolve().parent.parent
    config = tmp_path / "grid.toml"
    config.write_text(f'extends = "{root / "configs" / "quickstart.toml"}"\n' + ATTACKS)
    out = tmp_path / "out"
    argv = ["sweep", str(config), "--out", str(out), "--grid", "strategy.name=['fedavg', 'median']",
            "--seeds", "2", *(a for item in TINY for a in ("--set", item))]
    clusters = []
    start = runner.start_cluster
    monkeypatch.setattr(runner, "start_cluster", lambda cpus: clusters.append(start(cpus)) or clusters[-1])
    assert main(argv) == 0, capsys.readouterr()
    # the cells shared one Ray cluster, gone with the sweep
    [(folder, address)] = clusters
    assert runner.session_processes(folder) == [] and not folder.exists()
    assert not (out / runner.RAY_SESSION).exists()
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
