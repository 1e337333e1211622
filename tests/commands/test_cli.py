"""Exit codes and run outcomes: 2 for anything wrong before the start (nothing started), 1 for
a run that failed or never aggregated, and a run directory that is never appended to."""

import importlib
import json
from pathlib import Path

import pytest

from fedsim import runner
from fedsim.cli import main
from fedsim.config import ConfigError, load_config
from fedsim.report import RunDirectory

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "configs" / "quickstart.toml")


@pytest.fixture
def no_start(monkeypatch):
    """A run that would start is a test failure (and never a simulation)."""
    monkeypatch.setattr(runner, "run", lambda *a, **k: pytest.fail("the run was started"))


@pytest.mark.parametrize(
    "overrides, expect",
    [
        (["clients.num=50", "data.partition='dirichlet'", "data.alpha=0.001", "data.train_size=200"],
         ["data.alpha=0.001", "clients.num=50", "data.train_size=200"]),
        (["resources.client_cpus=4", "resources.total_cpus=2"], ["resources.client_cpus=4.0", "2 CPUs"]),
        (["seed=100000000000000", "strategy.name='flame'"], ["seed: 100000000000000", "2**32"]),
        (["rounds='3'"], ["rounds='3'", "valid integer"]),
        (["attack.enabled=1"], ["attack.enabled=1", "valid boolean"]),
    ],
)
def test_config_errors_exit_2_before_anything_starts(tmp_path, capsys, no_start, overrides, expect):
    out = tmp_path / "run"
    argv = ["run", QUICKSTART, "--out", str(out)]
    for item in overrides:
        argv += ["--set", item]
    assert main(argv) == 2
    err = capsys.readouterr().err
    for fragment in expect:
        assert fragment in err, (fragment, err)
    assert not out.exists()


