"""The literature check (``fedsim.claims``, ``fedsim.claims_run``, ``fedsim claims``): the
statistic and the verdict rules on hand-computed cases, the claims file's errors, and the
wiring from a claims file to sweeps, their summaries and claims.md."""

import json
import math
import tomllib
from pathlib import Path

import pytest

from fedsim.claims import Claim, Condition, difference, markdown, parse, verdict
from fedsim.claims_run import arm_settings, collect, run_claims
from fedsim.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _claim(expect="greater", arms=("a", "b"), **kw):
    return Claim(id="c", paper="P", claim="X", config="x.toml", metric="asr", expect=expect,
                 arms={a: [] for a in arms}, **kw)


# ---- the statistic ------------------------------------------------------------------------

def test_difference_is_second_minus_first_with_the_welch_standard_error():
    # means 0.2 and 0.7; sample variances 0.01 and 0.04 over 3 seeds each
    e = difference([0.1, 0.2, 0.3], [0.5, 0.7, 0.9])
    assert e.effect == pytest.approx(0.5)
    assert e.se == pytest.approx(math.sqrt(0.01 / 3 + 0.04 / 3))
    assert e.means == pytest.approx((0.2, 0.7)) and e.ns == (3, 2 + 1)
    # unequal seed counts: each arm's own n
    e = difference([0.0, 1.0], [0.0, 0.0, 0.0, 0.0])
    assert e.effect == pytest.approx(-0.5) and e.se == pytest.approx(math.sqrt(0.5 / 2))


def test_difference_of_an_empty_arm_is_refused():
    with pytest.raises(ValueError):
        difference([], [0.1])


# ---- verdicts ---------------------------------------------------------------------------

@pytest.mark.parametrize("a, b, expect, result", [
    ([0.1, 0.2, 0.3], [0.5, 0.7, 0.9], "greater", "reproduces"),  # 0.5 ≥ 2·0.129
    ([0.1, 0.2, 0.3], [0.5, 0.7, 0.9], "less", "does not reproduce"),
    ([0.5, 0.7, 0.9], [0.1, 0.2, 0.3], "less", "reproduces"),
    ([0.1, 0.5, 0.9], [0.3, 0.6, 0.9], "greater", "inconclusive"),  # 0.133 < 2·se (0.25)
    ([0.1, 0.5, 0.9], [0.3, 0.6, 0.9], "less", "inconclusive"),  # the opposite sign but within 2·se
])
def test_a_two_arm_claim_reproduces_only_with_the_papers_sign_beyond_two_standard_errors(a, b, expect, result):
    o = verdict(_claim(expect), {"asr": {"a": a, "b": b}})
    assert o.verdict == result
    assert o.effect.effect == pytest.approx(sum(b) / 3 - sum(a) / 3)


def test_min_effect_raises_the_bar_where_seeds_agree_exactly():
    # identical seeds: se 0, so any difference beats 2·se; min_effect demands a real one
    values = {"asr": {"a": [0.50, 0.50], "b": [0.52, 0.52]}}
    assert verdict(_claim(), values).verdict == "reproduces"
    assert verdict(_claim(min_effect=0.05), values).verdict == "inconclusive"
    assert verdict(_claim(min_effect=0.01), values).verdict == "reproduces"


def test_a_monotone_claim_needs_every_step_in_the_papers_direction():
    arms = ("lo", "mid", "hi")
    up = {"asr": {"lo": [0.1, 0.1], "mid": [0.5, 0.5], "hi": [0.9, 0.9]}}
    o = verdict(_claim("increasing", arms), up)
    assert o.verdict == "reproduces" and o.effect.means == pytest.approx((0.1, 0.5, 0.9))
    bump = {"asr": {"lo": [0.1, 0.1], "mid": [0.95, 0.95], "hi": [0.9, 0.9]}}
    o = verdict(_claim("increasing", arms), bump)
    assert o.verdict == "does not reproduce (not monotone)" and "mid → hi" in o.why
    assert verdict(_claim("decreasing", arms), up).verdict == "does not reproduce"


