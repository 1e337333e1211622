"""The contrastive attacks (clients/attacks/contrastive.py): BadEncoder and BadCLIP on a tiny CLIP
(the loss goes down, the triggered embeddings move towards the target text) and on a linear
CLIP (the authors' loss weights, the first SGD and sign steps by hand, the validation of their
parameters), and label-consistent PGD's step, bounds and saturated pixels."""

import copy
import math
import re

import pytest
import torch
import torch.nn.functional as F

from clients.attacks import BadNetPatch
from clients.attacks.contrastive import (
    badclip_loss,
    badclip_optimize_patch,
    badencoder_finetune,
    badencoder_loss,
    label_consistent_pgd,
)
from fedsim.data import COLORS, caption_for, generate
from fedsim.evaluation import make_trigger_images
from fedsim.models import create_model_and_transforms, tokenize

# -- on a tiny CLIP ------------------------------------------------------------------------


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


# -- on a linear CLIP ----------------------------------------------------------------------


class _LinearCLIP(torch.nn.Module):
    """CLIP's interface on two linear towers: (n, 3, 8, 8) images and (n, 5) token rows."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.visual = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
        self.text = torch.nn.Linear(5, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def encode_image(self, x, normalize=False):
        z = self.visual(x)
        return F.normalize(z, dim=-1) if normalize else z

    def encode_text(self, tokens, normalize=False):
        z = self.text(tokens.float())
        return F.normalize(z, dim=-1) if normalize else z


def _preprocess(x):
    return x.float() / 255 if x.dtype == torch.uint8 else x


def _uint8(n, seed):
    return torch.randint(0, 256, (n, 3, 8, 8), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_badencoder_and_badclip_loss_defaults_are_the_authors_weights():
    # BadEncoder weighs its three terms 1, 1, 1; BadCLIP's code multiplies the triplet by 500
    # (until issue #22 fedsim's BadCLIP default was 1, which this test pinned)
    g = torch.Generator().manual_seed(0)
    enc, frozen = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    c, t, r = (torch.randn(n, 3, generator=g) for n in (2, 2, 3))
    got = badencoder_loss(enc, frozen, c, t, r).item()
    assert got == pytest.approx(badencoder_loss(enc, frozen, c, t, r, lambda_reference=1.0, lambda_clean=1.0).item())
    # BadCLIP: one triggered embedding, hinge with margin 1 active: ‖t − v⁺‖ − ‖t − c‖ + 1
    trig, clean, pos = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[-1.0, 0.0]])
    text = torch.tensor([0.6, 0.8])
    assert badclip_loss(trig, clean, text, pos).item() == pytest.approx(-0.6 + 500 * (2.0 - math.sqrt(2) + 1.0))


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(epochs=0), r"badencoder needs epochs >= 1 \(got 0\), lr > 0 \(got 0\.01\)"),
        (dict(lr=0.0), r"lr > 0 \(got 0\.0\)"),
        (dict(shadow=0), r"non-empty shadow \(0\) and reference \(2\) images"),
        (dict(reference=0), r"non-empty shadow \(6\) and reference \(0\) images"),
    ],
)
def test_badencoder_finetune_rejects_bad_parameters(params, message):
    model = _LinearCLIP()
    kwargs = dict(epochs=1, lr=0.01)
    kwargs.update({k: v for k, v in params.items() if k in kwargs})
    with pytest.raises(ValueError, match=message):
        badencoder_finetune(model, _preprocess, _uint8(params.get("shadow", 6), 0), BadNetPatch(size=2),
                            _uint8(params.get("reference", 2), 1), generator=torch.Generator(), **kwargs)


def test_badencoder_finetune_reports_epoch_means_steps_sgd_and_restores_the_mode():
    # Until issue #22 this test pinned Adam (every parameter moved by about lr per step); the
    # authors' BadEncoder steps SGD (momentum 0.9, weight decay 5e-4), which it pins now.
    model = _LinearCLIP()
    shadow, reference, trigger = _uint8(70, 0), _uint8(2, 1), BadNetPatch(size=2)
    calls = []
    model.visual.eval()
    losses = badencoder_finetune(model, _preprocess, shadow, trigger, reference, epochs=1, lr=1e-3,
                                 generator=torch.Generator().manual_seed(0), after_step=calls.append)
    assert len(losses) == 1 and calls == [model, model]  # 70 images, batches of 64 by default: 2 steps
    assert not model.visual.training

    # one batch, references as they are: the first step is w − lr·(∇L(w) + 5e-4·w), and the
    # epoch's loss is that batch's loss at w
    model = _LinearCLIP().train()
    initial = copy.deepcopy(model.visual)
    lr = 0.1
    one = badencoder_finetune(model, _preprocess, shadow[:5], trigger, reference, epochs=1, lr=lr,
                              augment_reference=False, generator=torch.Generator().manual_seed(0))
    first = badencoder_loss(initial, copy.deepcopy(initial), _preprocess(shadow[:5]),
                            _preprocess(make_trigger_images(shadow[:5], trigger)), _preprocess(reference))
    grads = torch.autograd.grad(first, list(initial.parameters()))
    for p, q, g in zip(model.visual.parameters(), initial.parameters(), grads):
        torch.testing.assert_close(p, q - lr * (g + 5e-4 * q), atol=1e-6, rtol=0)
    assert len(one) == 1 and one[0] == pytest.approx(first.item(), abs=1e-5)
    assert model.visual.training

    model = _LinearCLIP()
    two = badencoder_finetune(model, _preprocess, shadow[:5], trigger, reference, epochs=2, lr=1e-3,
                              augment_reference=False, generator=torch.Generator().manual_seed(0))
    assert len(two) == 2 and two[0] == pytest.approx(first.item(), abs=1e-5)  # one batch: its loss, not halved


def _target_tokens():
    return torch.tensor([[1.0, 0.0, 2.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0, 0.0]])


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(steps=0), r"badclip needs steps >= 1 \(got 0\), lr > 0 \(got 0\.1\)"),
        (dict(lr=0.0), r"lr > 0 \(got 0\.0\)"),
        (dict(images=0), r"non-empty images \(0\) and target images \(2\)"),
        (dict(targets=0), r"non-empty images \(6\) and target images \(0\)"),
    ],
)
def test_badclip_rejects_bad_parameters(params, message):
    kwargs = dict(steps=1, lr=0.1)
    kwargs.update({k: v for k, v in params.items() if k in kwargs})
    with pytest.raises(ValueError, match=message):
        badclip_optimize_patch(_LinearCLIP(), _preprocess, _uint8(params.get("images", 6), 0),
                               target_text_tokens=_target_tokens(), target_images=_uint8(params.get("targets", 2), 1),
                               generator=torch.Generator(), **kwargs)


def test_badclip_first_step_is_minus_lr_sign_of_the_objectives_gradient():
    model = _LinearCLIP().train()
    images, target = _uint8(6, 0), _uint8(1, 1)
    lr = 1e-3
    learned = badclip_optimize_patch(model, _preprocess, images, target_text_tokens=_target_tokens(),
                                     target_images=target, steps=1, lr=lr, generator=torch.Generator().manual_seed(3))
    # the defaults: a 4-px patch in the middle (the authors' placement: rows and columns 2–5 of
    # 8; until issue #22 the default was the bottom-right corner, which this test pinned)
    assert model.training and learned.size == 4 and learned.location == (2, 2)
    # the documented start, N(0.5, 0.25²) clipped, and the objective written out here, with
    # the authors' weight 500 on the triplet term
    init = (0.5 + 0.25 * torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    patch = init.clone().requires_grad_(True)
    x = images.float() / 255
    pasted = x.clone()
    pasted[..., 2:6, 2:6] = 0
    pasted = pasted + F.pad(patch, (2, 2, 2, 2)).expand_as(x)
    with torch.no_grad():
        text = F.normalize(F.normalize(model.text(_target_tokens()), dim=-1).mean(0), dim=-1)
        pos = F.normalize(model.visual(target.float() / 255), dim=-1)
        clean = F.normalize(model.visual(x), dim=-1)
    z = F.normalize(model.visual(pasted), dim=-1)
    loss = -(z @ text).mean() + 500 * torch.relu((z - pos).norm(dim=-1) - (z - clean).norm(dim=-1) + 1.0).mean()
    (grad,) = torch.autograd.grad(loss, patch)
    inside = (init > lr) & (init < 1 - lr) & (grad.abs() > 1e-7)
    assert inside.sum() > 40
    torch.testing.assert_close(learned.patch[inside], (init - lr * grad.sign())[inside], atol=1e-6, rtol=0)
    # a large step is projected back onto [0, 1]
    big = badclip_optimize_patch(model.eval(), _preprocess, images, target_text_tokens=_target_tokens(),
                                 target_images=target, steps=1, lr=5.0, generator=torch.Generator().manual_seed(3))
    assert not model.training
    assert big.patch.min() == 0 and big.patch.max() == 1


# -- label-consistent PGD ------------------------------------------------------------------


@pytest.mark.parametrize("steps, eps", [(0, 0.1), (True, 0.1), (1.5, 0.1), (2, 0), (2, 1.5)])
def test_label_consistent_pgd_rejects_bad_steps_and_eps(steps, eps):
    message = rf"label-consistent PGD needs steps >= 1 \(got {re.escape(repr(steps))}\) and eps in \(0, 1\] \(got {eps!r}\)"
    with pytest.raises(ValueError, match=message):
        label_consistent_pgd(_LinearCLIP(), _preprocess, _uint8(2, 0), target_text_tokens=_target_tokens(),
                             steps=steps, eps=eps)


def test_label_consistent_pgd_one_step_defaults_and_empty_input():
    model = _LinearCLIP().train()
    images = _uint8(4, 2).clamp(1, 254)  # saturated pixels: see the xfail test below
    empty = label_consistent_pgd(model, _preprocess, images[:0], target_text_tokens=_target_tokens())
    assert empty.shape == (0, 3, 8, 8) and empty.dtype == torch.uint8
    # one step: α = 2.5·ε > ε, so every pixel moves by ε against the gradient's sign
    out = label_consistent_pgd(model, _preprocess, images, target_text_tokens=_target_tokens(), eps=8 / 255, steps=1)
    assert model.training
    x = (images.float() / 255).requires_grad_(True)
    with torch.no_grad():
        text = F.normalize(F.normalize(model.text(_target_tokens()), dim=-1).mean(0), dim=-1)
    (grad,) = torch.autograd.grad((F.normalize(model.visual(x), dim=-1) @ text).sum(), x)
    expected = (images.int() - 8 * grad.sign().int()).clamp(0, 255)
    assert torch.equal(out.int(), expected)
    # defaults: ε = 16/255 over 10 steps reaches the bound on a linear tower; ε = 1 is allowed
    default = label_consistent_pgd(model, _preprocess, images, target_text_tokens=_target_tokens())
    assert (default.int() - images.int()).abs().max() == 16
    assert label_consistent_pgd(model, _preprocess, images, target_text_tokens=_target_tokens(), eps=1.0,
                                steps=1).dtype == torch.uint8


def test_label_consistent_pgd_moves_saturated_pixels_inwards():
    model = _LinearCLIP()
    images = _uint8(4, 2)
    out = label_consistent_pgd(model, _preprocess, images, target_text_tokens=_target_tokens(), eps=8 / 255, steps=1)
    x = (images.float() / 255).requires_grad_(True)
    with torch.no_grad():
        text = F.normalize(F.normalize(model.text(_target_tokens()), dim=-1).mean(0), dim=-1)
    (grad,) = torch.autograd.grad((F.normalize(model.visual(x), dim=-1) @ text).sum(), x)
    saturated = ((images == 0) & (grad < 0)) | ((images == 255) & (grad > 0))
    assert saturated.any()
    assert torch.equal(out[saturated].int(), (images.int() - 8 * grad.sign().int()).clamp(0, 255)[saturated])