def test_unwritable_out_exits_2_with_one_line(tmp_path, capsys, no_start):
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "run"
    assert main(["run", QUICKSTART, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fedsim: --out {str(out)!r} cannot be created") and err.count("\n") == 1, err


def _rounds(run_dir, skipped):
    for r, reason in enumerate(skipped, start=1):
        run_dir.append_round({"round": r, "clean_accuracy": 0.1, "attack_success_rate": 0.0,
                              **({"skipped": reason} if reason else {})})


def test_a_run_in_which_no_round_aggregated_failed(tmp_path):
    from fedsim.app import finish

    cfg = load_config(None, ["rounds=2"])
    none = RunDirectory(tmp_path / "none")
    _rounds(none, ["no valid replies", "no valid replies"])
    s = finish(none, cfg, initial=None, wall_s=1.0)
    assert s["status"] == "failed" and s["aggregated_rounds"] == 0
    assert s["error"] == "no round aggregated (every round skipped: no valid replies)"
    assert json.loads((none.path / "summary.json").read_text())["status"] == "failed"
    some = RunDirectory(tmp_path / "some")
    _rounds(some, [None, "precondition: n > 2f + 2"])
    s = finish(some, cfg, initial=None, wall_s=1.0)
    assert (s["status"], s["aggregated_rounds"], s["skipped_rounds"]) == ("completed", 1, [2])
    assert "| aggregated_rounds | 1 |" in (some.path / "summary.md").read_text()


def test_cli_exits_1_when_no_round_aggregated(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "run", lambda *a, **k: {"status": "failed", "error": "no round aggregated"})
    assert main(["run", QUICKSTART, "--out", str(tmp_path / "run")]) == 1
    assert "run failed: no round aggregated" in capsys.readouterr().err


def test_flwr_run_refuses_a_non_empty_out(tmp_path, monkeypatch):
    from flwr.app import Context, RecordDict

    # the module: the package's attribute of that name is the ServerApp it defines
    server = importlib.import_module("fedsim.app.server_app")
    monkeypatch.setattr(server, "run_server", lambda *a, **k: pytest.fail("the run was started"))
    out = tmp_path / "flwr"
    out.mkdir()
    (out / "rounds.jsonl").write_text('{"round": 1}\n')
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                      run_config={"config": QUICKSTART, "out": str(out)})
    class TenNodes:  # the quickstart's 10 SuperNodes (checked before the out folder)
        def get_node_ids(self):
            return range(10)

    with pytest.raises(ConfigError, match="run config out: .* already exists and is not empty"):
        server._flwr_run_main(TenNodes(), context)
    assert (out / "rounds.jsonl").read_text() == '{"round": 1}\n'
    assert not (out / "config.toml").exists()


@pytest.fixture
def no_ray(monkeypatch, no_start):
    """Neither a run nor Ray itself may start."""
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray was started"))


def test_validate_reports_every_problem_at_once(capsys, no_ray):
    argv = ["validate", QUICKSTART, "--set", "strategy.params={bogus=1}",
            "--set", "attack.data.trigger.params={size=0}", "--set", "resources.client_cpus=64",
            "--set", "resources.total_cpus=2"]
    assert main(argv) == 2
    problems = capsys.readouterr().err.splitlines()
    assert problems[0] == "fedsim: invalid config:" and len(problems) == 4, problems
    assert "strategy.params.bogus: fedavg has no parameter 'bogus'; allowed: none" in problems[1]
    assert problems[2].startswith("  attack.data.trigger: badnet size=0")
    assert problems[3].startswith("  resources.client_cpus=64.0 exceeds the 2 CPUs") and "allowed" in problems[3]


def test_validate_lists_every_field_error(capsys, no_ray):
    assert main(["validate", QUICKSTART, "--set", "rounds=0", "--set", "clients.lr=-1", "--set", "bogus=2"]) == 2
    problems = capsys.readouterr().err.splitlines()[1:]
    assert [p.split("=")[0].split(":")[0].strip() for p in problems] == ["rounds", "clients.lr", "bogus"]


def test_validate_a_good_config_exits_0_with_one_line(capsys, no_ray):
    assert main(["validate", QUICKSTART, "--set", "strategy.name='krum'", "--set", "strategy.params={f=2}",
                 "--set", "attack.update.name='model_replacement'", "--set", "attack.update.params={gamma=5}"]) == 0
    out = capsys.readouterr().out
    assert out == ("ok: quickstart, 10 rounds, 10 clients, rule krum(f=2), "
                   "attack badnet poison + model_replacement by clients [0, 1]\n"), out


def test_list_shows_every_registered_name(capsys):
    import typing

    from clients.attacks import BYZANTINE, SCHEDULES, TRIGGERS
    from fedsim.config import DataAttackConfig, UpdateAttackConfig
    from fedsim.data import DATASETS
    from fedsim.models import TINY_MODELS
    from strategies import RULES

    assert main(["list"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("  ") and line[2] != " "}
    literals = {*typing.get_args(DataAttackConfig.model_fields["mode"].annotation),
                *typing.get_args(UpdateAttackConfig.model_fields["name"].annotation)} - {"none"}
    expected = {*RULES, *TRIGGERS, "badclip", *BYZANTINE, *SCHEDULES, *DATASETS, "shapes", *TINY_MODELS,
                *literals, "pgd_eps"}
    assert expected <= listed, expected - listed


def test_list_reads_the_registries(capsys, monkeypatch):
    from strategies import RULES

    def fake_rule(updates, *, weights=None):
        """Fake rule (Nobody et al., "A Rule Nobody Wrote", NeurIPS 2099): keeps everything."""

    monkeypatch.setitem(RULES, "fake_rule", fake_rule)
    assert main(["list", "rules"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("rules: strategy.name\n") and "triggers:" not in out
    line = next(line for line in out.splitlines() if line.split()[:1] == ["fake_rule"])
    assert line.split(None, 1)[1].startswith('Fake rule (Nobody et al., "A Rule Nobody Wrote"')


def test_list_line_is_the_sentence_that_cites_the_paper():
    from clients.attacks import BYZANTINE, poison
    from fedsim.catalog import summary
    from strategies import RULES

    # fedavg's function docstring cites nothing: its module's does
    assert summary(RULES["fedavg"]) == ('FedAvg (McMahan et al., "Communication-Efficient Learning of Deep '
                                        'Networks from Decentralized Data", AISTATS 2017)')
    assert summary(BYZANTINE["fang"]).startswith('Fang et al. ("Local Model Poisoning Attacks')
    # the paper is in poison's second paragraph; "Name (paper): details" is cut after the paper
    assert summary(poison) == ('Patch + target caption (Carlini & Terzis, "Poisoning and Backdooring '
                               'Contrastive Learning", ICLR 2022)')


def test_list_shows_each_entrys_parameters_with_defaults_and_which_are_required(capsys, monkeypatch):
    from fedsim.catalog import params_of
    from strategies import RULES

    def fake_rule(updates, *, weights=None, f, m=None, history, generator=None):
        """Fake rule (Nobody et al., NeurIPS 2099)."""

    assert params_of(fake_rule) == " [params: f (required), m = None]"  # history, generator: fedsim's inputs
    assert params_of(RULES["fedavg"]) == " [no params]"
    assert params_of(RULES["centered_clipping"]) == " [params: tau (required), L = 1]"
    assert params_of(lambda size=4, seed=0: None, keyword_only=False) == " [params: size = 4, seed = 0]"
    assert params_of(fake_rule, defaults={"f": "auto"}) == " [params: f = 'auto', m = None]"
    monkeypatch.setitem(RULES, "fake_rule", fake_rule)
    assert main(["list", "rules"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "fake_rule Fake rule (Nobody et al., NeurIPS 2099) [params: f (required), m = None]" in text
    assert main(["list", "attacks"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "[params: gamma = 'auto']" in text and "lie LIE" in text and "[params: z = None]" in text


# ---- the console script's exit (fedsim.cli.entry) -------------------------------------------
def _entry(argv: list[str], before: str = "") -> "subprocess.CompletedProcess":
    import subprocess
    import sys

    code = (f"import atexit, sys, threading, time\n{before}\n"
            "atexit.register(lambda: print('atexit ran', flush=True))\n"
            f"sys.argv = ['fedsim', *{argv!r}]\n"
            "from fedsim.cli import entry\nentry()\nprint('not reached')\n")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_command_exits_with_mains_status_its_output_whole_and_its_atexit_handlers_run():
    done = _entry(["list", "rules"])
    assert done.returncode == 0, done.stderr
    assert "fedavg" in done.stdout and "multi_krum" in done.stdout
    assert done.stdout.endswith("atexit ran\n")  # after everything main printed; nothing after entry
    bad = _entry(["validate", "no-such-config.toml"])
    assert bad.returncode == 2
    assert "no-such-config.toml" in bad.stderr and bad.stdout == "atexit ran\n"


def test_a_thread_still_running_when_the_command_ends_is_waited_for():
    late = ("def late():\n    time.sleep(1.0)\n    print('thread done', flush=True)\n"
            "threading.Thread(target=late).start()")
    done = _entry(["list", "rules"], before=late)
    assert done.returncode == 0, done.stderr
    assert "thread done\n" in done.stdout and done.stdout.endswith("atexit ran\n")


def test_the_workers_fork_server_is_ended_at_once_and_a_later_sweep_starts_another():
    import os
    from multiprocessing import forkserver

    from fedsim.sweep_run import start_worker_server, stop_worker_server

    start_worker_server()
    pid = forkserver._forkserver._forkserver_pid
    assert pid is not None
    stop_worker_server()
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(pid, 0)
    assert forkserver._forkserver._forkserver_pid is None
    stop_worker_server()  # none running: nothing to do
    start_worker_server()
    assert forkserver._forkserver._forkserver_pid not in (None, pid)
