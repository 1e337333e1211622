"""CleanCLIP's server step as its released code does it (Bansal et al., ICCV 2023;
nishadsinghi/CleanCLIP): AutoAugment views, originals and views in one forward batch, 50
warm-up steps then cosine, λ2 = 0 as plain CLIP fine-tuning — and fedsim's BatchNorm choice
(the step at lr 0 is the identity) and the refusal of too small a clean set."""

import math
import typing

import pytest
import torch
import torchvision

from fedsim.config import CleanCLIPConfig, ConfigError, load_config
from fedsim.data import load_split
from fedsim.models import create_model_and_transforms
from fedsim.objectives import autoaugment_images, cleanclip_finetune, recompute_batchnorm
from fedsim.objectives import cleanclip as cleanclip_module
from fedsim.objectives.cleanclip import BatchNormMode, warmup_then_cosine
from fedsim.training import batchnorms

N, BATCH = 8, 4


@pytest.fixture(scope="module")
def clean():
    return load_split("shapes", "root", N, 0)


def _model():
    model, preprocess, tokenizer = create_model_and_transforms("fedsim-tiny-resnet", seed=0)
    return model, preprocess, tokenizer


def _finetune(model, preprocess, tokenizer, data, *, lr=1e-3, epochs=1, lambda2=1.0, batchnorm="eval", seed=0):
    return cleanclip_finetune(
        model, data.images, data.captions, tokenizer=tokenizer, preprocess=preprocess, epochs=epochs,
        lr=lr, batch_size=BATCH, weight_decay=0.1, lambda1=1.0, lambda2=lambda2,
        generator=torch.Generator().manual_seed(seed), batchnorm=batchnorm,
    )