@pytest.mark.parametrize("a, b, margin, result", [
    ([0.70, 0.72], [0.69, 0.71], 0.05, "reproduces"),  # |−0.01| + 2·0.01 = 0.03 ≤ 0.05
    ([0.70, 0.72], [0.50, 0.52], 0.05, "does not reproduce"),  # 0.20 − 0.02 > 0.05
    ([0.70, 0.72], [0.65, 0.67], 0.05, "inconclusive"),  # 0.05 ± 0.02 straddles 0.05
])
def test_a_within_claim_compares_the_interval_with_the_margin(a, b, margin, result):
    assert verdict(_claim("within", margin=margin), {"asr": {"a": a, "b": b}}).verdict == result


def test_a_failed_precondition_means_the_experiment_cannot_test_the_claim():
    need = (Condition("a", "before", 0.8, True),)
    values = {"asr": {"a": [0.9, 0.9], "b": [0.1, 0.1]}, "before": {"a": [0.3, 0.5]}}
    o = verdict(_claim("less", requires=need), values)
    assert o.verdict == "cannot at this scale" and "0.400" in o.why and o.effect is None
    values["before"]["a"] = [0.8, 0.8]  # at the bound: holds
    assert verdict(_claim("less", requires=need), values).verdict == "reproduces"
    del values["before"]
    assert verdict(_claim("less", requires=need), values).verdict == "cannot at this scale"


def test_a_failed_check_turns_a_reproduced_effect_into_does_not_reproduce():
    check = (Condition("b", "asr", 0.8, True),)
    values = {"asr": {"a": [0.1, 0.1], "b": [0.5, 0.5]}}
    o = verdict(_claim(check=check), values)
    assert o.verdict == "does not reproduce" and "fails: 0.500" in o.why
    values["asr"]["b"] = [0.85, 0.85]
    o = verdict(_claim(check=check), values)
    assert o.verdict == "reproduces" and "holds: 0.850" in o.why
    # at_most
    assert not Condition("b", "asr", 0.8, False).holds(0.81) and Condition("b", "asr", 0.8, False).holds(0.8)


def test_an_arm_with_fewer_than_two_completed_seeds_cannot_be_judged():
    o = verdict(_claim(), {"asr": {"a": [0.1, 0.2], "b": [0.9]}})
    assert o.verdict == "cannot at this scale" and "['b']" in o.why


# ---- the claims file --------------------------------------------------------------------

def test_the_shipped_claims_file_parses_with_every_claim_of_the_issue():
    claims, seeds, problems = parse(tomllib.loads((ROOT / "configs" / "claims.toml").read_text()))
    assert problems == [] and seeds >= 3
    assert {c.id for c in claims} >= {
        "poison-count", "model-replacement-one-round", "clipping-vs-pgd", "cleanclip-vs-finetuning",
        "badclip-survives-cleanclip", "badencoder-keeps-ca", "adversarial-training-keeps-patch"}
    for c in claims:
        assert (ROOT / "configs" / c.config).is_file(), c.config


@pytest.mark.parametrize("change, message", [
    ({"expect": "bigger"}, "claim[0] ('c').expect='bigger': expected one of"),
    ({"arms": {"a": []}}, "expected a table of at least two arms"),
    ({"arms": {"a": [], "b": [], "c": []}}, "expect='greater' compares exactly two arms, got 3"),
    ({"expect": "increasing"}, "needs three or more arms in order, got 2"),
    ({"arms": {"a": "x=1", "b": []}}, "arms.a='x=1': expected a list"),
    ({"requires": [{"arm": "z", "metric": "m", "at_least": 1}]}, "requires[0].arm='z': not one of the claim's arms"),
    ({"requires": [{"arm": "a", "metric": "m"}]}, "give exactly one of at_least, at_most"),
    ({"check": [{"arm": "a", "metric": "m", "at_least": float("inf")}]}, "at_least=inf: expected a finite number"),
    ({"margin": -1}, "margin=-1: expected a finite number ≥ 0"),
    ({"colour": 1}, "claim[0] ('c').colour: unknown key"),
    ({"paper": ""}, "paper='': expected a non-empty string"),
    ({"seeds": 1}, "seeds=1: expected an integer ≥ 2"),
])
def test_a_malformed_claim_names_the_claim_the_field_and_what_is_allowed(change, message):
    item = {"id": "c", "paper": "P", "claim": "X", "config": "x.toml", "metric": "asr", "expect": "greater",
            "arms": {"a": [], "b": ["clients.lr=1e-3"]}, **change}
    claims, _, problems = parse({"claim": [item]})
    assert claims == [] and any(message in p for p in problems), problems


