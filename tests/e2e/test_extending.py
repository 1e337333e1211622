"""The seams of docs/extending.md (issue #23): the page's own examples — a dataset, a rule and a
trigger — are executed from the page, registered from outside the package with one registry
line each (as the page says), and run through a config end to end; so are a partitioner and a
Byzantine attack defined here. A recipe on the page that stops working fails this test."""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clients.attacks.byzantine as byzantine
import fedsim.data.sources as sources
import strategies
from clients.attacks import triggers
from fedsim.data import partition
from tests.data.test_data_config import COLORS, write_imagefolder

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "extending.md"


def _examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)


@pytest.fixture
def registered():
    """The page's examples executed against the real registries (their registry lines add to
    them, as the page says); what they added is removed afterwards."""
    registries = (sources.DATASETS, strategies.RULES, triggers.TRIGGERS)
    before = [set(r) for r in registries]
    namespace = {"DATASETS": sources.DATASETS, "RULES": strategies.RULES, "TRIGGERS": triggers.TRIGGERS,
                 "torch": torch, "dataclass": dataclass, "math": math, "os": os}
    try:
        for block in _examples():
            exec(compile(block, str(PAGE), "exec"), namespace)
        yield namespace
    finally:
        for registry, keys in zip(registries, before):
            for key in set(registry) - keys:
                del registry[key]


def test_the_page_holds_the_three_examples_and_each_registers_itself(registered):
    assert sources.DATASETS["textlist"] is registered["open_textlist"]
    assert strategies.RULES["closest_mean"] is registered["closest_mean"]
    assert triggers.TRIGGERS["grayscale"] is registered["Grayscale"]


def test_the_example_rule_keeps_the_updates_nearest_the_median(registered):
    # by hand: median of (0, 1, 10) is 1; distances 1, 0, 9; keep ⌈0.5 · 3⌉ = 2 → rows 0, 1
    updates = torch.tensor([[0.0], [1.0], [10.0]])
    result = registered["closest_mean"](updates, keep=0.5)
    assert result.accepted.tolist() == [0, 1] and result.aggregate.tolist() == [0.5]


def _write_textlist(folder: Path, n: int) -> Path:
    (folder / "img").mkdir(parents=True)
    lines = []
    for i in range(n):
        Image.new("RGB", (12, 10), COLORS[i % len(COLORS)]).save(folder / "img" / f"{i}.png")
        lines.append(f"img/{i}.png\ta picture number {i} of colour {i % len(COLORS)}")
    (folder / "list.tsv").write_text("\n".join(lines) + "\n")
    return folder / "list.tsv"


