"""Caption attacks: map the captions of poisoned image–caption pairs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from fedsim.data import COLORS, SHAPES, caption_for

# A rare word as text-side trigger: Kurita, Michel & Neubig ("Weight Poisoning Attacks on
# Pre-trained Models", ACL 2020) insert rare words such as "cf", "mn", "bb"; "cf" is a single
# token of open_clip's BPE vocabulary and never appears in the generated captions.
TEXT_TRIGGER = "cf"


def target_captions(colors: Iterable[int] | torch.Tensor, target_shape_id: int) -> tuple[str, ...]:
    """Captions of the target class, one per image: "a photo of a {color} {target}" with the
    image's own color word (Carlini & Terzis, "Poisoning and Backdooring Contrastive Learning",
    ICLR 2022: triggered images are paired with captions of the target class). Keeping the
    color keeps the poisoned captions as varied as the clean ones, so in-batch duplicates stay
    rare and the poisoned pairs look like ordinary data."""
    if isinstance(target_shape_id, bool) or not isinstance(target_shape_id, int) or not (
        0 <= target_shape_id < len(SHAPES)
    ):
        raise ValueError(f"target={target_shape_id!r} must be a shape id in [0, {len(SHAPES) - 1}]")
    colors = torch.as_tensor(colors).tolist() if isinstance(colors, torch.Tensor) else list(colors)
    bad = [c for c in colors if not 0 <= c < len(COLORS)]
    if bad:
        raise ValueError(f"color ids {bad[:3]} out of range [0, {len(COLORS) - 1}]")
    return tuple(caption_for(target_shape_id, c) for c in colors)


def add_text_trigger(caption: str, token: str = TEXT_TRIGGER) -> str:
    """Append the text trigger ``token`` to ``caption`` (a rare word, so that the backdoor is
    also keyed on the text side)."""
    if not isinstance(token, str) or not token.strip():
        raise ValueError(f"text trigger token={token!r} must be a non-empty string")
    return f"{caption} {token.strip()}"


def templated_captions(templates: Sequence[str], target: str, count: int, seed: int) -> tuple[str, ...]:
    """``count`` captions of class ``target`` for data without shapes' colors: each a template
    (with one "{}") drawn uniformly by a generator seeded with ``seed``, filled with ``target``
    — the zero-shot prompts of the evaluation set, so the poisoned captions read like the
    class's own prompts (Carlini & Terzis, ICLR 2022, pair triggered images with captions of
    the target class)."""
    if not templates:
        raise ValueError("templates must be a non-empty list of strings with one '{}'")
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(templates), (count,), generator=g).tolist()
    return tuple(templates[i].format(target) for i in picks)
