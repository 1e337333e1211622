"""fedsim.power: the power check of a grid (issue #22), on hand-written runs whose verdicts
are computed by hand from the rule: backdoor ASR ≥ 0.8 under FedAvg, an untargeted attack
lowers FedAvg's CA by ≥ 0.10, the attack-free FedAvg run keeps CA ≥ initial − 0.03."""

from __future__ import annotations

import json

import pytest

from fedsim import power
from fedsim.cli import main
from fedsim.config import load_config
from tests.commands.test_sweep import write_run

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


def test_write_results_can_leave_the_warning_out_but_keeps_the_section(tmp_path, capsys):
    from fedsim.results import write_results

    _grid(tmp_path / "runs", asr=0.30)
    write_results([tmp_path / "runs"], tmp_path / "runs", power_warning=False)
    assert "not powered" not in capsys.readouterr().err
    assert "**NOT powered**" in (tmp_path / "runs" / "results.md").read_text()


def test_report_of_a_powered_grid_says_so_without_a_warning(tmp_path, capsys):
    _grid(tmp_path / "runs", asr=0.90)
    assert main(["report", str(tmp_path / "runs")]) == 0
    assert "not powered" not in capsys.readouterr().err
    md = (tmp_path / "runs" / "results.md").read_text()
    assert "**Powered**" in md
    # the scenario names come from the non-defense axis the configs show
    summary = json.loads((tmp_path / "runs" / "fedavg-badnet" / "summary.json").read_text())
    assert summary["attack_success_rate"] == pytest.approx(0.90)


# ---- every verdict in full: the exact words results.md and the warning show ----------------

def test_every_verdict_of_a_mixed_grid_in_full():
    # no attack: CA (0.70 + 0.66) / 2 = 0.68 vs initial 0.70 (≥ 0.67: kept)
    # badnet: ASR (0.9 + 0.8) / 2 = 0.85; lie: CA 0.55, 0.68 − 0.55 = 0.13 below the clean run
    runs = [("none", NO_ATTACK, s(0.70)), ("none", NO_ATTACK, s(0.66)),
            ("badnet", BADNET, s(0.6, 0.9)), ("lie", LIE, s(0.55)), ("badnet", BADNET, s(0.6, 0.8))]
    assert power.check(runs) == [
        power.Verdict("no attack", "no attack", "final CA 0.680 vs initial 0.700 (2 seeds)",
                      "CA ≥ initial − 0.03", True),
        power.Verdict("badnet", "backdoor", "final ASR 0.850 (2 seeds)", "ASR ≥ 0.8", True),
        power.Verdict("lie", "untargeted", "final CA 0.550, +0.130 below the no-attack run's 0.680 (1 seeds)",
                      "a CA drop ≥ 0.10", True),
    ]


def test_verdicts_that_cannot_be_checked_in_full():
    runs = [("badnet", BADNET, s(0.6, 0.9, status="failed")), ("lie", LIE, s(0.5, status="interrupted"))]
    assert power.check(runs) == [
        power.Verdict("no attack", "no attack", "no completed attack-free FedAvg run", "CA ≥ initial − 0.03", None),
        power.Verdict("badnet", "backdoor", "no completed FedAvg run", "ASR ≥ 0.8", None),
        power.Verdict("lie", "untargeted", "no completed FedAvg run", "a CA drop ≥ 0.10", None),
    ]


def test_an_untargeted_attack_without_a_clean_run_is_measured_against_the_initial_model():
    # initial CA (0.80 + 0.70) / 2 = 0.75, final (0.60 + 0.64) / 2 = 0.62: 0.13 below
    [clean, lie] = power.check([("lie", LIE, s(0.60, initial_ca=0.80)), ("lie", LIE, s(0.64, initial_ca=0.70))])
    assert clean.powered is None
    assert lie == power.Verdict("lie", "untargeted",
                                "final CA 0.620, +0.130 below the initial model's 0.750 (2 seeds)",
                                "a CA drop ≥ 0.10", True)


def test_an_untargeted_attack_that_raises_ca_shows_a_negative_drop():
    [_, lie] = power.check([("none", NO_ATTACK, s(0.60)), ("lie", LIE, s(0.65))])
    assert lie.measured == "final CA 0.650, -0.050 below the no-attack run's 0.600 (1 seeds)"
    assert lie.powered is False


def test_a_clean_run_without_an_initial_ca_cannot_be_checked_but_still_is_the_reference():
    no_initial = {"clean_accuracy": 0.70, "attack_success_rate": 0.0, "status": "completed"}
    [clean, lie] = power.check([("none", NO_ATTACK, no_initial), ("lie", LIE, s(0.58, initial_ca=0.9))])
    assert clean.powered is None and clean.measured == "no completed attack-free FedAvg run"
    # 0.70 − 0.58 = 0.12 below the clean run (not the initial model's 0.9)
    assert lie.measured == "final CA 0.580, +0.120 below the no-attack run's 0.700 (1 seeds)"
    assert lie.powered is True


