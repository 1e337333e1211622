"""Learned triggers (clients/attacks/learned.py): BadCLIP's registry entry hands the config's
parameters — its defaults under them — to the optimiser unchanged, and keeps the learned pixels
as the plain nested lists a TOML file holds, rounded to 6 decimals."""

from __future__ import annotations

import torch

import clients.attacks.learned as learned
from clients.attacks import LEARNED_TRIGGERS
from clients.attacks.contrastive import MIDDLE


def test_badclip_learn_passes_the_configs_parameters_over_the_defaults_and_rounds_the_pixels(monkeypatch):
    seen = {}

    class Patch:
        patch = torch.tensor([[[0.12345678, 1.0]], [[0.5, 0.9999996]], [[0.0, 1e-7]]], dtype=torch.float64)

    def spy(model, preprocess, images, **kwargs):
        seen.update(model=model, preprocess=preprocess, images=images, **kwargs)
        return Patch()

    monkeypatch.setattr(learned, "badclip_optimize_patch", spy)
    generator, after_step = torch.Generator(), (lambda step, total: None)
    pixels = LEARNED_TRIGGERS["badclip"].learn(
        "model", "preprocess", "images", target_images="target images", target_tokens="tokens",
        params={"size": 3, "steps": 7, "margin": 0.25}, generator=generator, after_step=after_step)
    assert seen == {
        "model": "model", "preprocess": "preprocess", "images": "images",
        "target_text_tokens": "tokens", "target_images": "target images",
        # given: size, steps, margin; the rest BadCLIP's defaults (the authors' middle and 500)
        "size": 3, "location": MIDDLE, "steps": 7, "lr": 0.05, "lambda_image": 500.0, "margin": 0.25,
        "generator": generator, "after_step": after_step,
    }
    assert seen["generator"] is generator and seen["after_step"] is after_step
    assert pixels == [[[0.123457, 1.0]], [[0.5, 1.0]], [[0.0, 0.0]]]
    assert all(type(v) is float for ch in pixels for row in ch for v in row)


def test_badclip_learn_without_parameters_uses_every_default(monkeypatch):
    seen = {}

    class Patch:
        patch = torch.zeros(3, 1, 1)

    monkeypatch.setattr(learned, "badclip_optimize_patch", lambda *a, **kw: seen.update(kw) or Patch())
    LEARNED_TRIGGERS["badclip"].learn(None, None, None, target_images=None, target_tokens=None, params={},
                                      generator=None)
    assert {k: seen[k] for k in learned.BADCLIP_DEFAULTS} == learned.BADCLIP_DEFAULTS
    assert seen["after_step"] is None
