"""The contrastive attacks as their authors' code runs them (issue #22): BadCLIP's patch
optimisation leaves the model exactly as it was, weighs the triplet term by 500 and puts the
patch in the middle; BadEncoder freezes BatchNorm, steps SGD and augments the references; and
with ``clients.training_scope = "all"`` a platform-enforced trainer runs the clients' robust
mode on the malicious clients' poisoned data too."""

import importlib
import inspect

import pytest
import torch

from clients.attacks import BadNetPatch, badclip_optimize_patch, badencoder_finetune
from clients.attacks.contrastive import badclip_loss, middle_position
from clients.honest import LocalSetup
from clients.malicious import MaliciousClient
from fedsim.app import build_client, trigger_of
from clients.attacks.learned import BADCLIP_DEFAULTS
from fedsim.config import load_config
from fedsim.data import COLORS, caption_for, generate
from fedsim.models import create_model_and_transforms, tokenize
from fedsim.objectives import TRAINING
from fedsim.records import float_state
from fedsim.training import batchnorms


@pytest.fixture(scope="module")
def tiny():
    """A tiny CLIP (BatchNorm towers) with the statistics of clean shapes, and shapes data."""
    model, preprocess, tokenizer = create_model_and_transforms("fedsim-tiny-resnet", seed=0)
    data = generate(120, 0)
    for m in batchnorms(model):
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        model.encode_image(preprocess(data.images[:64]))
    for m in batchnorms(model):
        m.momentum = 0.1
    return model, preprocess, tokenizer, data


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- BadCLIP
def test_badclip_leaves_every_parameter_and_buffer_of_the_model_bitwise_unchanged(tiny):
    model, preprocess, tokenizer, data = tiny
    model.train()  # a client's model comes out of local training in training mode
    before = _snapshot(model)
    flags = [p.requires_grad for p in model.parameters()]
    tokens = tokenize(tokenizer, [caption_for(3, c) for c in range(len(COLORS))])
    badclip_optimize_patch(model, preprocess, data.images[:24], target_text_tokens=tokens,
                           target_images=data.images[data.labels == 3][:4], steps=3, lr=0.05,
                           batch_size=8, generator=torch.Generator().manual_seed(0))
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():  # weights, BatchNorm statistics, num_batches_tracked
        assert torch.equal(after[k], v), k
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_badclip_defaults_are_the_authors_triplet_weight_500_and_a_patch_in_the_middle(tiny):
    for function in (badclip_loss, badclip_optimize_patch):
        assert inspect.signature(function).parameters["lambda_image"].default == 500
    assert inspect.signature(badclip_optimize_patch).parameters["location"].default == "middle"
    assert BADCLIP_DEFAULTS["lambda_image"] == 500 and BADCLIP_DEFAULTS["location"] == "middle"
    # the authors' embed_patch: y = int(⌊H/2⌋ − s/2), x likewise
    assert middle_position(4, 32, 32) == (14, 14)
    assert middle_position(5, 32, 32) == (13, 13)
    assert middle_position(16, 224, 224) == (104, 104)
    assert middle_position(0.125, 224, 160) == (102, 70)  # 20 px: 0.125 of the shorter side
    # the learned patch lands in the middle of the images it was learned on
    model, preprocess, tokenizer, data = tiny
    tokens = tokenize(tokenizer, [caption_for(3, 0)])
    learned = badclip_optimize_patch(model, preprocess, data.images[:8], target_text_tokens=tokens,
                                     target_images=data.images[data.labels == 3][:2], steps=1, lr=0.05,
                                     generator=torch.Generator().manual_seed(0))
    assert learned.location == (14, 14)
    assert learned(torch.zeros(1, 3, 32, 32))[0, :, 14:18, 14:18].equal(learned.patch)
    # and so does the config's trigger (the pixels the run's config.toml holds)
    pattern = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(1)).tolist()
    cfg = load_config(None, ["attack.data.trigger.name='badclip'",
                             f"attack.data.trigger.params={{pattern={pattern}}}"])
    triggered = trigger_of(cfg)(torch.zeros(1, 3, 32, 32))[0]
    changed = (triggered != 0).any(0).nonzero()
    assert changed.min(0).values.tolist() == [14, 14] and changed.max(0).values.tolist() == [17, 17]
    # a location given in the config still wins
    cfg = load_config(None, ["attack.data.trigger.name='badclip'",
                             f"attack.data.trigger.params={{pattern={pattern}, location='bottom_right'}}"])
    assert (trigger_of(cfg)(torch.zeros(1, 3, 32, 32))[0, :, 28:, 28:] != 0).any()