def test_file_level_problems():
    assert parse({"claim": []})[2] == ["[[claim]]: expected at least one claim"]
    item = {"id": "c", "paper": "P", "claim": "X", "config": "x", "metric": "m", "expect": "less",
            "arms": {"a": [], "b": ["rounds=2"]}}
    _, seeds, problems = parse({"seeds": 1, "claim": [item, dict(item)]})
    assert "seeds=1: expected an integer ≥ 2 (a spread needs two seeds)" in problems
    assert any("id='c': given twice" in p for p in problems)


def test_an_arm_without_overrides_takes_the_base_value_of_a_key_another_arm_sets():
    claim = Claim("c", "P", "X", "x", "m", "less", {"plain": [], "low": ["clients.lr=1e-5", "rounds=2"]})
    settings = arm_settings(claim, {"clients": {"lr": 3e-4}, "rounds": 10})
    assert settings == {"plain": {"clients.lr": 3e-4}, "low": {"clients.lr": 1e-5, "rounds": 2}}
    # the first key with no base value is skipped for the next
    assert arm_settings(claim, {"rounds": 10})["plain"] == {"rounds": 10}
    with pytest.raises(ConfigError, match="arm 'plain' sets nothing"):
        arm_settings(claim, {})


# ---- from a claims file to claims.md ----------------------------------------------------

def test_collect_reads_completed_cells_by_arm_in_seed_order(tmp_path):
    from fedsim.grid import Cell

    claim = Claim("c", "P", "X", "x", "asr", "greater", {"a": [], "b": []},
                  requires=(Condition("a", "before", 0.5, True),))
    cells = []
    for arm, seed, status, asr in (("a", 1, "completed", 0.2), ("a", 0, "completed", 0.1), ("b", 0, "failed", 0.9),
                                   ("b", 1, "completed", 0.7)):
        cell = Cell(f"{arm}__seed{seed}", {"arm": arm}, seed, {})
        (tmp_path / cell.name).mkdir()
        (tmp_path / cell.name / "summary.json").write_text(json.dumps(
            {"status": status, "asr": asr, "before": asr + 0.5, "bool": True}))
        cells.append(cell)
    values = collect(claim, tmp_path, cells)
    assert values == {"asr": {"a": [0.1, 0.2], "b": [0.7]}, "before": {"a": [0.6, 0.7], "b": [1.2]}}


