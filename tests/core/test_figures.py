"""Every figure renders readably at any grid shape (issue #24): a run's metrics.png, a sweep's
heatmaps and curves for a 1×N and an N×M grid — files written, sized to their content, the
references (FedAvg, no attack) named on the axes."""

import json

import pytest
from PIL import Image

from fedsim.report import plot_rounds
from fedsim.results import write_results


def _run(folder, name, seed, strategy, attack, ca, asr, rounds=3):
    folder.mkdir(parents=True)
    enabled = "false" if attack == "none" else "true"
    (folder / "config.toml").write_text(
        f'name = "{name}"\nseed = {seed}\n[strategy]\nname = "{strategy}"\n[attack]\nenabled = {enabled}\n'
        f'[attack.byzantine]\nname = "{"lie" if attack == "lie" else "none"}"\n')
    (folder / "summary.json").write_text(json.dumps({
        "status": "completed", "clean_accuracy": ca, "attack_success_rate": asr, "initial_clean_accuracy": 0.7,
        "initial_attack_success_rate": 0.1}))
    (folder / "rounds.jsonl").write_text("".join(
        json.dumps({"round": r, "clean_accuracy": ca, "attack_success_rate": asr * r / rounds}) + "\n"
        for r in range(1, rounds + 1)))


def _size(path):
    with Image.open(path) as image:
        return image.size


def test_metrics_png_has_whole_rounds_a_title_and_a_y_label(tmp_path, monkeypatch):
    import matplotlib.axes

    seen = {}
    for name in ("set_title", "set_ylabel"):
        original = getattr(matplotlib.axes.Axes, name)
        monkeypatch.setattr(matplotlib.axes.Axes, name,
                            lambda self, text, *a, _o=original, _n=name, **k: seen.setdefault(_n, text) and _o(self, text, *a, **k))
    rounds = [{"round": r, "clean_accuracy": 0.6, "attack_success_rate": 0.1 * r} for r in (1, 2, 3)]
    path = plot_rounds(rounds, tmp_path / "m.png", initial={"clean_accuracy": 0.7, "attack_success_rate": 0.05},
                       chance=0.1, title="q: CA and ASR per round")
    assert path.is_file() and _size(path)[0] > 300
    assert seen == {"set_title": "q: CA and ASR per round", "set_ylabel": "share of test images"}


@pytest.mark.parametrize("defenses, attacks", [(["fedavg"], ["none", "badnet", "lie", "pgd"]),
                                               (["fedavg", "median", "krum"], ["none", "badnet", "lie"])])
def test_heatmaps_and_curves_render_for_a_1xn_and_an_nxm_grid(tmp_path, defenses, attacks):
    runs = tmp_path / "runs"
    for d in defenses:
        for a in attacks:
            for seed in (0, 1):
                _run(runs / f"{d}__{a}__seed{seed}", "g", seed, d, a, 0.6 + 0.01 * seed, 0.2 if a == "none" else 0.9)
    grid = {"axes": [
        {"name": "defense", "values": [{"label": d, "settings": {"strategy.name": d}} for d in defenses]},
        {"name": "attack", "values": [{"label": a, "settings": {
            "attack.enabled": a != "none", "attack.byzantine.name": "lie" if a == "lie" else "none"}} for a in attacks]},
    ]}
    (runs / "sweep.json").write_text(json.dumps(grid))
    written = write_results([runs], runs)
    names = {p.name for p in written}
    assert {"heatmap_asr.png", "heatmap_ca.png", "curves_asr.png", "curves_ca.png"} <= names
    width, height = _size(runs / "heatmap_asr.png")
    # wider with more columns, taller with more rows: nothing squeezed into a fixed canvas
    assert width >= 120 * (2.0 + 0.9 * len(attacks)) * 0.9
    assert height >= 120 * (1.4 + 0.45 * len(defenses)) * 0.9
    text = (runs / "results.md").read_text()
    assert "## Power check" in text


def test_the_heatmap_names_its_references(tmp_path, monkeypatch):
    import matplotlib.axes

    ticks = []
    original = matplotlib.axes.Axes.set_xticks
    monkeypatch.setattr(matplotlib.axes.Axes, "set_xticks",
                        lambda self, pos, labels=None, **k: ticks.append(list(labels or [])) or original(self, pos, labels, **k))
    yticks = []
    original_y = matplotlib.axes.Axes.set_yticks
    monkeypatch.setattr(matplotlib.axes.Axes, "set_yticks",
                        lambda self, pos, labels=None, **k: yticks.append(list(labels or [])) or original_y(self, pos, labels, **k))
    test_heatmaps_and_curves_render_for_a_1xn_and_an_nxm_grid(tmp_path, ["fedavg", "median"], ["none", "badnet"])
    assert ["none (no attack)", "badnet"] in ticks
    assert ["fedavg (baseline)", "median"] in yticks
