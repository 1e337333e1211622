"""fedsim.power: the power check of a grid (issue #22), on hand-written runs whose verdicts
are computed by hand from the rule: backdoor ASR ≥ 0.8 under FedAvg, an untargeted attack
lowers FedAvg's CA by ≥ 0.10, the attack-free FedAvg run keeps CA ≥ initial − 0.03."""

from __future__ import annotations

import json

import pytest

from fedsim import power
from fedsim.cli import main
from fedsim.config import load_config
from tests.test_sweep import write_run

FEDAVG = {"strategy.name": "fedavg", "clients.training": "standard", "defense.cleanclip.enabled": False}
NO_ATTACK = {**FEDAVG, "attack.enabled": False}
BADNET = {**FEDAVG, "attack.enabled": True, "attack.malicious": [0, 1], "attack.data.enabled": True}
LIE = {**BADNET, "attack.data.enabled": False, "attack.byzantine.name": "lie"}


def s(ca: float, asr: float = 0.0, initial_ca: float = 0.70, status: str = "completed") -> dict:
    return {"clean_accuracy": ca, "attack_success_rate": asr, "initial_clean_accuracy": initial_ca,
            "status": status}


def by_scenario(verdicts):
    return {v.scenario: v for v in verdicts}


def test_a_planted_backdoor_and_a_kept_accuracy_are_powered():
    # ASR mean (0.9 + 0.75) / 2 = 0.825 ≥ 0.8; the clean run: CA mean 0.68 ≥ 0.70 − 0.03
    verdicts = power.check([("none", NO_ATTACK, s(0.69)), ("none", NO_ATTACK, s(0.67)),
                            ("badnet", BADNET, s(0.60, 0.90)), ("badnet", BADNET, s(0.60, 0.75))])
    v = by_scenario(verdicts)
    assert [x.scenario for x in verdicts] == ["no attack", "badnet"]
    assert v["no attack"].powered is True and v["badnet"].powered is True
    assert "0.825 (2 seeds)" in v["badnet"].measured
    assert power.powered(verdicts)


@pytest.mark.parametrize("asrs, expected", [((0.8, 0.8), True), ((0.79, 0.80), False), ((0.2, 1.0), False)])
def test_the_backdoor_threshold_is_the_mean_over_seeds_at_least_0_8(asrs, expected):
    runs = [("none", NO_ATTACK, s(0.70))] + [("b", BADNET, s(0.6, a)) for a in asrs]
    assert by_scenario(power.check(runs))["b"].powered is expected


def test_losing_more_than_0_03_without_an_attack_is_not_powered():
    # mean CA 0.665 < 0.70 − 0.03 = 0.67: a grid whose clean run degrades cannot be read
    verdicts = power.check([("none", NO_ATTACK, s(0.66)), ("none", NO_ATTACK, s(0.67)),
                            ("badnet", BADNET, s(0.6, 0.95))])
    assert by_scenario(verdicts)["no attack"].powered is False
    assert not power.powered(verdicts)
    assert power.check([("none", NO_ATTACK, s(0.67))])[0].powered is True  # exactly at the bound


def test_an_untargeted_attack_is_shown_by_a_ca_drop_of_0_10_below_the_attack_free_run():
    clean = [("none", NO_ATTACK, s(0.72, initial_ca=0.70))]
    # 0.72 − 0.63 = 0.09 < 0.10: not shown, whatever its ASR
    v = by_scenario(power.check(clean + [("lie", LIE, s(0.63, asr=0.99))]))["lie"]
    assert v.kind == "untargeted" and v.powered is False
    assert by_scenario(power.check(clean + [("lie", LIE, s(0.62))]))["lie"].powered is True
    # without an attack-free run the initial model's CA is the reference (0.70 − 0.62 = 0.08)
    v = by_scenario(power.check([("lie", LIE, s(0.62, initial_ca=0.70))]))["lie"]
    assert v.powered is False and "initial" in v.measured


def test_only_the_fedavg_baseline_is_read():
    median = {**BADNET, "strategy.name": "median"}
    cleanclip = {**BADNET, "defense.cleanclip.enabled": True}
    roclip = {**BADNET, "clients.training": "roclip"}
    runs = [("none", NO_ATTACK, s(0.70)), ("badnet", BADNET, s(0.6, 0.1)),
            ("badnet", median, s(0.6, 0.99)), ("badnet", cleanclip, s(0.6, 0.99)), ("badnet", roclip, s(0.6, 0.99))]
    assert by_scenario(power.check(runs))["badnet"].powered is False
    assert [power.is_baseline(c) for c in (BADNET, median, cleanclip, roclip)] == [True, False, False, False]


def test_failed_and_missing_runs_cannot_be_checked_and_are_not_powered():
    verdicts = power.check([("badnet", BADNET, s(0.6, 0.99, status="failed"))])
    assert [v.powered for v in verdicts] == [None, None]
    assert not power.powered(verdicts)
    assert not power.powered([])
    # a failed seed does not count: the completed one decides
    verdicts = power.check([("none", NO_ATTACK, s(0.70)), ("badnet", BADNET, s(0.6, 0.1, status="failed")),
                            ("badnet", BADNET, s(0.6, 0.9))])
    assert by_scenario(verdicts)["badnet"].powered is True


def test_markdown_states_the_rule_and_each_verdict():
    md = power.markdown(power.check([("none", NO_ATTACK, s(0.70)), ("badnet", BADNET, s(0.6, 0.5))]))
    assert md.startswith("## Power check")
    assert "**NOT powered**" in md and "- badnet (backdoor): final ASR 0.500 (1 seeds); needs ASR ≥ 0.8 — NOT powered" in md


# ---- through `fedsim report`: the section in results.md and the warning ---------------------

def _grid(root, asr: float) -> None:
    for name, overrides, ca, a in [
        ("fedavg-none", ["attack.enabled=false"], 0.71, 0.05),
        ("fedavg-badnet", [], 0.70, asr),
        ("median-badnet", ["strategy.name='median'"], 0.70, 0.05),
    ]:
        cfg = load_config(None, [*overrides, f"name='{name}'"])
        write_run(root / name, cfg, ca, a)


def test_report_warns_when_the_baseline_does_not_show_the_backdoor(tmp_path, capsys):
    _grid(tmp_path / "runs", asr=0.30)
    assert main(["report", str(tmp_path / "runs")]) == 0
    err = capsys.readouterr().err
    assert "not powered" in err and "badnet" in err
    md = (tmp_path / "runs" / "results.md").read_text()
    assert "## Power check" in md and "**NOT powered**" in md


def test_report_of_a_powered_grid_says_so_without_a_warning(tmp_path, capsys):
    _grid(tmp_path / "runs", asr=0.90)
    assert main(["report", str(tmp_path / "runs")]) == 0
    assert "not powered" not in capsys.readouterr().err
    md = (tmp_path / "runs" / "results.md").read_text()
    assert "**Powered**" in md
    # the scenario names come from the non-defense axis the configs show
    summary = json.loads((tmp_path / "runs" / "fedavg-badnet" / "summary.json").read_text())
    assert summary["attack_success_rate"] == pytest.approx(0.90)
