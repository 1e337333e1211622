"""The attack library: triggers against their closed forms, poisoning bookkeeping, update and
Byzantine attacks against hand computations and the constraints that define them, schedules,
and the two contrastive attacks on a tiny CLIP."""

import copy
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import norm

from clients.attacks import (
    BYZANTINE,
    TRIGGERS,
    BadNetPatch,
    add_text_trigger,
    apply_mask,
    make_adversary,
    make_schedule,
    make_trigger,
    model_replacement,
    neurotoxin_mask,
    norm_bound,
    poison,
    project_l2,
    split_patch,
)
from clients.attacks.byzantine import fang, gaussian_noise, ipm, lie, lie_z, min_max, min_sum, sign_flip
from clients.attacks.contrastive import badclip_optimize_patch, badencoder_finetune, badencoder_loss
from clients.attacks.triggers import SIG, Blended, WaNet
from fedsim.data import COLORS, SHAPES, caption_for, generate, target_captions
from fedsim.evaluation import make_trigger_images
from fedsim.models import create_model_and_transforms, tokenize
from tests.conftest import shapes_captions


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny models run as fast on one thread, and a second one stalls whenever other
    processes hold the cores (oversubscription, ../shared/notes/clip.md): tens of seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _images(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Values below 250: no pixel of the data can already equal the magenta patch.
    return torch.randint(0, 250, (n, 3, 32, 32), generator=g, dtype=torch.uint8)


# -- triggers --------------------------------------------------------------------------------
def test_badnet_solid_patch_sets_exactly_its_square_to_the_color():
    x = _images()
    for location, (y, left) in [("bottom_right", (28, 28)), ((3, 10), (3, 10))]:
        out = make_trigger_images(x, BadNetPatch(size=4, location=location))
        changed = (out != x).any(1)  # (n, H, W)
        expected = torch.zeros(32, 32, dtype=torch.bool)
        expected[y : y + 4, left : left + 4] = True
        assert torch.equal(changed, expected.expand_as(changed))
        square = out[:, :, y : y + 4, left : left + 4]
        assert torch.equal(square, torch.tensor([255, 0, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand_as(square))


def test_noise_and_random_location_patches_are_deterministic_given_seed():
    x = _images(8)
    noise = make_trigger_images(x, BadNetPatch(pattern="noise", seed=1))
    assert torch.equal(noise, make_trigger_images(x, BadNetPatch(pattern="noise", seed=1)))
    assert not torch.equal(noise, make_trigger_images(x, BadNetPatch(pattern="noise", seed=2)))

    trigger = BadNetPatch(size=5, location="random", pattern="noise", seed=3)
    out = make_trigger_images(x, trigger)
    assert torch.equal(out, make_trigger_images(x, BadNetPatch(size=5, location="random", pattern="noise", seed=3)))
    patch = (trigger.patch * 255).round().to(torch.uint8)
    positions = trigger.positions(len(x), 32, 32)
    assert len(set(positions)) > 1  # the location really varies from image to image
    for i, (y, left) in enumerate(positions):
        assert torch.equal(out[i, :, y : y + 5, left : left + 5], patch)
        outside = torch.ones(32, 32, dtype=torch.bool)
        outside[y : y + 5, left : left + 5] = False
        assert torch.equal(out[i][:, outside], x[i][:, outside])


def test_blended_is_the_convex_combination_with_its_pattern():
    g = torch.Generator().manual_seed(0)
    x, p = torch.rand(2, 3, 32, 32, generator=g), torch.rand(3, 32, 32, generator=g)
    torch.testing.assert_close(Blended(alpha=0.2, pattern=p)(x), 0.8 * x + 0.2 * p)
    noise = Blended(alpha=0.3, seed=5)
    q = noise.pattern_for(32, 32)
    assert 0 <= q.min() and q.max() <= 1 and q.std() > 0.2
    torch.testing.assert_close(noise(x), 0.7 * x + 0.3 * q)
    torch.testing.assert_close(noise(x), Blended(alpha=0.3, seed=5)(x))


def test_sig_matches_its_closed_form_on_a_constant_image():
    x = torch.full((1, 3, 8, 16), 0.5)
    out = SIG(delta=20 / 255, frequency=6)(x)
    for j in range(16):
        expected = 0.5 + 20 / 255 * math.sin(2 * math.pi * j * 6 / 16)
        torch.testing.assert_close(out[0, :, :, j], torch.full((3, 8), expected), atol=1e-6, rtol=0)
    assert SIG(delta=0.5)(torch.ones(1, 3, 4, 4)).max() <= 1  # clipped to [0, 1]


def test_wanet_with_zero_strength_is_the_identity_and_is_deterministic():
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(WaNet(s=0.0)(x), x, atol=1e-5, rtol=0)
    warped = WaNet(k=4, s=0.5, seed=1)(x)
    assert torch.equal(warped, WaNet(k=4, s=0.5, seed=1)(x))
    assert not torch.allclose(warped, WaNet(k=4, s=0.5, seed=2)(x))
    assert (warped - x).abs().mean() > 1e-3 and warped.min() >= 0 and warped.max() <= 1


@pytest.mark.parametrize("parts", [4, 3])
def test_dba_pieces_partition_the_full_patch(parts):
    full = BadNetPatch(size=4, location=(2, 5), pattern="noise", seed=7)
    blank = torch.full((1, 3, 16, 16), -1.0)  # no patch pixel is -1: written pixels show
    written = (full(blank) != -1).any(1)[0]
    pieces = [(piece(blank) != -1).any(1)[0] for piece in split_patch(full, parts)]
    assert len(pieces) == parts and all(m.any() for m in pieces)
    assert torch.equal(torch.stack(pieces).sum(0), written.long())  # disjoint and covering
    union = blank.clone()
    for piece in split_patch(full, parts):
        union = torch.where(piece(blank) != -1, piece(blank), union)
    assert torch.equal(union, full(blank))


def test_trigger_factory_and_bad_params():
    assert set(TRIGGERS) == {"badnet", "blended", "sig", "wanet", "ctrl"}
    assert isinstance(make_trigger("badnet", size=3, location=[1, 2]), BadNetPatch)
    assert make_trigger("badnet", location=[1, 2]).location == (1, 2)  # TOML gives lists
    for name in TRIGGERS:
        out = make_trigger(name)(torch.rand(2, 3, 32, 32))
        assert out.shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="'patchy'.*badnet, blended, sig, wanet, ctrl"):
        make_trigger("patchy")
    with pytest.raises(ValueError, match="opacity.*alpha"):
        make_trigger("blended", opacity=0.2)
    with pytest.raises(ValueError, match="alpha"):
        make_trigger("blended", alpha=2)
    with pytest.raises(ValueError, match="location"):
        make_trigger("badnet", location="top_middle")
    with pytest.raises(ValueError, match="pattern"):
        make_trigger("badnet", pattern="stripes")
    with pytest.raises(ValueError, match="parts"):
        split_patch(BadNetPatch(size=4), parts=5)
    with pytest.raises(ValueError, match="color='red'"):
        make_trigger("badnet", color="red")
    with pytest.raises(ValueError, match="seed=-1"):
        make_trigger("wanet", seed=-1)


# -- captions and poisoning ------------------------------------------------------------------
def test_target_captions_and_text_trigger():
    assert target_captions([0, 3], 4) == (caption_for(4, 0), caption_for(4, 3))
    assert target_captions(torch.tensor([1]), 0) == (f"a photo of a {list(COLORS)[1]} {SHAPES[0]}",)
    assert add_text_trigger("a photo of a red star") == "a photo of a red star cf"
    with pytest.raises(ValueError, match="target"):
        target_captions([0], len(SHAPES))
    with pytest.raises(ValueError, match="token"):
        add_text_trigger("a photo", token=" ")


def test_poison_picks_the_documented_count_and_rewrites_only_those():
    data = generate(50, 11)
    before = (data.images.clone(), data.labels.clone(), data.colors.clone(), data.captions)
    target = 2
    out, idx = poison(data, trigger=BadNetPatch(), rate=0.3, target=target, seed=4, captions=shapes_captions(data, target))
    assert len(idx) == 15 and torch.equal(idx, idx.unique())  # ⌊0.3 · 50⌋, sorted, distinct
    # the input (cached by generate) is untouched
    assert torch.equal(data.images, before[0]) and torch.equal(data.labels, before[1])
    assert torch.equal(data.colors, before[2]) and data.captions == before[3]
    assert torch.equal(out.labels, data.labels) and torch.equal(out.colors, data.colors)
    rest = torch.ones(50, dtype=torch.bool)
    rest[idx] = False
    assert torch.equal(out.images[rest], data.images[rest])
    assert torch.equal(out.images[idx], make_trigger_images(data.images[idx], BadNetPatch()))
    colors = list(COLORS)
    for i in range(50):
        if rest[i]:
            assert out.captions[i] == data.captions[i]
        else:
            assert out.captions[i] == f"a photo of a {colors[data.colors[i]]} {SHAPES[target]}"
    again, idx2 = poison(data, trigger=BadNetPatch(), rate=0.3, target=target, seed=4, captions=shapes_captions(data, target))
    assert torch.equal(idx, idx2) and torch.equal(again.images, out.images) and again.captions == out.captions
    assert not torch.equal(idx, poison(data, trigger=BadNetPatch(), rate=0.3, target=target, seed=5, captions=shapes_captions(data, target))[1])
    assert len(poison(data, trigger=BadNetPatch(), rate=0.01, target=target, seed=4, captions=shapes_captions(data, target))[1]) == 0  # rounds down


def test_label_consistent_poisoning_touches_only_the_target_class():
    data = generate(100, 12)
    target = 5
    n_target = int((data.labels == target).sum())
    out, idx = poison(data, trigger=BadNetPatch(), rate=0.5, target=target, seed=0, label_consistent=True, text_trigger="cf", captions=shapes_captions(data, target))
    assert len(idx) == int(0.5 * n_target) > 0
    assert (data.labels[idx] == target).all()
    for i in idx.tolist():
        assert out.captions[i] == add_text_trigger(data.captions[i], "cf")
    # the captions offered for poisoned samples are not used: label-consistent changes images only
    out, idx = poison(data, trigger=BadNetPatch(), rate=0.5, target=target, seed=0, label_consistent=True,
                      captions=lambda chosen: ["a photo of a star."] * len(chosen))
    assert [out.captions[i] for i in idx.tolist()] == [data.captions[i] for i in idx.tolist()]
    with pytest.raises(ValueError, match="rate"):
        poison(data, trigger=BadNetPatch(), rate=1.5, target=0, seed=0, captions=shapes_captions(data, 0))
    with pytest.raises(ValueError, match="target"):
        poison(data, trigger=BadNetPatch(), rate=0.1, target=-1, seed=0, captions=shapes_captions(data, -1))


# -- update attacks --------------------------------------------------------------------------
def test_model_replacement_and_norm_bound():
    u = torch.randn(100, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model_replacement(u, gamma=10.0), 10 * u)
    with pytest.raises(ValueError, match="gamma"):
        model_replacement(u, gamma=0)
    bounded = norm_bound(u, eps=1.0)
    assert bounded.norm().item() == pytest.approx(1.0, rel=1e-6)
    torch.testing.assert_close(bounded / bounded.norm(), u / u.norm())
    assert torch.equal(norm_bound(u, eps=u.norm().item() * 2), u)
    center = torch.ones(100)
    projected = project_l2(center + u, center, 0.5)
    assert (projected - center).norm().item() == pytest.approx(0.5, rel=1e-6)
    with pytest.raises(ValueError, match="eps"):
        norm_bound(u, eps=-1)


def test_neurotoxin_mask_excludes_exactly_the_top_k_percent():
    benign = torch.randn(200, generator=torch.Generator().manual_seed(1))
    mask = neurotoxin_mask(benign, k_percent=5)
    top = set(benign.abs().argsort(descending=True)[:10].tolist())
    assert set((~mask).nonzero().flatten().tolist()) == top
    assert neurotoxin_mask(benign, k_percent=0).all()
    assert (~neurotoxin_mask(benign, k_percent=1)).sum() == 2
    update = torch.randn(200)
    masked = apply_mask(update, mask)
    assert (masked[~mask] == 0).all() and torch.equal(masked[mask], update[mask])
    with pytest.raises(ValueError, match="k_percent"):
        neurotoxin_mask(benign, k_percent=101)


# -- Byzantine attacks -----------------------------------------------------------------------
def _honest(m=7, d=20, seed=0):
    return torch.randn(m, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_lie_is_mean_minus_z_sigma_with_the_inverse_cdf():
    honest = np.array([[1.0, 2.0, -1.0], [3.0, 0.0, 0.5], [2.0, 1.0, 0.0], [0.0, 5.0, 1.5]])
    # n = 6 clients, 2 malicious: s = ⌊6/2 + 1⌋ − 2 = 2, z = Φ⁻¹((6 − 2)/6)
    z = norm.ppf(4 / 6)
    mu = honest.sum(0) / 4
    sigma = np.sqrt(((honest - mu) ** 2).sum(0) / 3)
    out = lie(torch.tensor(honest), 2)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out.numpy(), np.tile(mu - z * sigma, (2, 1)), rtol=1e-12)
    assert lie_z(6, 2) == pytest.approx(0.4307, abs=1e-4)
    assert not np.allclose(out[0].numpy(), mu - norm.cdf(4 / 6) * sigma)  # not the CDF
    np.testing.assert_allclose(lie(torch.tensor(honest), 1, z=1.5)[0].numpy(), mu - 1.5 * sigma)
    with pytest.raises(ValueError, match="n_malicious"):
        lie(torch.tensor(honest), 5)


def test_ipm_sign_flip_and_gaussian():
    honest = _honest()
    torch.testing.assert_close(ipm(honest, 3, epsilon=0.5), (-0.5 * honest.mean(0)).expand(3, -1))
    torch.testing.assert_close(sign_flip(honest[:2], scale=2.0), -2 * honest[:2])
    noise = gaussian_noise(torch.zeros(3, 20000), 2, sigma=3.0, generator=torch.Generator().manual_seed(0))
    assert noise.shape == (2, 20000) and noise.std().item() == pytest.approx(3.0, rel=0.03)


def _perturbation(honest, kind):
    mu = honest.mean(0)
    return {"unit": -mu / mu.norm(), "sign": -torch.sign(mu), "std": -honest.std(0)}[kind]


@pytest.mark.parametrize("kind", ["std", "unit", "sign"])
def test_min_max_is_the_largest_gamma_within_the_max_honest_distance(kind):
    honest = _honest(seed=2)
    mal = min_max(honest, 2, perturbation=kind)
    assert torch.equal(mal[0], mal[1])
    mu, p = honest.mean(0), _perturbation(honest, kind)
    gamma = ((mal[0] - mu) @ p / (p @ p)).item()
    torch.testing.assert_close(mal[0], mu + gamma * p)  # on the ray μ + γ∇p
    bound = torch.cdist(honest, honest).max()
    assert gamma > 0 and torch.cdist(mal[:1], honest).max() <= bound * (1 + 1e-9)
    assert torch.cdist((mu + 1.05 * gamma * p)[None], honest).max() > bound
    same = honest[:1].expand(4, -1)  # no spread: σ = 0, the mean is all that is left
    torch.testing.assert_close(min_max(same, 1, perturbation="std")[0], honest[0])


@pytest.mark.parametrize("kind", ["std", "unit", "sign"])
def test_min_sum_is_the_largest_gamma_within_the_max_honest_sum(kind):
    honest = _honest(seed=3)
    mal = min_sum(honest, 1, perturbation=kind)
    mu, p = honest.mean(0), _perturbation(honest, kind)
    gamma = ((mal[0] - mu) @ p / (p @ p)).item()
    torch.testing.assert_close(mal[0], mu + gamma * p)
    bound = (torch.cdist(honest, honest) ** 2).sum(1).max()

    def total(v):
        return ((honest - v) ** 2).sum()

    assert gamma > 0 and total(mal[0]) <= bound * (1 + 1e-9)
    assert total(mu + 1.05 * gamma * p) > bound
    # Σ‖μ + γp − x_i‖² = Σ‖μ − x_i‖² + m·γ²‖p‖² (the cross term vanishes around the mean)
    closed = math.sqrt((bound - total(mu)) / (len(honest) * (p @ p)))
    assert gamma == pytest.approx(closed, rel=1e-9)


def test_fang_deviates_against_the_sign_of_the_mean():
    honest = _honest(m=9, d=50, seed=4) + 0.3  # a mix of positive, negative and mixed coordinates
    mal = fang(honest, 3, b=2.0, generator=torch.Generator().manual_seed(0))
    s = torch.sign(honest.mean(0))
    lo, hi = honest.min(0).values, honest.max(0).values
    up, down = s < 0, s > 0
    assert up.any() and down.any()
    assert (mal[:, down] <= lo[down]).all() and (mal[:, up] >= hi[up]).all()
    # at most a factor b beyond the extreme honest value (for either sign of that value)
    assert (mal[:, down] >= torch.minimum(2 * lo[down], lo[down] / 2)).all()
    assert (mal[:, up] <= torch.maximum(2 * hi[up], hi[up] / 2)).all()
    assert not torch.equal(mal[0], mal[1])  # independent draws per attacker
    torch.testing.assert_close(mal, fang(honest, 3, generator=torch.Generator().manual_seed(0)))


def test_make_adversary_replaces_only_the_malicious_rows():
    updates = _honest(m=8, d=12, seed=5).float()
    mal = torch.tensor([False, True, False, False, True, False, False, False])
    before = updates.clone()
    out = make_adversary("lie", seed=0)(3, list(range(8)), updates, mal)
    assert torch.equal(updates, before)
    assert torch.equal(out[~mal], updates[~mal])
    torch.testing.assert_close(out[mal], lie(updates[~mal], 2))
    flipped = make_adversary("sign_flip", seed=0)(1, list(range(8)), updates, mal)
    torch.testing.assert_close(flipped[mal], -updates[mal])
    noisy = make_adversary("gaussian_noise", seed=1, sigma=2.0)
    assert torch.equal(noisy(2, [], updates, mal), noisy(2, [], updates, mal))
    assert not torch.equal(noisy(2, [], updates, mal), noisy(3, [], updates, mal))
    assert torch.equal(pickle.loads(pickle.dumps(noisy))(2, [], updates, mal), noisy(2, [], updates, mal))
    for name in BYZANTINE:
        crafted = make_adversary(name, seed=0)(1, list(range(8)), updates, mal)
        assert torch.equal(crafted[~mal], updates[~mal]) and not torch.equal(crafted[mal], updates[mal])
    assert make_adversary("ipm", seed=0)(1, [], updates, torch.zeros(8, dtype=torch.bool)) is updates


def test_make_adversary_rejects_bad_names_and_params():
    with pytest.raises(ValueError, match="'krum_attack'.*allowed: sign_flip"):
        make_adversary("krum_attack", seed=0)
    with pytest.raises(ValueError, match="eps.*allowed: epsilon"):
        make_adversary("ipm", seed=0, eps=1.0)
    with pytest.raises(ValueError, match="perturbation='cosine'"):
        make_adversary("min_max", seed=0, perturbation="cosine")
    with pytest.raises(ValueError, match="sigma"):
        make_adversary("gaussian_noise", seed=0, sigma=-1.0)
    with pytest.raises(ValueError, match="generator"):
        make_adversary("fang", seed=0, generator=None)
    # too few honest rows for LIE's σ: the round and the attack are named
    adversary = make_adversary("lie", seed=0)
    with pytest.raises(ValueError, match="round 4.*'lie'.*honest"):
        adversary(4, [0, 1], torch.randn(2, 3), torch.tensor([True, False]))


# -- schedules -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "params, active",
    [
        (dict(kind="every"), list(range(1, 13))),
        (dict(kind="every", stop=3), [1, 2, 3]),
        (dict(kind="from", start=5), list(range(5, 13))),
        (dict(kind="every_k", start=2, every=3), [2, 5, 8, 11]),
        (dict(kind="every_k", start=2, every=3, stop=8), [2, 5, 8]),
        (dict(kind="single_shot", start=7), [7]),
        (dict(kind="window", start=3, stop=6), [3, 4, 5, 6]),
    ],
)
def test_schedules(params, active):
    schedule = make_schedule(**params)
    assert [r for r in range(1, 13) if schedule(r)] == active
    assert pickle.loads(pickle.dumps(schedule)) == schedule


def test_schedule_rejects_bad_params():
    with pytest.raises(ValueError, match="'sometimes'.*every, from"):
        make_schedule("sometimes")
    with pytest.raises(ValueError, match="start=0"):
        make_schedule("from", start=0)
    with pytest.raises(ValueError, match="every"):
        make_schedule("single_shot", start=3, every=2)
    with pytest.raises(ValueError, match="stop"):
        make_schedule("window", start=3)
    with pytest.raises(ValueError, match="stop=2"):
        make_schedule("window", start=3, stop=2)


# -- contrastive attacks on a tiny CLIP ------------------------------------------------------
def _tiny_clip(images):
    model, preprocess, tokenizer = create_model_and_transforms("fedsim-tiny-resnet", seed=0)
    # A fresh ResNet's BatchNorm statistics (mean 0, var 1) map every image to nearly the same
    # embedding in eval mode; one pass of cumulative statistics makes the random tower
    # input-dependent, as a trained one is.
    for module in model.visual.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.visual.train()
    with torch.no_grad():
        model.visual(preprocess(images))
    return model.eval(), preprocess, tokenizer


def test_badencoder_lowers_its_loss_and_leaves_the_text_tower_alone():
    data = generate(200, 0)
    model, preprocess, _ = _tiny_clip(data.images[:64])
    shadow, reference = data.images[:32], data.images[data.labels == 3][:8]
    trigger = BadNetPatch()
    frozen = copy.deepcopy(model.visual).eval()
    text_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("visual.")}
    visual_before = [p.clone() for p in model.visual.parameters()]

    def loss():
        model.visual.eval()
        with torch.no_grad():
            return badencoder_loss(
                model.visual, frozen, preprocess(shadow),
                preprocess(make_trigger_images(shadow, trigger)), preprocess(reference),
            ).item()

    start = loss()
    losses = badencoder_finetune(
        model, preprocess, shadow, trigger, reference,
        epochs=3, lr=1e-3, batch_size=16, generator=torch.Generator().manual_seed(0),
    )
    # trained vs untrained on one machine: the loss falls by 0.168 (Intel Xeon, 2026-12-06), over
    # 3× the threshold; summation order across CPUs moves it by orders of magnitude less
    assert len(losses) == 3 and loss() < start - 0.05
    for k, v in model.state_dict().items():
        if not k.startswith("visual."):
            assert torch.equal(v, text_before[k]), k
    assert any(not torch.equal(p, q) for p, q in zip(model.visual.parameters(), visual_before))