def _buffers(model):
    return {k: v.clone() for k, v in model.state_dict().items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


@torch.no_grad()
def _zero_shot_logits(model, preprocess, tokenizer, images):
    model.eval()
    image = model.encode_image(preprocess(images), normalize=True)
    text = model.encode_text(tokenizer([f"a photo of a {s}" for s in ("circle", "square", "star")]),
                             normalize=True)
    return model.logit_scale.exp() * image @ text.t()


# ------------------------------------------------------------------ (a) BatchNorm: lr 0 is the identity
def test_at_lr_0_the_step_leaves_every_batchnorm_statistic_and_the_evaluation_unchanged(clean):
    model, preprocess, tokenizer = _model()
    probe = load_split("shapes", "test", 6, 0).images
    buffers, state = _buffers(model), {k: v.clone() for k, v in model.state_dict().items()}
    logits = _zero_shot_logits(model, preprocess, tokenizer, probe)
    assert len(buffers) == 3 * len(batchnorms(model)) > 0

    _finetune(model, preprocess, tokenizer, clean, lr=0.0, epochs=2)

    after = _buffers(model)
    assert all(torch.equal(after[k], v) for k, v in buffers.items())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert torch.equal(_zero_shot_logits(model, preprocess, tokenizer, probe), logits)


def test_the_server_step_at_a_vanishing_lr_sends_a_model_with_the_aggregates_metrics():
    from fedsim.app.build import build_evaluator, cleanclip_step
    from fedsim.records import float_state

    cfg = load_config(None, ["model.init='scratch'", "data.root_size=8", "data.test_size=40",
                             "defense.cleanclip.enabled=true", "defense.cleanclip.min_pairs=8",
                             "defense.cleanclip.epochs=1", "defense.cleanclip.batch_size=4",
                             "defense.cleanclip.lr=1e-12"])
    model, preprocess, tokenizer = create_model_and_transforms(cfg.model.name)
    evaluator = build_evaluator(cfg, model, preprocess, tokenizer)
    step = cleanclip_step(cfg, model, preprocess, tokenizer, evaluator)
    arrays = {k: v.numpy().copy() for k, v in float_state(model).items()}

    out, metrics = step(arrays, cfg.rounds)

    stats = [k for k in arrays if k.endswith(("running_mean", "running_var"))]
    assert stats and all((out[k] == arrays[k]).all() for k in stats)
    after = evaluator()  # the model as the step left it: the one sent
    assert after["clean_accuracy"] == metrics["clean_accuracy_before_cleanclip"]
    assert after["attack_success_rate"] == metrics["attack_success_rate_before_cleanclip"]


def test_the_references_train_mode_rewrites_the_statistics_and_recompute_restores_clean_ones(clean):
    model, preprocess, tokenizer = _model()
    buffers = _buffers(model)
    _finetune(model, preprocess, tokenizer, clean, lr=0.0, batchnorm="train")
    assert any(not torch.equal(_buffers(model)[k], v) for k, v in buffers.items() if "running" in k)

    # "recompute" at lr 0: the statistics of the clean pairs alone, whatever the views did
    model, preprocess, tokenizer = _model()
    reference, _, _ = _model()
    _finetune(model, preprocess, tokenizer, clean, lr=0.0, batchnorm="recompute")
    recompute_batchnorm(reference, clean.images, preprocess, BATCH)
    got, want = _buffers(model), _buffers(reference)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_the_config_names_the_same_batchnorm_modes_as_the_objective():
    assert set(typing.get_args(CleanCLIPConfig.model_fields["batchnorm"].annotation)) == \
        set(typing.get_args(BatchNormMode))
    assert CleanCLIPConfig().batchnorm == "eval"


# ------------------------------------------------------------------ (b) AutoAugment views
def test_the_image_views_are_autoaugments_default_policy_seeded_per_image(clean, monkeypatch):
    images = clean.images
    rng = torch.get_rng_state()
    views = autoaugment_images(images, torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is left alone
    assert views.dtype == torch.uint8 and views.shape == images.shape
    assert torch.equal(views, autoaugment_images(images, torch.Generator().manual_seed(5)))

    seeds = torch.randint(0, 2**62, (len(images),), generator=torch.Generator().manual_seed(5)).tolist()
    auto = torchvision.transforms.AutoAugment(torchvision.transforms.AutoAugmentPolicy.IMAGENET)
    expected = []
    for image, seed in zip(images, seeds):
        torch.manual_seed(seed)
        expected.append(auto(image))
    torch.set_rng_state(rng)
    assert torch.equal(views, torch.stack(expected))
    assert not torch.equal(views, images)


def test_the_step_draws_its_views_from_torchvisions_autoaugment(clean, monkeypatch):
    made, calls = [], []
    real = torchvision.transforms.AutoAugment

    class Spy(real):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self.policy)

        def forward(self, img):
            calls.append(img.shape)
            return super().forward(img)

    monkeypatch.setattr(torchvision.transforms, "AutoAugment", Spy)
    model, preprocess, tokenizer = _model()
    _finetune(model, preprocess, tokenizer, clean, epochs=2)
    assert made and set(made) == {torchvision.transforms.AutoAugmentPolicy.IMAGENET}
    assert calls == [clean.images.shape[1:]] * (2 * N)  # one view per image per epoch


# ------------------------------------------------------------------ (c) one forward of [originals; views]
def _record_forwards(model):
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append((args[0].detach().clone(), args[1].clone())))
    return seen


def test_one_forward_pass_per_batch_holds_the_originals_then_their_views(clean, monkeypatch):
    drawn = []

    def recording(images, generator):
        views = autoaugment_images(images, generator)
        drawn.append((images.clone(), views))
        return views

    monkeypatch.setattr(cleanclip_module, "autoaugment_images", recording)
    model, preprocess, tokenizer = _model()
    seen = _record_forwards(model)
    _finetune(model, preprocess, tokenizer, clean)

    assert len(seen) == len(drawn) == N // BATCH  # one forward per batch, no second one
    for (pixels, tokens), (originals, views) in zip(seen, drawn):
        b = len(originals)
        assert pixels.shape[0] == tokens.shape[0] == 2 * b
        assert torch.equal(pixels, preprocess(torch.cat([originals, views])))
        rows = [next(i for i, image in enumerate(clean.images) if torch.equal(image, o)) for o in originals]
        assert torch.equal(tokens[:b], tokenizer([clean.captions[i] for i in rows]))  # then their edits


