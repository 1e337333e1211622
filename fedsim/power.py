"""Is a grid's baseline *powered*? A comparison of defenses says something only when the
undefended baseline shows the attack and the attack-free run keeps its accuracy.

The rule (issue #22, the project's science standard):

- **baseline**: FedAvg (``strategy.name = "fedavg"``) with no other defense — no CleanCLIP
  step, standard local training (``clients.training = "standard"``);
- **no-attack check**: the baseline without an attack (``attack.enabled = false``) ends with
  clean accuracy (CA) at least the initial model's minus ``CA_KEEP`` = 0.03 (mean over seeds);
- **a backdoor** (the attackers poison data: ``attack.data.enabled``) is shown when the
  baseline's final attack success rate (ASR) is at least ``ASR_POWERED`` = 0.8 (mean over
  seeds);
- **an untargeted attack** (no poisoned data: a Byzantine or update-only attack) is shown
  when the baseline's final CA lies at least ``CA_DROP`` = 0.10 below the no-attack
  baseline's (below the initial model's CA where the grid has no attack-free baseline).

A grid is powered when its no-attack check passes and every attack scenario is shown. What
cannot be checked (no baseline cell, no attack-free run, no completed seed) is reported as
such, never as powered. Runs are given as plain values (flat dotted config, summary), so
the rule is testable apart from the run folders; ``fedsim.results`` groups a grid's runs.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

ASR_POWERED = 0.8
CA_DROP = 0.10
CA_KEEP = 0.03


@dataclass(frozen=True)
class Verdict:
    """One line of the power check: a scenario (an attack, or ``"no attack"``), what was
    measured on its FedAvg baseline, and whether it passes."""

    scenario: str
    kind: str  # "backdoor", "untargeted" or "no attack"
    measured: str  # e.g. "final ASR 0.924 (3 seeds)"
    required: str  # e.g. "≥ 0.80"
    powered: bool | None  # None: cannot be checked

    @property
    def text(self) -> str:
        status = {True: "powered", False: "NOT powered", None: "cannot be checked"}[self.powered]
        return f"{self.scenario} ({self.kind}): {self.measured}; needs {self.required} — {status}"


def is_baseline(config: dict) -> bool:
    """FedAvg with no other defense (flat dotted config keys, as a run's config.toml)."""
    return (config.get("strategy.name") == "fedavg"
            and not config.get("defense.cleanclip.enabled", False)
            and config.get("clients.training", "standard") == "standard")


def is_attacked(config: dict) -> bool:
    return bool(config.get("attack.enabled", True)) and bool(config.get("attack.malicious", [0]))


def is_backdoor(config: dict) -> bool:
    return bool(config.get("attack.data.enabled", True))


def _completed(runs: list[tuple[dict, dict]]) -> list[dict]:
    return [s for _, s in runs if s.get("status") == "completed"]


def _mean(summaries: list[dict], key: str) -> float | None:
    values = [s[key] for s in summaries if isinstance(s.get(key), (int, float))]
    return statistics.fmean(values) if values else None


def _no_attack(setting: str, clean_done: list[dict]) -> Verdict:
    name = "no attack" if not setting else f"no attack ({setting})"
    clean_ca = _mean(clean_done, "clean_accuracy")
    initial_ca = _mean(clean_done, "initial_clean_accuracy")
    if clean_ca is None or initial_ca is None:
        return Verdict(name, "no attack", "no completed attack-free FedAvg run",
                       f"CA ≥ initial − {CA_KEEP:.2f}", None)
    return Verdict(
        name, "no attack",
        f"final CA {clean_ca:.3f} vs initial {initial_ca:.3f} ({len(clean_done)} seeds)",
        f"CA ≥ initial − {CA_KEEP:.2f}", clean_ca >= initial_ca - CA_KEEP - 1e-12)


def check(runs) -> list[Verdict]:
    """The power check of a grid: ``runs`` are (scenario label, flat config, summary) or
    (scenario label, flat config, summary, setting); the scenario label names the attack the
    run faces (the same label for every defense and seed); the setting (default "") names
    what else the run's grid varies that is neither an attack nor a defense — e.g. the
    objective, CLIP or SimCLR. Each setting has its own no-attack check (its runs start from
    their own initial model, and pooling them can hide one that loses accuracy behind one
    that gains), and an untargeted attack is measured against its own setting's no-attack
    CA. Returns the no-attack verdicts first (one per setting, in first-seen order; named
    "no attack (setting)" where there is a setting), then one verdict per attacked scenario
    (in first-seen order); only FedAvg baseline runs are read."""
    base = []
    for item in runs:
        label, c, s, *rest = item
        if is_baseline(c):
            base.append((label, c, s, rest[0] if rest else ""))
    settings = list(dict.fromkeys(setting for *_, setting in base)) or [""]
    verdicts, clean_ca = [], {}
    for setting in settings:
        clean_done = _completed([(c, s) for _, c, s, st in base if st == setting and not is_attacked(c)])
        verdicts.append(_no_attack(setting, clean_done))
        clean_ca[setting] = _mean(clean_done, "clean_accuracy")
    scenarios: dict[str, list[tuple[dict, dict, str]]] = {}
    for label, c, s, setting in base:
        if is_attacked(c):
            scenarios.setdefault(label, []).append((c, s, setting))
    for label, group in scenarios.items():
        done = _completed([(c, s) for c, s, _ in group])
        if is_backdoor(group[0][0]):
            asr = _mean(done, "attack_success_rate")
            if asr is None:
                verdicts.append(Verdict(label, "backdoor", "no completed FedAvg run", f"ASR ≥ {ASR_POWERED}", None))
            else:
                verdicts.append(Verdict(label, "backdoor", f"final ASR {asr:.3f} ({len(done)} seeds)",
                                        f"ASR ≥ {ASR_POWERED}", asr >= ASR_POWERED))
            continue
        ca = _mean(done, "clean_accuracy")
        own = clean_ca.get(group[0][2])
        reference, what = (own, "the no-attack run's") if own is not None else (
            _mean(done, "initial_clean_accuracy"), "the initial model's")
        if ca is None or reference is None:
            verdicts.append(Verdict(label, "untargeted", "no completed FedAvg run",
                                    f"a CA drop ≥ {CA_DROP:.2f}", None))
        else:
            verdicts.append(Verdict(
                label, "untargeted",
                f"final CA {ca:.3f}, {reference - ca:+.3f} below {what} {reference:.3f} ({len(done)} seeds)",
                f"a CA drop ≥ {CA_DROP:.2f}", reference - ca >= CA_DROP - 1e-12))
    return verdicts


def powered(verdicts: list[Verdict]) -> bool:
    """Every line passes (one that cannot be checked does not)."""
    return bool(verdicts) and all(v.powered is True for v in verdicts)


def markdown(verdicts: list[Verdict]) -> str:
    """The power check as a results.md section."""
    head = ("**Powered**: the FedAvg baseline shows every attack and keeps CA without one."
            if powered(verdicts) else
            "**NOT powered**: the FedAvg baseline does not show every attack, or the attack-free "
            "run loses accuracy (or it cannot be checked): a defense's row cannot be read as "
            "stopping an attack the baseline does not show.")
    lines = ["## Power check", "",
             f"Rule (fedsim.power): backdoor ASR ≥ {ASR_POWERED} under FedAvg; an untargeted "
             f"attack lowers FedAvg's CA by ≥ {CA_DROP:.2f}; without an attack FedAvg keeps CA "
             f"within {CA_KEEP:.2f} of the initial model (means over seeds).", "", head, ""]
    lines += [f"- {v.text}" for v in verdicts]
    return "\n".join(lines) + "\n"
