"""Attack rules against independent references: numpy reimplementations (WaNet's grid and
its bilinear resampling), hand computations on tiny fixed encoders (BadEncoder, BadCLIP), and
the pieces the papers add that a simplification would drop (WaNet's noise mode, BadCLIP's
push away from the clean embedding, label-consistent adversarial perturbations, the text
trigger's ASR)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clients.attacks import BadNetPatch, add_text_trigger, poison
from clients.attacks.triggers import WaNet
from fedsim.data import generate
from fedsim.evaluation import make_trigger_images
from tests.attacks.test_contrastive import _tiny_clip
from tests.conftest import shapes_captions


# -- WaNet: a numpy reference -----------------------------------------------------------------
def _cubic(t, a=-0.75):
    """Keys' cubic convolution kernel (a = −0.75, as PyTorch's bicubic)."""
    t = abs(t)
    if t <= 1:
        return (a + 2) * t**3 - (a + 3) * t**2 + 1
    if t < 2:
        return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return 0.0


def _upsample_bicubic(field, size):
    """(C, k, k) → (C, size, size), align_corners=True, border indices clamped."""
    c, k, _ = field.shape
    weights = np.zeros((size, k))
    for i in range(size):
        src = i * (k - 1) / (size - 1)
        i0 = math.floor(src)
        for j in range(i0 - 1, i0 + 3):
            weights[i, min(max(j, 0), k - 1)] += _cubic(src - j)
    return np.einsum("ik,ckl,jl->cij", weights, field, weights)


def _wanet_grid(p, s, h, rescale=1.0):
    """WaNet's grid from the paper's code: P/mean|P|, upsampled, identity + s·M/h, rescaled,
    clipped; (h, h, 2) with (x, y) last."""
    m = _upsample_bicubic(p / np.abs(p).mean(), h)
    lin = np.linspace(-1, 1, h)
    identity = np.stack(np.meshgrid(lin, lin, indexing="xy"), axis=-1)  # [..., 0] = x (columns)
    return np.clip((identity + s * np.moveaxis(m, 0, -1) / h) * rescale, -1, 1)


def _bilinear(img, grid):
    """grid_sample(align_corners=True, zero padding) of one (C, H, W) image."""
    c, h, w = img.shape
    out = np.zeros((c,) + grid.shape[:2])
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            x, y = (grid[i, j, 0] + 1) / 2 * (w - 1), (grid[i, j, 1] + 1) / 2 * (h - 1)
            x0, y0 = math.floor(x), math.floor(y)
            for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                    if 0 <= yy < h and 0 <= xx < w:
                        out[:, i, j] += wy * wx * img[:, yy, xx]
    return out


@pytest.mark.parametrize("k, s, h, rescale", [(4, 0.5, 16, 1.0), (3, 1.0, 12, 0.9)])
def test_wanet_grid_matches_a_numpy_reimplementation(k, s, h, rescale):
    seed = 5
    p = (torch.rand(1, 2, k, k, generator=torch.Generator().manual_seed(seed)) * 2 - 1)[0].double().numpy()
    trigger = WaNet(k=k, s=s, grid_rescale=rescale, seed=seed)
    expected = _wanet_grid(p, s, h, rescale)
    np.testing.assert_allclose(trigger.grid(h, h)[0].double().numpy(), expected, atol=2e-6, rtol=0)
    # the warp is s·M/h with mean|P| = 1: its size is what the paper's normalisation makes it
    lin = np.linspace(-1, 1, h)
    shift = expected - np.stack(np.meshgrid(lin, lin, indexing="xy"), axis=-1) * rescale
    if rescale == 1.0:
        assert 0.2 * s / h < np.abs(shift).mean() < 2 * s / h
    x = torch.rand(1, 3, h, h, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(trigger(x)[0].double().numpy(), _bilinear(x[0].double().numpy(), expected),
                               atol=2e-5, rtol=0)


def test_wanet_noise_mode_adds_uniform_noise_over_h_to_the_grid():
    trigger, h, n = WaNet(seed=2), 16, 3
    grids = trigger.cross_grid(n, h, h, torch.Generator().manual_seed(9))
    noise = torch.rand(n, h, h, 2, generator=torch.Generator().manual_seed(9)) * 2 - 1
    torch.testing.assert_close(grids, (trigger.grid(h, h) + noise / h).clamp(-1, 1))
    assert (grids - trigger.grid(h, h)).abs().max() <= 1 / h + 1e-6
    x = torch.rand(n, 3, h, h, generator=torch.Generator().manual_seed(1))
    expected = F.grid_sample(x, grids, mode="bilinear", align_corners=True)
    torch.testing.assert_close(trigger.cross(x, torch.Generator().manual_seed(9)), expected)


def test_wanet_poisoning_draws_cross_ratio_noise_samples_that_keep_their_captions():
    data = generate(60, 3)
    trigger = WaNet(cross_ratio=2.0, seed=1)
    out, idx = poison(data, trigger=trigger, rate=0.1, target=1, seed=0, captions=shapes_captions(data, 1))
    assert len(idx) == 6
    changed = (out.images != data.images).flatten(1).any(1)
    recaptioned = torch.tensor([a != b for a, b in zip(out.captions, data.captions)])
    noisy = changed & ~torch.isin(torch.arange(60), idx)
    assert int(noisy.sum()) == 12  # ⌊2 · 6⌋ noise samples, disjoint from the backdoor ones
    assert not recaptioned[noisy].any()  # noise mode keeps the clean caption
    assert torch.equal(out.images[idx], make_trigger_images(data.images[idx], trigger))
    for i in noisy.nonzero().flatten().tolist():  # warped, but not with the trigger's exact grid
        assert not torch.equal(out.images[i], make_trigger_images(data.images[i : i + 1], trigger)[0])
    plain, _ = poison(data, trigger=WaNet(cross_ratio=0.0, seed=1), rate=0.1, target=1, seed=0, captions=shapes_captions(data, 1))
    assert int((plain.images != data.images).flatten(1).any(1).sum()) <= 6


# -- BadEncoder: a hand computation on linear encoders ---------------------------------------
def test_badencoder_loss_matches_a_hand_computation():
    from clients.attacks.contrastive import badencoder_loss

    w = np.array([[1.0, 2.0, 0.0], [0.5, -1.0, 1.0]])
    w0 = np.array([[2.0, 0.0, 1.0], [0.0, 1.0, -1.0]])
    encoder, frozen = torch.nn.Linear(3, 2, bias=False), torch.nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        encoder.weight.copy_(torch.tensor(w))
        frozen.weight.copy_(torch.tensor(w0))
    clean = np.array([[1.0, 0.0, 1.0], [0.0, 2.0, 1.0]])
    triggered = np.array([[1.0, 1.0, 1.0], [-1.0, 2.0, 0.5]])
    reference = np.array([[0.0, 1.0, 3.0], [2.0, 1.0, 0.0], [1.0, -1.0, 1.0]])

    def unit(v):
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    def cos(a, b):
        return unit(a) @ unit(b).T

    f = lambda x: x @ w.T  # noqa: E731
    f0 = lambda x: x @ w0.T  # noqa: E731
    l0 = -cos(f(triggered), f(reference)).mean()  # every (triggered, reference) pair
    l1 = -np.diag(cos(f(reference), f0(reference))).mean()
    l2 = -np.diag(cos(f(clean), f0(clean))).mean()
    got = badencoder_loss(encoder, frozen, *(torch.tensor(a, dtype=torch.float32) for a in (clean, triggered, reference)),
                          lambda_reference=0.7, lambda_clean=1.9)
    assert got.item() == pytest.approx(l0 + 0.7 * l1 + 1.9 * l2, abs=1e-6)
    assert l0 != pytest.approx(-l0) and l1 != pytest.approx(0) and l2 != pytest.approx(0)


# -- BadCLIP: the loss and the direction of its first step -----------------------------------
def test_badclip_loss_matches_a_hand_computation():
    from clients.attacks.contrastive import badclip_loss

    def unit(v):
        v = np.asarray(v, dtype=float)
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    trig = unit([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]])
    clean = unit([[0.0, 1.0, 0.0], [0.6, 0.7, 0.1]])
    pos = unit([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    text = unit([1.0, 1.0, 0.0])
    textual = -(trig @ text).mean()
    hinge = [max(np.linalg.norm(t - p) - np.linalg.norm(t - c) + 0.5, 0) for t, p, c in zip(trig, pos, clean)]
    assert hinge[0] > 0 and hinge[1] > 0  # both terms of the triplet are active
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    got = badclip_loss(t(trig), t(clean), t(text), t(pos), lambda_image=3.0, margin=0.5)
    assert got.item() == pytest.approx(textual + 3.0 * np.mean(hinge), abs=1e-12)
    # a satisfied margin contributes nothing
    far = badclip_loss(t(trig), -t(trig), t(text), t(trig), lambda_image=3.0, margin=0.5)
    assert far.item() == pytest.approx(textual, abs=1e-12)


def test_badclip_first_step_descends_the_papers_objective():
    """Adam's first step moves every pixel by −lr·sign(∂L/∂p): compare with the gradient of the
    objective written out here (text term + λ·triplet against the clean embedding)."""
    from clients.attacks.contrastive import badclip_optimize_patch
    from fedsim.data import COLORS, caption_for
    from fedsim.models import tokenize

    data = generate(120, 0)
    model, preprocess, tokenizer = _tiny_clip(data.images[:64])
    images, target_images = data.images[:12], data.images[data.labels == 3][:1]
    tokens = tokenize(tokenizer, [caption_for(3, c) for c in range(len(COLORS))])
    lr, lam, size = 0.01, 5.0, 6
    learned = badclip_optimize_patch(
        model, preprocess, images, target_text_tokens=tokens, target_images=target_images,
        size=size, location="bottom_right", steps=1, lr=lr, lambda_image=lam, margin=1.0, batch_size=64,
        generator=torch.Generator().manual_seed(0),
    )
    init = (0.5 + 0.25 * torch.randn(3, size, size, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    patch = init.clone().requires_grad_(True)
    x = images.float() / 255
    pasted = x.clone()
    pasted[:, :, -size:, -size:] = 0
    pasted = pasted + F.pad(patch, (32 - size, 0, 32 - size, 0)).expand_as(x)
    with torch.no_grad():
        text = F.normalize(model.encode_text(tokens, normalize=True).mean(0), dim=-1)
        positive = model.encode_image(preprocess(target_images), normalize=True)[0]
        clean = model.encode_image(preprocess(images), normalize=True)
    z = model.encode_image(preprocess(pasted), normalize=True)
    triplet = torch.relu((z - positive).norm(dim=1) - (z - clean).norm(dim=1) + 1.0)
    loss = -(z @ text).mean() + lam * triplet.mean()
    (grad,) = torch.autograd.grad(loss, patch, retain_graph=True)
    step = learned.patch - init
    inside = (grad.abs() > 1e-7) & (init > lr) & (init < 1 - lr)
    assert inside.sum() > inside.numel() // 2
    torch.testing.assert_close(step[inside], -lr * grad.sign()[inside], atol=1e-4, rtol=0)
    # the clean-embedding push is part of the direction: without it, signs differ somewhere
    loss_text = -(z @ text).mean() + lam * torch.relu((z - positive).norm(dim=1) + 1.0 - 1.0).mean()
    (other,) = torch.autograd.grad(loss_text, patch)
    assert (other.sign()[inside] != grad.sign()[inside]).any()


# -- label-consistent: the adversarial perturbation ------------------------------------------
def test_label_consistent_pgd_stays_in_the_linf_ball_and_moves_away_from_the_target():
    from clients.attacks import label_consistent_pgd
    from fedsim.data import ZERO_SHOT_TEMPLATES

    data = generate(120, 0)
    model, preprocess, tokenizer = _tiny_clip(data.images[:64])
    images = data.images[data.labels == 3][:6]
    tokens = tokenizer([t.format("star") for t in ZERO_SHOT_TEMPLATES])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    eps = 8 / 255
    out = label_consistent_pgd(model, preprocess, images, target_text_tokens=tokens, eps=eps, steps=5)
    assert out.dtype == torch.uint8 and (out.int() - images.int()).abs().max() <= 8
    assert (out != images).any()
    with torch.no_grad():
        text = F.normalize(model.encode_text(tokens, normalize=True).mean(0), dim=-1)

    @torch.no_grad()
    def sim(x):
        return (model.encode_image(preprocess(x), normalize=True) @ text).mean().item()

    assert sim(out) < sim(images) - 1e-3
    wide = label_consistent_pgd(model, preprocess, images, target_text_tokens=tokens, eps=4 * eps, steps=5)
    assert (wide.int() - images.int()).abs().max() == 32  # a step of 2.5·ε/steps reaches the bound
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_poison_perturbs_label_consistent_images_before_the_trigger():
    data = generate(100, 12)
    trigger = BadNetPatch()

    def perturb(images):
        return 255 - images

    out, idx = poison(data, trigger=trigger, rate=0.5, target=5, seed=0, label_consistent=True, perturb=perturb, captions=shapes_captions(data, 5))
    assert len(idx) > 0 and (data.labels[idx] == 5).all()
    assert torch.equal(out.images[idx], make_trigger_images(255 - data.images[idx], trigger))
    assert out.captions == data.captions  # label-consistent: captions already name the target


# -- the text trigger's ASR ------------------------------------------------------------------
def test_text_attack_success_rate_is_the_share_retrieving_a_target_image_first():
    from fedsim.evaluation import text_attack_success_rate

    images = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.2], [0.6, 0.8]]), dim=1)
    labels = torch.tensor([2, 0, 2, 1])
    # top-1 images: 0 (target), 3 (not), 2 (target), 1 (not), 0 (target)
    texts = F.normalize(torch.tensor([[1.0, 0.1], [0.7, 0.75], [-1.0, 0.0], [0.1, 1.0], [0.9, -0.5]]), dim=1)
    assert text_attack_success_rate(texts, images, labels, target=2) == pytest.approx(3 / 5)
    assert text_attack_success_rate(texts, images, labels, target=1) == pytest.approx(1 / 5)


def test_evaluator_reports_text_asr_only_with_a_text_trigger():
    from fedsim.data import SHAPES, ZERO_SHOT_TEMPLATES
    from fedsim.evaluation import Evaluator

    test = generate(40, 7)
    model, preprocess, tokenizer = _tiny_clip(test.images)
    common = dict(classnames=SHAPES, templates=ZERO_SHOT_TEMPLATES, trigger=BadNetPatch(), target=2)
    assert "text_attack_success_rate" not in Evaluator(model, preprocess, tokenizer, test, **common)()
    evaluator = Evaluator(model, preprocess, tokenizer, test, **common,
                          caption_trigger=lambda c: add_text_trigger(c, "cf"))
    expected = sorted({add_text_trigger(c, "cf") for c, y in zip(test.captions, test.labels.tolist()) if y != 2})
    assert evaluator._triggered_captions == expected
    asr = evaluator()["text_attack_success_rate"]
    with torch.no_grad():
        from fedsim.evaluation import encode_images

        clean = encode_images(model, test.images, preprocess)
        texts = model.encode_text(tokenizer(expected), normalize=True)
    top1 = (texts @ clean.t()).argmax(1)
    assert asr == pytest.approx(float((test.labels[top1] == 2).float().mean()))