def test_an_untargeted_attack_without_any_reference_cannot_be_checked():
    no_initial = {"clean_accuracy": 0.5, "status": "completed"}
    [_, lie] = power.check([("lie", LIE, no_initial)])
    assert lie == power.Verdict("lie", "untargeted", "no completed FedAvg run", "a CA drop ≥ 0.10", None)


def test_missing_or_non_numeric_values_are_left_out_of_the_mean():
    # ASR None and "n/a" do not count: the mean is that of 0.9 alone
    runs = [("none", NO_ATTACK, s(0.70)),
            ("b", BADNET, {**s(0.6), "attack_success_rate": None}),
            ("b", BADNET, {**s(0.6), "attack_success_rate": "n/a"}),
            ("b", BADNET, s(0.6, 0.9))]
    assert by_scenario(power.check(runs))["b"].measured == "final ASR 0.900 (3 seeds)"
    # an integer counts
    runs = [("none", NO_ATTACK, s(0.70)), ("b", BADNET, {**s(0.6), "attack_success_rate": 1}),
            ("b", BADNET, s(0.6, 0.7))]
    assert by_scenario(power.check(runs))["b"].measured == "final ASR 0.850 (2 seeds)"
    # a backdoor whose completed runs recorded no ASR cannot be checked
    [_, b] = power.check([("none", NO_ATTACK, s(0.70)), ("b", BADNET, {**s(0.6), "attack_success_rate": None})])
    assert (b.measured, b.powered) == ("no completed FedAvg run", None)


def test_the_no_attack_bound_is_inclusive_and_lossless():
    # 0.67 ≥ 0.70 − 0.03 (within float rounding), 0.6699 is not
    assert power.check([("none", NO_ATTACK, s(0.67))])[0].powered is True
    assert power.check([("none", NO_ATTACK, s(0.6699))])[0].powered is False
    # 0.27 − 0.03 is 0.24000000000000002 in floats: a CA of 0.24 is at the bound all the same
    assert power.check([("none", NO_ATTACK, s(0.24, initial_ca=0.27))])[0].powered is True
    assert power.check([("none", NO_ATTACK, s(0.95, initial_ca=0.3))])[0].powered is True


def test_the_untargeted_bound_is_inclusive():
    # 0.72 − 0.62 = 0.0999…98 in floats: still a drop of 0.10
    assert by_scenario(power.check([("none", NO_ATTACK, s(0.72)), ("lie", LIE, s(0.62))]))["lie"].powered is True
    assert by_scenario(power.check([("none", NO_ATTACK, s(0.72)), ("lie", LIE, s(0.621))]))["lie"].powered is False
    assert by_scenario(power.check([("none", NO_ATTACK, s(0.72)), ("lie", LIE, s(0.0))]))["lie"].powered is True


def test_the_float_tolerance_itself_is_inside_the_bounds():
    # a drop of exactly 0.10 − 1e-12 (0.5 − 0.400000000001 in floats) still counts
    drop = by_scenario(power.check([("none", NO_ATTACK, s(0.5)), ("lie", LIE, s(0.5 - (0.1 - 1e-12)))]))["lie"]
    assert drop.powered is True
    # a clean CA of exactly initial − 0.03 − 1e-12 still keeps it
    assert power.check([("none", NO_ATTACK, s(0.7 - 0.03 - 1e-12, initial_ca=0.7))])[0].powered is True


def test_the_backdoor_bound_is_inclusive():
    assert by_scenario(power.check([("b", BADNET, s(0.6, 0.8))]))["b"].powered is True
    assert by_scenario(power.check([("b", BADNET, s(0.6, 0.7999))]))["b"].powered is False
    assert by_scenario(power.check([("b", BADNET, s(0.6, 1.0))]))["b"].powered is True


def test_the_defaults_of_a_config_that_leaves_keys_out():
    # a config as small as possible: FedAvg, attack on (its defaults), data poisoning on
    assert power.is_baseline({"strategy.name": "fedavg"})
    assert not power.is_baseline({"strategy.name": "median"})
    assert not power.is_baseline({})
    assert not power.is_baseline({"strategy.name": "fedavg", "defense.cleanclip.enabled": True})
    assert power.is_baseline({"strategy.name": "fedavg", "defense.cleanclip.enabled": False})
    assert not power.is_baseline({"strategy.name": "fedavg", "clients.training": "roclip"})
    assert power.is_attacked({})
    assert not power.is_attacked({"attack.enabled": False})
    assert not power.is_attacked({"attack.malicious": []})
    assert power.is_attacked({"attack.enabled": True, "attack.malicious": [3]})
    assert power.is_backdoor({})
    assert not power.is_backdoor({"attack.data.enabled": False})
    assert power.is_backdoor({"attack.data.enabled": True})