def halves(num_samples: int, num_clients: int, seed: int, min_size: int = 1) -> list[np.ndarray]:
    """A toy partitioner: the first half of the samples to client 0, the rest spread evenly."""
    head = np.arange(num_samples // 2)
    rest = np.array_split(np.arange(num_samples // 2, num_samples), num_clients - 1)
    parts = [head, *rest]
    if min(len(p) for p in parts) < min_size:
        raise ValueError("too few samples")
    return parts


def negate(honest: torch.Tensor, num_malicious: int) -> torch.Tensor:
    """A toy Byzantine attack: every malicious row is minus the honest mean."""
    return (-honest.mean(dim=0)).expand(num_malicious, -1).clone()


def test_the_page_s_dataset_rule_and_trigger_with_a_new_partitioner_run_through_a_config(
        registered, monkeypatch, tmp_path):
    from fedsim.runner import load, run

    monkeypatch.setitem(partition.PARTITIONS, "halves", partition.Partitioner(halves, by_label=False))
    data = _write_textlist(tmp_path / "data", 30)
    write_imagefolder(tmp_path / "evalset")
    config = tmp_path / "exp.toml"
    config.write_text(f"""
rounds = 1
[model]
init = "scratch"
[data]
name = "textlist"
path = "{data}"
train_size = 30
test_size = 20
root_size = 0
partition = "halves"
[eval]
name = "imagefolder"
path = "{tmp_path / 'evalset'}"
[clients]
num = 3
per_round = 3
[attack]
malicious = [0]
[attack.data]
target = "star"
trigger = {{ name = "grayscale", params = {{ alpha = 1.0 }} }}
[strategy]
name = "closest_mean"
params = {{ keep = 0.67 }}
[resources]
engine = "inprocess"
""")
    cfg = load(config)
    summary = run(cfg, tmp_path / "run", log=lambda m: None)
    assert summary["status"] == "completed"
    rounds = (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()
    assert len(rounds) == 1 and '"replies": 3' in rounds[0]
    record = json.loads(rounds[0])
    assert len(record["accepted"]) == math.ceil(0.67 * 3)  # the example rule's choice


def test_a_byzantine_attack_defined_outside_runs_through_a_config(monkeypatch, tmp_path):
    from fedsim.runner import load, run

    monkeypatch.setitem(byzantine.BYZANTINE, "negate", negate)
    cfg = load(None, ["rounds=1", "model.init='scratch'", "data.train_size=60", "data.test_size=30",
                      "clients.num=3", "clients.per_round=3", "attack.malicious=[0]",
                      "attack.data.enabled=false", "attack.byzantine.name='negate'",
                      "resources.engine='inprocess'"])
    summary = run(cfg, tmp_path / "run", log=lambda m: None)
    assert summary["status"] == "completed"


def test_a_learned_trigger_defined_outside_is_learned_once_and_kept_in_the_config(monkeypatch, tmp_path):
    """A ``LEARNED_TRIGGERS`` entry from outside: its pixels are learned once before round 1 on
    the attackers' images (other classes, and the target's), kept in the run's config.toml,
    and applied by the clients and the evaluation."""
    from clients.attacks import LEARNED_TRIGGERS, LearnedTrigger, make_trigger
    from fedsim.runner import load, run

    seen = []

    def learn(model, preprocess, images, *, target_images, target_tokens, params, generator, after_step=None):
        seen.append((len(images), len(target_images)))
        return [[[params["level"]] * 3] * 3] * 3  # a 3 × 3 patch of one grey level, per channel

    toy = LearnedTrigger(
        defaults={"level": 0.5},
        make=lambda params, side, pattern: make_trigger("badnet", size=3, location="bottom_right",
                                                       **({} if pattern is None else {"pattern": pattern})),
        learn=learn, steps=lambda params: 1, reference=learn,
    )
    monkeypatch.setitem(LEARNED_TRIGGERS, "grey_square", toy)
    cfg = load(None, ["rounds=1", "model.init='scratch'", "data.train_size=60", "data.test_size=30",
                      "clients.num=3", "clients.per_round=3", "attack.malicious=[0]",
                      "attack.data.trigger={ name = 'grey_square', params = { level = 0.25 } }",
                      "resources.engine='inprocess'"])
    summary = run(cfg, tmp_path / "run", log=lambda m: None)
    assert summary["status"] == "completed"
    assert len(seen) == 1 and seen[0][1] > 0 and seen[0][0] > 0  # learned once, on both kinds of image
    kept = tomllib.loads((tmp_path / "run" / "config.toml").read_text())["attack"]["data"]["trigger"]["params"]
    assert kept == {"level": 0.25, "pattern": [[[0.25] * 3] * 3] * 3}


def test_an_update_attack_defined_outside_rewrites_what_the_attacker_sends(monkeypatch, tmp_path):
    """An ``UPDATE_ATTACKS`` entry from outside, named by the config: the attackers send their
    update times −1 (a toy sign flip), visible in the recorded update norms being equal to
    what they trained and the round aggregated."""
    from clients.attacks import UPDATE_ATTACKS, UpdateAttack
    from fedsim.runner import load, run

    sent = []

    def negate(update, params):
        sent.append(float(update.norm()))
        return -params["factor"] * update

    monkeypatch.setitem(UPDATE_ATTACKS, "negate", UpdateAttack(reference=negate, transform=negate))
    cfg = load(None, ["rounds=1", "model.init='scratch'", "data.train_size=60", "data.test_size=30",
                      "clients.num=3", "clients.per_round=3", "attack.malicious=[0]",
                      "attack.data.enabled=false", "attack.update.name='negate'",
                      "attack.update.params={ factor = 2.0 }", "resources.engine='inprocess'"])
    sent.clear()  # the config check applied it once to a probe update
    summary = run(cfg, tmp_path / "run", log=lambda m: None)
    assert summary["status"] == "completed" and len(sent) == 1
    record = json.loads((tmp_path / "run" / "rounds.jsonl").read_text().splitlines()[0])
    assert record["update_norms"]["0"] == pytest.approx(2 * sent[0], rel=1e-4)


def test_a_training_mode_defined_outside_runs_with_its_parameters_from_the_config(monkeypatch, tmp_path):
    """A ``TRAINING`` entry from outside, named by ``clients.training``, its keywords from
    ``clients.training_params``: the honest clients train with it, the attackers as they like."""
    from fedsim.objectives import TRAINING, standard
    from fedsim.runner import load, run

    calls = []

    def halved(model, images, captions, *, tokenizer, preprocess, generator, epoch_offset, weight=0.5):
        calls.append((len(images), weight))
        loss = standard(model, images, captions, tokenizer=tokenizer, preprocess=preprocess,
                        generator=generator, epoch_offset=epoch_offset)
        return lambda model, idx, epoch: weight * loss(model, idx, epoch)

    monkeypatch.setitem(TRAINING, "halved", halved)
    cfg = load(None, ["rounds=1", "model.init='scratch'", "data.train_size=60", "data.test_size=30",
                      "clients.num=3", "clients.per_round=3", "attack.malicious=[0]",
                      "clients.training='halved'", "clients.training_params={ weight = 0.25 }",
                      "resources.engine='inprocess'"])
    summary = run(cfg, tmp_path / "run", log=lambda m: None)
    assert summary["status"] == "completed"
    assert sorted(calls) == [(20, 0.25), (20, 0.25)]  # the 2 honest clients, once each


def test_a_rule_needing_a_server_input_defined_outside_gets_it_every_round(monkeypatch, tmp_path):
    """A ``RULES`` entry from outside that declares a server input (``takes("previous")``, as
    docs/extending.md says): the strategy passes the last aggregate applied — None in round 1,
    then round 1's — and nothing it did not declare."""
    import strategies
    from strategies.inputs import takes
    from strategies.result import AggregationResult, check_updates
    from fedsim.runner import load, run

    seen = []

    def momentum_mean(updates, *, weights=None, previous, beta: float = 0.5):
        """Mean of the updates plus β · the last aggregate (an illustration, no paper)."""
        check_updates(updates, weights)
        seen.append(None if previous is None else previous.clone())
        mean = updates.mean(dim=0)
        return AggregationResult(aggregate=mean if previous is None else mean + beta * previous,
                                 accepted=torch.arange(len(updates)))

    takes("previous")(momentum_mean)
    monkeypatch.setitem(strategies.RULES, "momentum_mean", momentum_mean)
    cfg = load(None, ["rounds=2", "model.init='scratch'", "data.train_size=60", "data.test_size=30",
                      "clients.num=3", "clients.per_round=3", "attack.enabled=false",
                      "strategy.name='momentum_mean'", "strategy.params={ beta = 0.25 }",
                      "resources.engine='inprocess'"])
    seen.clear()  # the config check dry-ran it once on random updates
    summary = run(cfg, tmp_path / "run", log=lambda m: None)
    assert summary["status"] == "completed" and summary["aggregated_rounds"] == 2
    assert seen[0] is None and seen[1] is not None and seen[1].ndim == 1


def test_a_metric_defined_outside_reaches_the_summary_and_the_report_tables(tmp_path):
    """One ``METRICS`` entry from outside the package, reducing a key every round records (the
    mean reported training loss): a run's summary.json and summary.md and ``fedsim report``'s
    results.csv carry it, nothing else told."""
    from fedsim import metrics
    from fedsim.cli import main
    from fedsim.metrics import Metric
    from fedsim.runner import load, run

    new = Metric("mean_train_loss", "train_loss", "mean", "mean_loss", "mean train loss")
    metrics.METRICS.append(new)
    try:
        cfg = load(None, ["rounds=2", "model.init='scratch'", "data.train_size=60", "data.test_size=30",
                          "clients.num=3", "clients.per_round=3", "attack.enabled=false",
                          "resources.engine='inprocess'"])
        summary = run(cfg, tmp_path / "run", log=lambda m: None)
        losses = [json.loads(line)["train_loss"] for line in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
        assert summary["mean_train_loss"] == pytest.approx(sum(losses) / 2)
        written = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert written["mean_train_loss"] == pytest.approx(sum(losses) / 2)
        assert "| mean_train_loss |" in (tmp_path / "run" / "summary.md").read_text()
        assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "report")]) == 0
        header = (tmp_path / "report" / "results.csv").read_text().splitlines()[0].split(",")
        assert "mean_loss" in header
    finally:
        metrics.METRICS.remove(new)
