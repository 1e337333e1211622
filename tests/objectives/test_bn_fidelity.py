"""BatchNorm in the local training modes that pass augmented or adversarial images (issue #22):
RoCLIP's augmented pairs and adversarial training's PGD images run with BatchNorm frozen, and
the running statistics take the step that the clean batch gives them — the standard
objective's (``fedsim.training.frozen_batchnorm``, ``update_batchnorm``). So at lr 0 a robust
client sends back what a standard client sends, statistics included, and the global model
evaluates alike. Measured before: RoCLIP at lr 1e-9 moved a warm start's CA 0.713 → 0.333."""

import copy
from functools import partial

import pytest
import torch

from clients.attacks import BadNetPatch
from clients.honest import HonestClient, LocalSetup
from fedsim.data import SHAPES, ZERO_SHOT_TEMPLATES, load_split
from fedsim.evaluation import Evaluator, encode_images
from fedsim.models import create_model_and_transforms
from fedsim.objectives import TRAINING
from fedsim.records import float_state
from fedsim.training import batchnorms, frozen_batchnorm, update_batchnorm


@pytest.fixture(scope="module")
def warm():
    """A tiny CLIP whose BatchNorm statistics are those of other clean images (the pretrain
    split), so that a training-mode pass of the client's batch moves them — as a warm start's
    would be moved by a client's data."""
    model, preprocess, tokenizer = create_model_and_transforms("fedsim-tiny-resnet", seed=0)
    other = load_split("shapes", "pretrain", 64, 1)
    for m in batchnorms(model):
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        model.encode_image(preprocess(other.images))
    for m in batchnorms(model):
        m.momentum = 0.1
    model.eval()
    data = load_split("shapes", "train", 16, 0)
    test = load_split("shapes", "test", 40, 2)
    return model, preprocess, tokenizer, data, test, float_state(model)


def _fit(warm, objective, lr=0.0):
    """One client's local training (one epoch, one batch of all its pairs) from the warm start:
    the state it sends and its model."""
    model, preprocess, tokenizer, data, _, state = warm
    model = copy.deepcopy(model)
    client = HonestClient(model, preprocess, tokenizer, data, 0, objective=objective)
    setup = LocalSetup(epochs=1, lr=lr, batch_size=len(data), weight_decay=0.1, seed=0)
    sent, _ = client.fit(state, setup, server_round=1)
    return sent, model


COMMON = dict(classnames=list(SHAPES), templates=list(ZERO_SHOT_TEMPLATES), trigger=BadNetPatch(), target=3)


@pytest.fixture(scope="module")
def standard(warm):
    """The standard objective's client at lr 0: what it sends, and the zero-shot evaluation
    and test embeddings of that model."""
    _, preprocess, tokenizer, _, test, _ = warm
    sent, model = _fit(warm, None)
    evaluation = Evaluator(model, preprocess, tokenizer, test, **COMMON)()
    return sent, evaluation, encode_images(model, test.images, preprocess)


def _statistics(state):
    return {k: v for k, v in state.items() if k.endswith(("running_mean", "running_var"))}


MODES = [
    ("roclip", dict(every=1, pool_size=8)),  # a matching epoch: captions from the pool
    ("roclip", dict(every=2, pool_size=8)),  # a plain epoch on the augmented pairs
    ("adversarial", dict(eps=8 / 255, alpha=2 / 255, steps=2)),
]


@pytest.mark.parametrize("mode, params", MODES, ids=["roclip-matching", "roclip-plain", "adversarial"])
def test_at_lr_0_a_robust_client_sends_the_standard_clients_model(warm, standard, mode, params):
    model, preprocess, tokenizer, data, test, state = warm
    standard, evaluation, embeddings = standard
    robust, robust_model = _fit(warm, partial(TRAINING[mode], **params))
    # the standard step legitimately moves the statistics to the client's clean data ...
    stats = _statistics(state)
    assert max((standard[k] - v).abs().max().item() for k, v in stats.items()) > 1e-3
    # ... and the robust one moves them exactly there, not to its views' or PGD images'
    # (measured: 3e-8 and 0 apart; on the code before issue #22, which passed the views and PGD
    # images in training mode, up to 0.029 (RoCLIP) and 0.0037 (PGD) apart)
    for k in stats:
        torch.testing.assert_close(robust[k], standard[k], rtol=1e-5, atol=1e-6, msg=k)
    # at lr 0 no weight moves
    for k, v in state.items():
        if k not in stats:
            assert torch.equal(robust[k], v), k
    # the zero-shot evaluation of what each sends agrees
    got = Evaluator(robust_model, preprocess, tokenizer, test, **COMMON)()
    for metric in ("clean_accuracy", "attack_success_rate"):
        assert got[metric] == pytest.approx(evaluation[metric], abs=1e-6), metric
    torch.testing.assert_close(encode_images(robust_model, test.images, preprocess), embeddings, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode, params", MODES[::2], ids=["roclip", "adversarial"])
def test_a_robust_client_still_trains_its_weights(warm, mode, params):
    """The frozen statistics do not freeze the step: at lr > 0 the weights move (the loss's
    gradient reaches them through eval-mode BatchNorm)."""
    _, _, _, _, _, state = warm
    robust, _ = _fit(warm, partial(TRAINING[mode], **params), lr=1e-3)
    moved = [k for k, v in state.items() if k.startswith("visual.") and not torch.equal(robust[k], v)]
    assert any(k.endswith("weight") for k in moved)


def test_frozen_batchnorm_restores_each_layers_mode_and_update_batchnorm_takes_one_clean_step(warm):
    model = copy.deepcopy(warm[0]).train()
    preprocess, data = warm[1], warm[3]
    layers = batchnorms(model)
    layers[0].eval()  # a mixed model: each layer gets its own mode back
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with frozen_batchnorm(model):
        assert not any(m.training for m in layers) and model.training
        with torch.no_grad():
            model.encode_image(preprocess(data.images))
    assert [m.training for m in layers] == [False] + [True] * (len(layers) - 1)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # update_batchnorm: exactly a training-mode forward's step of the statistics, and no more
    reference = copy.deepcopy(model).train()
    with torch.no_grad():
        reference.encode_image(preprocess(data.images))
    model.eval()
    update_batchnorm(model, preprocess(data.images))
    assert not any(m.training for m in layers)
    moved = 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, reference.state_dict()[k]), k
        moved += not torch.equal(v, before[k])
    assert moved and all(p.grad is None for p in model.parameters())