def test_run_claims_runs_each_arm_as_a_sweep_and_writes_claims_md(tmp_path, monkeypatch):
    """The sweep machinery is replaced by one that writes each cell's summary: ASR = the
    cell's attack.data.poison_rate (so the claim 'increasing' reproduces)."""
    import fedsim.sweep_run as sweep

    base = tmp_path / "base.toml"
    base.write_text('name = "b"\nrounds = 1\n[model]\ninit = "scratch"\n[data]\ntrain_size = 200\ntest_size = 100\n')
    claims = tmp_path / "claims.toml"
    claims.write_text('seeds = 2\n[[claim]]\nid = "dose"\npaper = "P 2022"\nclaim = "more poison, more ASR"\n'
                      'config = "base.toml"\nmetric = "attack_success_rate"\nexpect = "increasing"\n'
                      'arms = { low = ["attack.data.poison_rate=0.1"], mid = [], high = ["attack.data.poison_rate=0.9"] }\n'
                      '[[claim]]\nid = "other"\npaper = "Q"\nclaim = "y"\nconfig = "base.toml"\nmetric = "m"\n'
                      'expect = "less"\narms = { a = ["rounds=1"], b = ["rounds=2"] }\n')
    ran = []

    def fake_run_plan(p, out, *, config, overrides=(), jobs=None, power_warning=True):
        # a claim's arms are no defense × attack grid: no grid power warning for them
        assert power_warning is False
        ran.append((Path(out).name, [c.name for c, _ in p.cells]))
        for cell, cfg in p.cells:
            (out / cell.name).mkdir(parents=True, exist_ok=True)
            (out / cell.name / "summary.json").write_text(json.dumps(
                {"status": "completed", "attack_success_rate": cfg.attack.data.poison_rate + cell.seed / 100}))
        return []

    monkeypatch.setattr(sweep, "run_plan", fake_run_plan)
    out = tmp_path / "out"
    outcomes = run_claims(claims, out, only=["dose"], log=lambda *_: None)
    assert ran == [("dose", ["low__seed0", "low__seed1", "mid__seed0", "mid__seed1", "high__seed0", "high__seed1"])]
    # "mid" has no override: the base value of the key the others set (0.5, the default)
    assert tomllib.loads((out / "dose" / "claim.toml").read_text())["sweep"]["arm"]["mid"] == \
        {"attack.data.poison_rate": 0.5}
    [o] = outcomes
    assert o.verdict == "reproduces" and o.effect.means == pytest.approx((0.105, 0.505, 0.905))
    text = (out / "claims.md").read_text()
    assert "| more poison, more ASR | P 2022 |" in text and "**reproduces**" in text
    assert "low: 0.105 ± 0.007 (n=2)" in text and not (out / "other").exists()
    with pytest.raises(ConfigError, match="no such claim"):
        run_claims(claims, out, only=["nope"])
    # --report-only runs nothing: the same verdict from the cells on disk, "not measured" for a
    # claim with none, "incomplete" (with the verdict so far) for one with some
    monkeypatch.setattr(sweep, "run_plan", lambda *a, **k: pytest.fail("report-only ran a cell"))
    dose, other = run_claims(claims, out, report_only=True, log=lambda *_: None)
    assert (dose.verdict, other.verdict) == ("reproduces", "not measured")
    assert "none of its 4 runs has completed" in other.why
    (out / "dose" / "high__seed1" / "summary.json").unlink()
    [dose] = run_claims(claims, out, only=["dose"], report_only=True, log=lambda *_: None)
    assert dose.verdict == "incomplete" and dose.why.startswith("5 of 6 runs completed; so far: cannot at this scale")


def test_the_command_refuses_a_bad_claims_file_before_running_anything(tmp_path, capsys):
    from fedsim.cli import main

    claims = tmp_path / "claims.toml"
    claims.write_text('[[claim]]\nid = "c"\npaper = "P"\nclaim = "X"\nconfig = "missing.toml"\nmetric = "m"\n'
                      'expect = "less"\narms = { a = [], b = ["rounds=2"] }\n')
    assert main(["claims", str(claims), "--out", str(tmp_path / "out")]) == 2
    assert "config='missing.toml': no such file" in capsys.readouterr().err
    assert main(["claims", str(claims), "--seeds", "1"]) == 2
    assert "--seeds 1: expected an integer ≥ 2" in capsys.readouterr().err
    claims.write_text("not toml [")
    assert main(["claims", str(claims), "--out", str(tmp_path / "out")]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_markdown_has_one_row_per_claim_and_says_why():
    claim = _claim(setting="tiny")
    o = verdict(claim, {"asr": {"a": [0.1, 0.2], "b": [0.8, 0.9]}})
    text = markdown([o], header="Measured here.")
    assert text.startswith("# Claims from the literature, measured\n\nMeasured here.\n")
    assert "| X | P | tiny | `asr`<br>a: 0.150 ± 0.071 (n=2)<br>b: 0.850 ± 0.071 (n=2) | +0.700 ± 0.071 | **reproduces** |" in text
    assert "- **c** (x.toml; arms — a: (the config as is); b: (the config as is)): reproduces — effect +0.700" in text