def test_a_scenario_is_a_backdoor_or_untargeted_by_its_config_and_groups_in_first_seen_order():
    fedavg = {"strategy.name": "fedavg"}
    runs = [("z-untargeted", {**fedavg, "attack.data.enabled": False}, s(0.5)),
            ("a-backdoor", fedavg, s(0.5, 0.9)),
            ("z-untargeted", {**fedavg, "attack.data.enabled": False}, s(0.3)),
            ("clean", {**fedavg, "attack.malicious": []}, s(0.7)),
            ("median", {"strategy.name": "median"}, s(0.7, 0.0))]
    verdicts = power.check(runs)
    assert [(v.scenario, v.kind) for v in verdicts] == [
        ("no attack", "no attack"), ("z-untargeted", "untargeted"), ("a-backdoor", "backdoor")]
    # the clean run has no attacker: (0.7 − 0.4) is the mean drop of the untargeted scenario
    assert verdicts[1].measured == "final CA 0.400, +0.300 below the no-attack run's 0.700 (2 seeds)"


def test_a_verdict_text_names_its_status():
    v = power.Verdict("badnet", "backdoor", "final ASR 0.500 (1 seeds)", "ASR ≥ 0.8", False)
    assert v.text == "badnet (backdoor): final ASR 0.500 (1 seeds); needs ASR ≥ 0.8 — NOT powered"
    assert power.Verdict("x", "k", "m", "r", True).text == "x (k): m; needs r — powered"
    assert power.Verdict("x", "k", "m", "r", None).text == "x (k): m; needs r — cannot be checked"


def test_powered_needs_every_verdict_true():
    yes, no, unknown = (power.Verdict("x", "k", "m", "r", p) for p in (True, False, None))
    assert power.powered([yes, yes])
    assert not power.powered([yes, no])
    assert not power.powered([unknown, yes])
    assert not power.powered([])


def test_markdown_of_a_powered_and_of_an_unpowered_grid_in_full():
    rule = ("Rule (fedsim.power): backdoor ASR ≥ 0.8 under FedAvg; an untargeted attack lowers "
            "FedAvg's CA by ≥ 0.10; without an attack FedAvg keeps CA within 0.03 of the initial "
            "model (means over seeds).")
    yes = power.Verdict("badnet", "backdoor", "final ASR 0.900 (1 seeds)", "ASR ≥ 0.8", True)
    assert power.markdown([yes]) == (
        "## Power check\n\n" + rule + "\n\n"
        "**Powered**: the FedAvg baseline shows every attack and keeps CA without one.\n\n"
        "- badnet (backdoor): final ASR 0.900 (1 seeds); needs ASR ≥ 0.8 — powered\n")
    no = power.Verdict("none", "no attack", "m", "r", None)
    assert power.markdown([yes, no]) == (
        "## Power check\n\n" + rule + "\n\n"
        "**NOT powered**: the FedAvg baseline does not show every attack, or the attack-free "
        "run loses accuracy (or it cannot be checked): a defense's row cannot be read as "
        "stopping an attack the baseline does not show.\n\n"
        "- badnet (backdoor): final ASR 0.900 (1 seeds); needs ASR ≥ 0.8 — powered\n"
        "- none (no attack): m; needs r — cannot be checked\n")


def test_each_setting_has_its_own_no_attack_check_and_its_own_reference_for_an_untargeted_attack():
    # CLIP gains (0.58 → 0.60) and SimCLR loses (0.89 → 0.79 < 0.89 − 0.03); a third CLIP
    # seed-like run could hide it when pooled, so each setting is checked on its own.
    runs = [("none (clip)", NO_ATTACK, s(0.60, initial_ca=0.58), "clip"),
            ("none (simclr)", NO_ATTACK, s(0.79, initial_ca=0.89), "simclr"),
            # LIE under CLIP: 0.55 is 0.05 below CLIP's own no-attack 0.60 (not shown), though
            # 0.145 below the pooled 0.695
            ("lie (clip)", LIE, s(0.55, initial_ca=0.58), "clip")]
    verdicts = power.check(runs)
    assert [(v.scenario, v.powered) for v in verdicts] == [
        ("no attack (clip)", True), ("no attack (simclr)", False), ("lie (clip)", False)]
    assert verdicts[1].measured == "final CA 0.790 vs initial 0.890 (1 seeds)"
    assert verdicts[2].measured == "final CA 0.550, +0.050 below the no-attack run's 0.600 (1 seeds)"
    # a setting with no attack-free run: its untargeted attack falls back to its initial model
    v = power.check([("none (clip)", NO_ATTACK, s(0.70), "clip"), ("lie (simclr)", LIE, s(0.70, initial_ca=0.85), "simclr")])
    assert [(x.scenario, x.powered) for x in v] == [("no attack (clip)", True), ("no attack (simclr)", None),
                                                   ("lie (simclr)", True)]
    assert "below the initial model's 0.850" in v[2].measured