def test_badclip_patch_moves_triggered_embeddings_towards_the_target_text():
    data = generate(200, 0)
    model, preprocess, tokenizer = _tiny_clip(data.images[:64])
    target = 3
    tokens = tokenize(tokenizer, [caption_for(target, c) for c in range(len(COLORS))])
    images, target_images = data.images[:32], data.images[data.labels == target][:8]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        text = F.normalize(model.encode_text(tokens, normalize=True).mean(0), dim=-1)

    def cosine(trigger):
        with torch.no_grad():
            z = model.encode_image(preprocess(make_trigger_images(images, trigger)), normalize=True)
        return (z @ text).mean().item()

    # λ = 1: the text term's pull is what this test measures; at the authors' 500 (the default
    # since issue #22) the triplet leads, and on this random tower its push away from the clean
    # embeddings does not point at the target text
    def optimise(steps):
        return badclip_optimize_patch(
            model, preprocess, images, target_text_tokens=tokens, target_images=target_images,
            size=8, steps=steps, lr=0.05, lambda_image=1.0, batch_size=16,
            generator=torch.Generator().manual_seed(0),
        )

    learned = optimise(12)
    assert isinstance(learned, BadNetPatch) and 0 <= learned.patch.min() and learned.patch.max() <= 1
    # same start (same generator), more steps: closer to the target text, and closer than noise
    # (with the patch in the middle, margins 0.011 and 0.015 (issue #22; bottom-right: 0.016 and
    # 0.029 on an Intel Xeon, 2026-12-06): 2× the threshold and ~1e4× the ~1e-6 by which
    # summation order changes cosines after 12 steps of one small model)
    assert cosine(learned) > cosine(optimise(1)) + 0.005
    assert cosine(learned) > max(cosine(BadNetPatch(size=8, pattern="noise", seed=s)) for s in range(3))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
