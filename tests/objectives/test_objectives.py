"""The contrastive defenses' objectives: CleanCLIP's loss and server step, the augmentations,
RoCLIP's matching, adversarial training's PGD, and the config of each."""

import math
from collections import Counter

import numpy as np
import pytest
import torch

from fedsim.config import ConfigError, load_config
from fedsim.data import load_split
from fedsim.models import create_model_and_transforms, tokenize
from fedsim.objectives import (
    TRAINING,
    augment_images,
    cleanclip_loss,
    eda,
    nearest_captions,
    pgd_images,
    roclip,
)
from fedsim.training import clip_loss


def _t(rows):
    return torch.tensor(rows, dtype=torch.float64)


# --------------------------------------------------------------------------- CleanCLIP's loss
def test_cleanclip_loss_matches_a_hand_computation():
    image, text = _t([[1, 0], [0, 1]]), _t([[0.6, 0.8], [0, 1]])
    image_view, text_view = _t([[0.8, 0.6], [0.6, 0.8]]), _t([[1, 0], [0.6, 0.8]])
    s, lambda1, lambda2 = 2.0, 1.0, 0.5
    # s·I Tᵀ = [[1.2, 0], [1.6, 2]]: rows image→text, columns text→image
    i2t = (-math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(0)))
           - math.log(math.exp(2) / (math.exp(1.6) + math.exp(2)))) / 2
    t2i = (-math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(1.6)))
           - math.log(math.exp(2) / (math.exp(0) + math.exp(2)))) / 2
    l_clip = (i2t + t2i) / 2
    # s·I Ĩᵀ = [[1.6, 1.2], [1.2, 1.6]]
    l_image = -math.log(math.exp(1.6) / (math.exp(1.6) + math.exp(1.2)))
    # s·T T̃ᵀ = [[1.2, 2.0], [0, 1.6]]
    l_text = (-math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(2.0)))
              - math.log(math.exp(1.6) / (math.exp(0) + math.exp(1.6)))) / 2
    expected = lambda1 * l_clip + lambda2 * (l_image + l_text) / 2
    got = cleanclip_loss(image, text, image_view, text_view, torch.tensor(s), lambda1, lambda2)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # λ2 = 0 is CLIP's loss alone
    assert cleanclip_loss(image, text, image_view, text_view, torch.tensor(s), 1.0, 0.0).item() == \
        pytest.approx(l_clip, rel=1e-12)


# --------------------------------------------------------------------------- augmentations
CAPTIONS = ["a photo of a small red star on a gray background", "a blue circle", "square",
            "a large green triangle in the top left corner of the image"]


def test_eda_is_seeded_and_only_deletes_or_swaps_words():
    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return [eda(c, g) for _ in range(50) for c in CAPTIONS]

    first = run(7)
    assert first == run(7) and first != run(8)
    kinds = Counter()
    for original, edited in zip(CAPTIONS * 50, [e for i in range(50) for e in first[i * 4:(i + 1) * 4]]):
        words, new = original.split(), edited.split()
        assert new and not Counter(new) - Counter(words)  # no word is new or repeated more
        if Counter(new) == Counter(words):
            kinds["swap" if new != words else "unchanged"] += 1
        else:  # a deletion keeps the order of what is left
            it = iter(words)
            assert all(w in it for w in new)
            kinds["delete"] += 1
    assert kinds["swap"] and kinds["delete"]
    assert eda("square", torch.Generator().manual_seed(0)) == "square"


def test_augmented_views_are_seeded_sized_and_leave_the_global_rng_alone():
    images = load_split("shapes", "train", 6, 0).images
    state = torch.get_rng_state()
    a = augment_images(images, 24, torch.Generator().manual_seed(1))
    b = augment_images(images, 24, torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), state)
    assert a.shape == (6, 3, 24, 24) and a.dtype == torch.uint8 and torch.equal(a, b)
    assert not torch.equal(a, augment_images(images, 24, torch.Generator().manual_seed(2)))


# --------------------------------------------------------------------------- RoCLIP
def test_roclip_matches_each_image_to_the_most_cosine_similar_pool_caption():
    pool = torch.tensor([[1.0, 0, 0], [0, 10, 0], [0, 0, 1], [0.7, 0.7, 0]])
    images = torch.tensor([
        [0.6, 0.8, 0.0],   # cosines .6, .8, 0, .99 → 3 (a dot product would pick the long row 1)
        [0.0, 0.1, 5.0],   # → 2
        [3.0, -1.0, 0.0],  # cosines .95, −.32, 0, .45 → 0
        [-0.1, 2.0, 0.0],  # cosines −.05, 1.0, 0, .67 → 1
    ])
    assert nearest_captions(images, pool).tolist() == [3, 2, 0, 1]


@pytest.fixture(scope="module")
def tiny():
    model, preprocess, tokenizer = create_model_and_transforms("fedsim-tiny-resnet", seed=0)
    data = load_split("shapes", "train", 8, 0)
    return model, preprocess, tokenizer, data


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    towers = {"visual": False, "text": False}
    for name, p in model.named_parameters():
        if name.startswith("logit_"):  # the temperature is neither tower's
            continue
        if p.grad is not None and p.grad.abs().sum() > 0:
            towers["visual" if name.startswith("visual.") else "text"] = True
    return towers


