"""``fedsim.objectives.family``: what each value of ``objective`` decides, checked against the
papers' setups (SimCLR: image tower + projection head, NT-Xent for every client, kNN
evaluation; CLIP: the whole model, the clients' own modes, zero-shot evaluation)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from fedsim.evaluation import Evaluator, SimCLREvaluator
from fedsim.objectives import OBJECTIVES, simclr

SECTION = SimpleNamespace(projection_dim=16, temperature=0.3, knn_k=7, knn_temperature=0.2, batchnorm="augmented")


def test_the_registry_holds_exactly_the_config_values():
    from typing import get_args

    from fedsim.config import Config

    assert set(OBJECTIVES) == set(get_args(Config.model_fields["objective"].annotation))


def test_simclr_is_the_image_tower_with_a_head_and_clip_the_whole_model():
    assert OBJECTIVES["simclr"].model_kwargs(SECTION) == {"projection_dim": 16}
    assert OBJECTIVES["clip"].model_kwargs(SECTION) == {"projection_dim": None}


def test_simclr_imposes_nt_xent_at_its_temperature_and_clip_imposes_nothing():
    imposed = OBJECTIVES["simclr"].client_training(SECTION)
    assert imposed.func is simclr and imposed.keywords == {"temperature": 0.3, "batchnorm": "augmented"}
    assert OBJECTIVES["clip"].client_training(SECTION) is None


def test_simclr_keeps_only_the_warm_image_tower_and_clip_the_whole_warm_start():
    fresh = {"visual.w": torch.zeros(2), "head.w": torch.zeros(2)}
    warm = {"visual.w": torch.ones(2), "head.w": torch.ones(2), "text.w": torch.ones(2)}
    got = OBJECTIVES["simclr"].warm_state(fresh, warm)
    assert set(got) == {"visual.w", "head.w"}
    assert got["visual.w"].tolist() == [1.0, 1.0] and got["head.w"].tolist() == [0.0, 0.0]
    assert OBJECTIVES["clip"].warm_state(fresh, warm) is warm


def test_only_simclr_poisons_target_class_images_and_needs_the_training_classes_for_eval():
    assert OBJECTIVES["simclr"].poisons_target_class and OBJECTIVES["simclr"].same_classes_for_eval
    assert not OBJECTIVES["clip"].poisons_target_class and not OBJECTIVES["clip"].same_classes_for_eval


def test_the_evaluator_is_knn_against_the_bank_for_simclr_and_zero_shot_for_clip(monkeypatch):
    built = []
    monkeypatch.setattr(SimCLREvaluator, "__init__", lambda self, *a, **kw: built.append(("knn", a, kw)))
    monkeypatch.setattr(Evaluator, "__init__", lambda self, *a, **kw: built.append(("zero-shot", a, kw)))
    banks = []
    common = dict(classnames=("a", "b", "c"), templates=("{}",), trigger="T", target=2, extra_triggers=None,
                  caption_trigger=None, bank=lambda: banks.append(1) or "BANK")
    OBJECTIVES["clip"].evaluator(SECTION, "M", "P", "TOK", "TEST", **common)
    assert banks == []  # the labelled training split is built only for kNN
    OBJECTIVES["simclr"].evaluator(SECTION, "M", "P", "TOK", "TEST", **common)
    (kind1, a1, kw1), (kind2, a2, kw2) = built
    assert kind1 == "zero-shot" and a1 == ("M", "P", "TOK", "TEST") and kw1["classnames"] == ("a", "b", "c")
    assert kind2 == "knn" and a2 == ("M", "P", "BANK", "TEST") and banks == [1]
    assert (kw2["num_classes"], kw2["target"], kw2["k"], kw2["temperature"]) == (3, 2, 7, 0.2)