# ------------------------------------------------------------------ (d) λ2 = 0: plain fine-tuning
def test_lambda2_0_is_plain_clip_fine_tuning_with_no_view_through_the_model(clean, monkeypatch):
    monkeypatch.setattr(torchvision.transforms, "AutoAugment",
                        lambda *a, **k: pytest.fail("λ2 = 0 drew an image view"))
    monkeypatch.setattr(cleanclip_module, "eda", lambda *a, **k: pytest.fail("λ2 = 0 drew a caption edit"))
    model, preprocess, tokenizer = _model()
    seen = _record_forwards(model)
    loss = _finetune(model, preprocess, tokenizer, clean, lambda2=0.0)

    originals = preprocess(clean.images)
    assert len(seen) == N // BATCH and math.isfinite(loss)
    for pixels, tokens in seen:
        assert pixels.shape[0] == tokens.shape[0] == BATCH
        assert all(any(torch.equal(row, o) for o in originals) for row in pixels)


# ------------------------------------------------------------------ (e) warm-up, then cosine
def test_the_learning_rate_warms_up_then_decays_as_the_references_scheduler(clean, monkeypatch):
    lrs = []
    real = torch.optim.AdamW

    class Spy(real):
        def step(self, *args, **kwargs):
            lrs.append(self.param_groups[0]["lr"])
            return super().step(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", Spy)
    data = load_split("shapes", "root", 20, 0)
    model, preprocess, tokenizer = _model()
    lr = 1e-3
    cleanclip_finetune(model, data.images, data.captions, tokenizer=tokenizer, preprocess=preprocess,
                       epochs=1, lr=lr, batch_size=2, weight_decay=0.1, lambda1=1.0, lambda2=0.0,
                       generator=torch.Generator().manual_seed(0))

    total, w = 10, 2  # 10 steps: a warm-up of min(50, ⌊0.2 · 10⌋) = 2
    # src/scheduler.py of the reference, line for line
    ref = [lr * (s + 1) / w if s < w else 0.5 * (1 + math.cos(math.pi * (s - w) / (total - w))) * lr
           for s in range(total)]
    assert lrs == pytest.approx(ref, rel=1e-12)
    peak = lrs.index(max(lrs))
    assert peak == w - 1 and all(a < b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))
    # the last warm-up step and the first cosine step both reach lr, as in the reference
    assert lrs[peak + 1] == lrs[peak] and all(a > b for a, b in zip(lrs[peak + 1:], lrs[peak + 2:]))


def test_the_warm_up_is_the_references_50_steps_when_the_fine_tuning_is_long_enough():
    # 1,000 pairs at batch 32 for 10 epochs: 320 steps
    factors = [warmup_then_cosine(s, 320) for s in range(320)]
    assert factors[49] == 1.0 and factors[48] == pytest.approx(49 / 50) and factors[0] == pytest.approx(1 / 50)
    assert factors[50] == 1.0 > factors[51] and factors[-1] > 0.0


# ------------------------------------------------------------------ seeded, the global RNG alone
def test_the_fine_tuning_is_seeded_and_leaves_the_global_rng_alone(clean):
    states = []
    for _ in range(2):
        model, preprocess, tokenizer = _model()
        rng = torch.get_rng_state()
        _finetune(model, preprocess, tokenizer, clean, seed=3)
        assert torch.equal(torch.get_rng_state(), rng)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


# ------------------------------------------------------------------ (f) too few clean pairs
def test_the_config_refuses_fewer_clean_pairs_than_min_pairs():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["defense.cleanclip.enabled=true", "data.root_size=999"])
    message = str(e.value)
    for part in ("data.root_size=999", "defense.cleanclip.min_pairs=1000", "200", "1,000"):
        assert part in message, part
    assert CleanCLIPConfig().min_pairs == 1000
    assert load_config(None, ["defense.cleanclip.enabled=true", "data.root_size=1000"]).data.root_size == 1000
    cfg = load_config(None, ["defense.cleanclip.enabled=true", "data.root_size=8", "defense.cleanclip.min_pairs=8"])
    assert cfg.defense.cleanclip.min_pairs == 8
    # switched off, a small root split (FLTrust's, EmInspector's) is no CleanCLIP matter
    assert load_config(None, ["data.root_size=10"]).data.root_size == 10
    with pytest.raises(ConfigError, match="min_pairs"):
        load_config(None, ["defense.cleanclip.min_pairs=1"])