def test_roclip_trains_only_the_image_tower_against_the_pool_in_a_matching_epoch(tiny):
    model, preprocess, tokenizer, data = tiny
    loss = roclip(model, data.images, data.captions, tokenizer=tokenizer, preprocess=preprocess,
                  generator=torch.Generator().manual_seed(0), epoch_offset=0, every=2, pool_size=4)
    idx = torch.arange(4)
    # epoch 0 is the run's first (t = 1): plain pairs, both towers learn
    assert _grads(model, loss(model, idx, 0)) == {"visual": True, "text": True}
    # t = 2: the captions are the pool's (no gradient), only the image tower learns
    assert _grads(model, loss(model, idx, 1)) == {"visual": True, "text": False}


# --------------------------------------------------------------------------- adversarial training
def test_pgd_stays_in_the_ball_and_the_pixel_range_and_raises_the_loss(tiny):
    model, preprocess, tokenizer, data = tiny
    tokens = tokenize(tokenizer, data.captions)
    model.zero_grad(set_to_none=True)
    eps = 8 / 255
    adv = pgd_images(model, data.images, tokens, preprocess=preprocess, eps=eps, alpha=3 / 255,
                     steps=3, generator=torch.Generator().manual_seed(0))
    x = data.images.float() / 255
    assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        clean = clip_loss(*model(preprocess(x), tokens)[:3])
        attacked = clip_loss(*model(preprocess(adv), tokens)[:3])
    # PGD ascends the loss by design: +0.0075 on an Intel Xeon (2026-12-06), 7× the threshold
    assert attacked > clean + 1e-3


def test_every_training_mode_is_a_config_choice_with_its_fields_as_keywords():
    import inspect

    from fedsim.objectives import TRAINING_FIELDS, TRAINING_INPUTS, training_kwargs
    from fedsim.runner import load

    for mode, factory in TRAINING.items():
        c = load(None, [f"clients.training='{mode}'"]).clients
        keywords = [p for p in inspect.signature(factory).parameters if p not in TRAINING_INPUTS]
        assert sorted(training_kwargs(c)) == sorted(keywords) == sorted(TRAINING_FIELDS.get(mode, {}))
    with pytest.raises(ConfigError, match=r"clients.training_params.every: roclip takes no such parameter; "
                                          r"set it as clients.roclip_every"):
        load(None, ["clients.training='roclip'", "clients.training_params={ every = 3 }"])
    with pytest.raises(ConfigError, match=r"clients.training_params.k: standard takes no such parameter; allowed: none"):
        load(None, ["clients.training_params={ k = 3 }"])


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize("overrides, field", [
    (["clients.training='robust'"], "clients.training='robust'"),
    (["clients.roclip_every=3"], "roclip_every=3 applies to training = 'roclip' only"),
    (["clients.training='roclip'", "clients.adversarial_steps=5"], "adversarial_steps=5"),
    (["clients.training='adversarial'", "clients.adversarial_eps=0"], "clients.adversarial_eps=0"),
    (["defense.cleanclip.enabled=true", "defense.cleanclip.at_end=false"], "defense.cleanclip: enabled = true with every = 0"),
    (["defense.cleanclip.enabled=true", "data.root_size=1"], "data.root_size=1"),
    (["defense.cleanclip.lambda1=0", "defense.cleanclip.lambda2=0"], "defense.cleanclip: lambda1 = lambda2 = 0"),
    (["defense.cleanclip.epochs=0"], "defense.cleanclip.epochs=0"),
    (["defense.cleanclip.every=-1"], "defense.cleanclip.every=-1"),
    (["defense.cleanclip.lr=0"], "defense.cleanclip.lr=0"),
    (["defense.cleanclip.strength=1"], "defense.cleanclip.strength: unknown key"),
    (["defense.cleanclip.batchnorm='frozen'"], "defense.cleanclip.batchnorm='frozen'"),
    (["defense.cleanclip.min_pairs=1"], "defense.cleanclip.min_pairs=1"),
    (["defense.cleanclip.enabled=true", "data.root_size=200"], "data.root_size=200"),
])
def test_config_errors_name_the_field(overrides, field):
    from fedsim.runner import load

    with pytest.raises(ConfigError) as e:
        load(None, overrides)
    assert field in str(e.value)


# --------------------------------------------------------------------------- CleanCLIP's step
def test_the_cleanclip_step_runs_in_the_rounds_it_names_and_keeps_shapes_and_dtypes():
    from fedsim.app.build import build_evaluator, cleanclip_step
    from fedsim.records import float_state

    cfg = load_config(None, ["rounds=3", "model.init='scratch'", "data.root_size=8", "data.test_size=20",
                             "defense.cleanclip.enabled=true", "defense.cleanclip.min_pairs=8",
                             "defense.cleanclip.every=2",
                             "defense.cleanclip.at_end=false", "defense.cleanclip.epochs=1",
                             "defense.cleanclip.batch_size=4", "defense.cleanclip.lr=1e-3"])
    model, preprocess, tokenizer = create_model_and_transforms(cfg.model.name)
    step = cleanclip_step(cfg, model, preprocess, tokenizer, build_evaluator(cfg, model, preprocess, tokenizer))
    arrays = {k: v.numpy().copy() for k, v in float_state(model).items()}

    for server_round in (1, 3):  # not a multiple of every = 2, and at_end is off
        same, metrics = step(arrays, server_round)
        assert same is arrays and metrics == {}
    out, metrics = step(arrays, 2)
    assert list(out) == list(arrays)
    assert all(out[k].shape == a.shape and out[k].dtype == a.dtype for k, a in arrays.items())
    assert any(not np.array_equal(out[k], a) for k, a in arrays.items())
    assert set(metrics) == {"clean_accuracy_before_cleanclip", "attack_success_rate_before_cleanclip",
                            "cleanclip_loss"}
    assert math.isfinite(metrics["cleanclip_loss"])