# --------------------------------------------------------------------------- BadEncoder
def test_badencoder_freezes_batchnorm_steps_sgd_and_augments_the_references(tiny, monkeypatch):
    import copy

    model = copy.deepcopy(tiny[0]).train()
    preprocess, data = tiny[1], tiny[3]
    contrastive = importlib.import_module("clients.attacks.contrastive")
    made, views = [], []

    class SpySGD(torch.optim.SGD):
        def __init__(self, params, **kwargs):
            params = list(params)
            made.append((params, kwargs))
            super().__init__(params, **kwargs)

    def no_adam(*args, **kwargs):
        raise AssertionError("BadEncoder steps SGD, as the authors' code does")

    real_views = contrastive.reference_views

    def spy_views(images, generator):
        views.append(images)
        return real_views(images, generator)

    monkeypatch.setattr(torch.optim, "SGD", SpySGD)
    monkeypatch.setattr(torch.optim, "Adam", no_adam)
    monkeypatch.setattr(contrastive, "reference_views", spy_views)
    before = _snapshot(model)
    reference = data.images[data.labels == 3][:4]
    badencoder_finetune(model, preprocess, data.images[:32], BadNetPatch(), reference, epochs=2, lr=1e-2,
                        batch_size=16, generator=torch.Generator().manual_seed(0))
    # SGD with the authors' momentum and weight decay, on the image tower's non-BatchNorm weights
    assert len(made) == 1
    params, kwargs = made[0]
    assert kwargs == {"lr": 1e-2, "momentum": 0.9, "weight_decay": 5e-4}
    affine = {id(p) for m in batchnorms(model.visual) for p in m.parameters(recurse=False)}
    assert {id(p) for p in params} == {id(p) for p in model.visual.parameters()} - affine
    # a fresh view of the references at every step (2 epochs × 2 batches)
    assert len(views) == 4 and all(torch.equal(v, reference) for v in views)
    after = model.state_dict()
    bn = [name for name, m in model.named_modules() if m in batchnorms(model)]
    for k, v in before.items():
        if any(k.startswith(f"{name}.") for name in bn):  # statistics and affine weights
            assert torch.equal(after[k], v), k
    moved = [k for k, v in before.items() if k.startswith("visual.") and not torch.equal(after[k], v)]
    assert moved
    assert all(torch.equal(after[k], v) for k, v in before.items() if not k.startswith("visual."))
    assert model.training and all(m.training for m in batchnorms(model))
    assert all(p.requires_grad for p in model.parameters())


# --------------------------------------------------------------------------- training scope
def _cfg(*sets):
    return load_config(None, ["data.train_size=200", "clients.num=4", "clients.per_round=4",
                              "attack.malicious=[0, 2]", "attack.data.local_epochs=1", *sets])


@pytest.mark.parametrize("scope", ["honest", "all"])
def test_with_scope_all_a_malicious_client_trains_roclip_on_its_poisoned_data(scope, monkeypatch):
    cfg = _cfg("clients.training='roclip'", f"clients.training_scope='{scope}'", "clients.roclip_pool=8")
    client = build_client(cfg, cfg.model_dump_json(), 0)
    honest = build_client(cfg, cfg.model_dump_json(), 1)
    assert isinstance(client, MaliciousClient) and not isinstance(honest, MaliciousClient)
    assert honest.objective.func is TRAINING["roclip"]
    if scope == "honest":
        assert client.objective is None  # CLIP's InfoNCE on its pairs, as its attack says
    else:
        assert client.objective.func is TRAINING["roclip"]
        assert client.objective.keywords == {"every": 2, "pool_size": 8}
    # what its local training runs on: RoCLIP's augmented views of the poisoned images
    roclip_module = importlib.import_module("fedsim.objectives.roclip")
    seen = []
    real = roclip_module.augment_images

    def spy(images, size, generator):
        seen.append(images)
        return real(images, size, generator)

    monkeypatch.setattr(roclip_module, "augment_images", spy)
    client.fit(float_state(client.model), LocalSetup(1, 1e-3, 32, 0.1, seed=0), server_round=1)
    if scope == "honest":
        assert seen == []
    else:
        poisoned = {tuple(x.flatten().tolist()) for x in client.poisoned.images}
        assert seen and all(tuple(x.flatten().tolist()) in poisoned for batch in seen for x in batch)
        assert sum(len(batch) for batch in seen) == len(client.poisoned)


def test_with_scope_all_a_malicious_client_trains_adversarially():
    cfg = _cfg("clients.training='adversarial'", "clients.training_scope='all'")
    client = build_client(cfg, cfg.model_dump_json(), 2)
    assert client.objective.func is TRAINING["adversarial"]
    assert client.objective.keywords == {"eps": 4 / 255, "alpha": 1 / 255, "steps": 3}
    # the standard mode leaves nothing to enforce
    cfg = _cfg("clients.training_scope='all'")
    assert build_client(cfg, cfg.model_dump_json(), 0).objective is None
