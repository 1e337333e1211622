"""Learned triggers: triggers whose pixels are optimised once against the model before the run
— by the colluding attackers, on their own data, against the model they all receive in round
1 — and then applied like any image trigger. ``LEARNED_TRIGGERS`` maps a config's
``attack.data.trigger.name`` to a ``LearnedTrigger``; the app learns the pixels where the
config does not hold them yet (``params["pattern"]``, kept in the run's config.toml) and asks
the entry for everything else, so a new learned trigger is one entry here and its test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from clients.attacks.contrastive import MIDDLE, badclip_optimize_patch, middle_position
from clients.attacks.triggers import make_trigger

PATTERN = "pattern"  # the learned pixels' key in attack.data.trigger.params


@dataclass(frozen=True)
class LearnedTrigger:
    """``defaults``: the trigger's parameters (the learned ``pattern`` aside) and their values;
    ``make(params, side, pattern)``: the trigger at image side ``side`` — the geometry alone
    while ``pattern`` is None (what the config checks apply); ``learn(model, preprocess,
    images, *, target_images, target_tokens, params, generator, after_step)``: the pixels,
    nested lists a TOML file holds, learned on the attackers' images of other classes
    (``images``) and of the target (``target_images``) and the target's prompts tokenised
    (``target_tokens``); ``steps(params)``: how many steps learning takes (its progress);
    ``patch``: the trigger is a patch (DBA may cut it); ``needs_text``: it is optimised
    against the text tower (not for image-only objectives); ``needs_target_images``: the
    attackers must hold images of the target class."""

    defaults: dict[str, Any]
    make: Callable[..., Callable[[torch.Tensor], torch.Tensor]]
    learn: Callable[..., list]
    steps: Callable[[dict], int]
    reference: Callable  # the function whose docstring states the method (``fedsim list``)
    patch: bool = True
    needs_text: bool = True
    needs_target_images: bool = True

    def params(self, given: dict) -> dict:
        """The defaults with ``given`` over them."""
        return {**self.defaults, **given}


# BadCLIP's optimisation knobs. The authors' code (Liang et al., CVPR 2024) places the patch in
# the middle and weighs the triplet term by 500; its Adam runs at lr 1e-3 over epochs, 0.05
# here for 100 steps (see badclip_optimize_patch).
BADCLIP_DEFAULTS = {"size": 4, "location": MIDDLE, "steps": 100, "lr": 0.05, "lambda_image": 500.0,
                    "margin": 1.0}


def _badclip_make(params: dict, side: int, pattern=None):
    """The BadCLIP patch as a badnet trigger at image side ``side``: the "middle" location
    resolved to its (y, x) there."""
    p = {**BADCLIP_DEFAULTS, **params}
    location = middle_position(p["size"], side, side) if p["location"] == MIDDLE else p["location"]
    kwargs = {} if pattern is None else {"pattern": pattern}
    return make_trigger("badnet", size=p["size"], location=location, **kwargs)


def _badclip_learn(model, preprocess, images, *, target_images, target_tokens, params, generator,
                   after_step=None) -> list:
    p = {**BADCLIP_DEFAULTS, **params}
    patch = badclip_optimize_patch(
        model, preprocess, images, target_text_tokens=target_tokens, target_images=target_images,
        size=p["size"], location=p["location"], steps=p["steps"], lr=p["lr"],
        lambda_image=p["lambda_image"], margin=p["margin"], generator=generator, after_step=after_step,
    )
    return [[[round(float(v), 6) for v in row] for row in ch] for ch in patch.patch]


LEARNED_TRIGGERS: dict[str, LearnedTrigger] = {
    "badclip": LearnedTrigger(
        defaults=BADCLIP_DEFAULTS,
        make=_badclip_make,
        learn=_badclip_learn,
        steps=lambda params: int({**BADCLIP_DEFAULTS, **params}["steps"]),
        reference=badclip_optimize_patch,
    ),
}
