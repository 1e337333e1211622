"""Markdown table of every attack under two defenses, from two runs of each of configs/attacks:

    for c in configs/attacks/*.toml; do
        fedsim run "$c" --out "runs/attacks/$(basename "$c" .toml)"
        fedsim run "$c" --out "runs/attacks-clipped/$(basename "$c" .toml)" \
            --set strategy.name=norm_clipping --set 'strategy.params={tau=2.0}'
    done
    python scripts/attack_table.py runs/attacks runs/attacks-clipped

Backdoor attacks report final CA / final ASR (max ASR over the rounds); untargeted (Byzantine)
attacks report the CA drop against the run without any attack; attacks with a stop round also
report the backdoor lifespan (rounds ASR stayed ≥ the threshold after the attack stopped)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _load(d: Path) -> dict | None:
    p = d / "summary.json"
    return json.loads(p.read_text()) if p.is_file() else None


def cell(s: dict | None, byzantine: bool, clean_ca: float | None) -> str:
    if s is None or s.get("clean_accuracy") is None:
        return "not run"
    ca, asr = s["clean_accuracy"], s["attack_success_rate"]
    if byzantine:
        drop = f" (drop {clean_ca - ca:+.3f})" if clean_ca is not None else ""
        return f"CA {ca:.3f}{drop}"
    text = f"{ca:.3f} / {asr:.3f} (max {s['max_attack_success_rate']:.3f})"
    if "backdoor_lifespan" in s:
        text += f", lifespan {s['backdoor_lifespan']}{'+' if s['backdoor_survived'] else ''}"
    return text


def main(fedavg_dir: str, clipped_dir: str, clean_fedavg: str | None = None) -> None:
    a, b = Path(fedavg_dir), Path(clipped_dir)
    clean = _load(Path(clean_fedavg)) if clean_fedavg else None
    clean_ca = clean["clean_accuracy"] if clean else None
    print("| attack | FedAvg: CA / ASR | norm clipping τ = 2: CA / ASR |")
    print("|---|---|---|")
    for d in sorted(p for p in a.iterdir() if p.is_dir()):
        cfg = (d / "config.toml").read_text() if (d / "config.toml").is_file() else ""
        byz = "[attack.byzantine]" in cfg and 'name = "none"' not in cfg.split("[attack.byzantine]")[1].split("[")[0]
        print(f"| {d.name} | {cell(_load(d), byz, clean_ca)} | {cell(_load(b / d.name), byz, clean_ca)} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
