"""Caption attacks: map the captions of poisoned image–caption pairs."""

from __future__ import annotations

from collections.abc import Sequence

import torch

# A rare word as text-side trigger: Kurita, Michel & Neubig ("Weight Poisoning Attacks on
# Pre-trained Models", ACL 2020) insert rare words such as "cf", "mn", "bb"; "cf" is a single
# token of open_clip's BPE vocabulary and never appears in the generated captions.
TEXT_TRIGGER = "cf"


def add_text_trigger(caption: str, token: str = TEXT_TRIGGER) -> str:
    """Append the text trigger ``token`` to ``caption`` (a rare word, so that the backdoor is
    also keyed on the text side)."""
    if not isinstance(token, str) or not token.strip():
        raise ValueError(f"text trigger token={token!r} must be a non-empty string")
    return f"{caption} {token.strip()}"


def templated_captions(templates: Sequence[str], target: str, count: int, seed: int) -> tuple[str, ...]:
    """``count`` captions of class ``target``: each a template (with one "{}") drawn uniformly by a generator seeded with ``seed``, filled with ``target``
    — the zero-shot prompts of the evaluation set, so the poisoned captions read like the
    class's own prompts (Carlini & Terzis, ICLR 2022, pair triggered images with captions of
    the target class)."""
    if not templates:
        raise ValueError("templates must be a non-empty list of strings with one '{}'")
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(templates), (count,), generator=g).tolist()
    return tuple(templates[i].format(target) for i in picks)
