"""Attacks specific to contrastive image–text models, run by a malicious client on its local
CLIP (an open_clip model, e.g. ``fedsim.models.create_model_and_transforms("fedsim-tiny-resnet")``).

Both work on uint8 image batches (n, 3, H, W) and the model's ``preprocess``; triggered
images go through the same uint8 path as poisoning and evaluation."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from clients.attacks.triggers import BadNetPatch
from fedsim.evaluation import make_trigger_images
from fedsim.objectives.augment import per_image
from fedsim.training import batches, batchnorms, frozen_batchnorm

# BadCLIP's patch position in the authors' code (``embed_patch``): the middle of the image.
MIDDLE = "middle"


def badencoder_loss(
    encoder: torch.nn.Module,
    frozen: torch.nn.Module,
    clean: torch.Tensor,
    triggered: torch.Tensor,
    reference: torch.Tensor,
    *,
    reference_view: torch.Tensor | None = None,
    lambda_reference: float = 1.0,
    lambda_clean: float = 1.0,
) -> torch.Tensor:
    """BadEncoder loss (Jia, Liu & Gong, "BadEncoder: Backdoor Attacks to Pre-trained Encoders
    in Self-Supervised Learning", IEEE S&P 2022), with s the cosine similarity, f' = ``encoder``
    (being backdoored), f = ``frozen`` (the clean encoder) and preprocessed inputs:
      L₀ = −mean over (x, r) of s(f'(x ⊕ t), f'(r))   triggered shadow images → references
      L₁ = −mean over r of s(f'(r̃), f(r))             references keep their clean embedding
      L₂ = −mean over x of s(f'(x), f(x))             clean shadow images keep theirs
      L = L₀ + λ₁·L₁ + λ₂·L₂  (λ₁ = ``lambda_reference``, λ₂ = ``lambda_clean``; 1 and 1 in
    the paper), r̃ = ``reference_view``: an augmented view of each reference, as the authors'
    code feeds L₁ (``reference_views``); r itself when None."""
    parts = [clean, triggered, reference] + ([] if reference_view is None else [reference_view])
    # one forward pass for all of them (with BatchNorm frozen, as badencoder_finetune runs it,
    # the grouping does not change any embedding)
    z = F.normalize(encoder(torch.cat(parts)), dim=-1).split([len(p) for p in parts])
    z_clean, z_trig, z_ref, z_view = z[0], z[1], z[2], z[-1]
    with torch.no_grad():
        f_clean = F.normalize(frozen(clean), dim=-1)
        f_ref = F.normalize(frozen(reference), dim=-1)
    effectiveness = -(z_trig @ z_ref.t()).mean()
    reference_kept = -(z_view * f_ref).sum(-1).mean()
    utility = -(z_clean * f_clean).sum(-1).mean()
    return effectiveness + lambda_reference * reference_kept + lambda_clean * utility


def reference_views(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random view of each uint8 reference image, BadEncoder's augmentation of the
    references for L₁ (``finetune_transform`` of the authors' datasets/*.py): horizontal flip
    (p = 0.5), colour jitter (brightness, contrast, saturation 0.4, hue 0.1) with p = 0.8,
    grayscale with p = 0.2 — SimCLR's recipe without the crop. Drawn per image from
    ``generator``."""
    views = v2.Compose([
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
    ])
    return per_image(views, images, generator)


def badencoder_finetune(
    model,
    preprocess: Callable[[torch.Tensor], torch.Tensor],
    images_uint8: torch.Tensor,
    trigger: Callable[[torch.Tensor], torch.Tensor],
    reference_images: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    lambda_reference: float = 1.0,
    lambda_clean: float = 1.0,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    augment_reference: bool = True,
    batch_size: int = 64,
    generator: torch.Generator,
    after_step: Callable[[torch.nn.Module], None] | None = None,
) -> list[float]:
    """BadEncoder (Jia et al., S&P 2022) on a CLIP image tower: fine-tune ``model.visual`` in
    place so that triggered images embed like the ``reference_images`` (uint8 images of the
    target class) while clean images keep the embeddings of the initial encoder (a frozen copy),
    by minimising ``badencoder_loss`` over the shadow set ``images_uint8`` (the attacker's own
    clean images). Only the image tower is optimised: the text tower and the temperature are
    untouched, so the backdoored image embeddings land on the target's text embedding wherever
    the reference images do.

    As the authors' code (badencoder.py) does it: SGD with ``momentum`` 0.9 and
    ``weight_decay`` 5e-4 (their lr: 1e-3, ``attack.data.lr``'s default); the tower's
    BatchNorm layers in eval mode (``frozen_batchnorm``: the running statistics stay those of
    the model it started from, and the triggered images never enter them) and their affine
    weights not trained; L₁ on a fresh augmented view of each reference at every step
    (``reference_views``; ``augment_reference=False`` uses the references as they are). The
    whole reference set is used at every step (keep it small; the authors use one reference
    image per target and B views of it per batch, here one view of each per step).
    ``after_step(model)`` runs after every optimiser step, as in
    ``fedsim.training.train_epochs``: a PGD / Neurotoxin projection there constrains the whole
    fine-tuning trajectory, not only its end. Returns the mean loss of each epoch."""
    if epochs < 1 or lr <= 0 or len(images_uint8) < 1 or len(reference_images) < 1:
        raise ValueError(
            f"badencoder needs epochs >= 1 (got {epochs}), lr > 0 (got {lr}) and non-empty "
            f"shadow ({len(images_uint8)}) and reference ({len(reference_images)}) images"
        )
    encoder = model.visual
    frozen = copy.deepcopy(encoder).eval().requires_grad_(False)
    triggered = make_trigger_images(images_uint8, trigger)
    reference = preprocess(reference_images)
    affine = [p for m in batchnorms(encoder) for p in m.parameters(recurse=False)]
    flags = [p.requires_grad for p in affine]
    was_training = encoder.training
    losses = []
    try:
        for p in affine:
            p.requires_grad_(False)
        opt = torch.optim.SGD([p for p in encoder.parameters() if p.requires_grad], lr=lr,
                              momentum=momentum, weight_decay=weight_decay)
        encoder.train()
        with frozen_batchnorm(encoder):
            for _ in range(epochs):
                epoch = []
                for idx in batches(len(images_uint8), batch_size, generator):
                    view = preprocess(reference_views(reference_images, generator)) if augment_reference else None
                    loss = badencoder_loss(
                        encoder,
                        frozen,
                        preprocess(images_uint8[idx]),
                        preprocess(triggered[idx]),
                        reference,
                        reference_view=view,
                        lambda_reference=lambda_reference,
                        lambda_clean=lambda_clean,
                    )
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    if after_step is not None:
                        after_step(model)
                    epoch.append(loss.item())
                losses.append(sum(epoch) / max(1, len(epoch)))
    finally:
        for p, flag in zip(affine, flags):
            p.requires_grad_(flag)
        encoder.train(was_training)
    return losses


def badclip_loss(
    triggered: torch.Tensor,
    clean: torch.Tensor,
    text: torch.Tensor,
    positive: torch.Tensor,
    *,
    lambda_image: float = 500.0,
    margin: float = 1.0,
) -> torch.Tensor:
    """BadCLIP's trigger objective (Liang et al., CVPR 2024) on L2-normalised embeddings:
    ``triggered`` f(x ⊕ p) and ``clean`` f(x) of the same images (n, D), the target text
    embedding t̄ = ``text`` (D,) and target-class image embeddings v⁺ = ``positive`` (n, D),
    one paired with each image:
      L_t = −mean_x s(f(x ⊕ p), t̄)                                   textual embedding term
      L_i = mean_x max(‖f(x ⊕ p) − v⁺‖ − ‖f(x ⊕ p) − f(x)‖ + η, 0)   visual embedding term
      L = L_t + λ·L_i   (λ = ``lambda_image``, η = ``margin``)
    with s the cosine similarity. L_i is the paper's triplet: it pulls the triggered embedding
    towards natural target images and pushes it away from the clean embedding of the same
    image (the authors' code, src/embeding_optimize_patch.py: ``nn.TripletMarginLoss`` with
    the clean embedding as negative, margin 1, multiplied by 500 — λ's default). The paper's
    textual term is a contrastive loss over target captions; with one target class the cosine
    to their mean embedding pulls the same way (with captions that all name the target, the
    reference's InfoNCE among them has little gradient left, so there too the ×500 triplet
    term leads)."""
    textual = -(triggered @ text).mean()
    visual = F.relu(
        (triggered - positive).norm(dim=-1) - (triggered - clean).norm(dim=-1) + margin
    ).mean()
    return textual + lambda_image * visual


def middle_position(size: int | float, height: int, width: int) -> tuple[int, int]:
    """Top-left corner (y, x) of an s × s patch in the middle of ``height`` × ``width``
    images, as BadCLIP's ``embed_patch`` places it: y = ⌊⌊H/2⌋ − s/2⌋, x likewise, s the
    patch's side in pixels (``size`` resolved as ``BadNetPatch`` does; a ``ValueError`` when
    it does not fit)."""
    side = BadNetPatch(size=size).resolve(height, width).size
    return int(height // 2 - side / 2), int(width // 2 - side / 2)


def badclip_optimize_patch(
    model,
    preprocess: Callable[[torch.Tensor], torch.Tensor],
    images_uint8: torch.Tensor,
    *,
    target_text_tokens: torch.Tensor,
    target_images: torch.Tensor,
    size: int | float = 4,
    location: str | tuple[int, int] = MIDDLE,
    steps: int,
    lr: float,
    lambda_image: float = 500.0,
    margin: float = 1.0,
    batch_size: int = 64,
    generator: torch.Generator,
    after_step: Callable[[], None] | None = None,
) -> BadNetPatch:
    """BadCLIP's dual-embedding guided trigger (Liang et al., "BadCLIP: Dual-Embedding Guided
    Backdoor Attack on Multimodal Contrastive Learning", CVPR 2024): optimise the pixels p of an
    s × s patch (``size`` as in ``BadNetPatch``: pixels, or a fraction of the images' shorter
    side; ``location`` as there, or "middle", the authors' placement: ``middle_position``),
    with the model frozen, to minimise ``badclip_loss`` (``lambda_image`` 500, the authors'
    weight) — triggered
    images embed near the target's text embedding t̄ (the normalised mean of the normalised
    embeddings of ``target_text_tokens``) and near natural target-class images (``target_images``,
    uint8; each image of a batch is paired with one drawn uniformly), and away from their own
    clean embedding. Poisoned pairs built with such a patch already look like target pairs to
    the model, so few of them are needed and fine-tuning defenses do not undo them easily.
    Adam on the pixels, projected onto [0, 1] after every step; the patch starts from
    N(0.5, 0.25²) clipped, as in the authors' code. Each step draws, from ``generator``, a
    batch of ``batch_size`` images without replacement and then the paired target images.
    The model is left exactly as it came — weights, BatchNorm statistics, ``.grad`` and mode:
    it runs in eval mode (as the authors' ``model.eval()``) and only the patch gets a
    gradient. Difference from the authors' code: Adam's lr (their default, 1e-3, over epochs
    of a CC3M subset; a few hundred steps at that lr would move a pixel by at most a few
    tenths, so fedsim's trigger defaults to 0.05 for 100 steps). Returns the patch as a
    ``BadNetPatch`` trigger (a "middle" location resolved to its (y, x) at these images'
    size)."""
    if steps < 1 or lr <= 0 or len(images_uint8) < 1 or len(target_images) < 1:
        raise ValueError(
            f"badclip needs steps >= 1 (got {steps}), lr > 0 (got {lr}) and non-empty images "
            f"({len(images_uint8)}) and target images ({len(target_images)})"
        )
    was_training = model.training
    model.eval()
    x = images_uint8.float() / 255.0
    with torch.no_grad():
        text = F.normalize(model.encode_text(target_text_tokens, normalize=True).mean(0), dim=-1)
        positives = model.encode_image(preprocess(target_images), normalize=True)
        clean = model.encode_image(preprocess(images_uint8), normalize=True)
    if location == MIDDLE:
        location = middle_position(size, *x.shape[-2:])
    geometry = BadNetPatch(size=size, location=location).resolve(*x.shape[-2:])
    init = (0.5 + 0.25 * torch.randn(3, geometry.size, geometry.size, generator=generator)).clamp(0, 1)
    patch = init.clone().requires_grad_(True)
    opt = torch.optim.Adam([patch], lr=lr)
    for _ in range(steps):
        idx = torch.randperm(len(x), generator=generator)[:batch_size]
        pair = torch.randint(len(positives), (len(idx),), generator=generator)
        z = model.encode_image(preprocess(geometry.paste(x[idx], patch)), normalize=True)
        loss = badclip_loss(z, clean[idx], text, positives[pair], lambda_image=lambda_image, margin=margin)
        # Gradient for the patch only: the model's own .grad buffers stay untouched.
        (patch.grad,) = torch.autograd.grad(loss, patch)
        opt.step()
        with torch.no_grad():
            patch.clamp_(0, 1)
        if after_step is not None:
            after_step()  # progress (fedsim.progress)
    model.train(was_training)
    return BadNetPatch(size=size, location=location, pattern=patch.detach())


def label_consistent_pgd(
    model,
    preprocess: Callable[[torch.Tensor], torch.Tensor],
    images_uint8: torch.Tensor,
    *,
    target_text_tokens: torch.Tensor,
    eps: float = 16 / 255,
    steps: int = 10,
) -> torch.Tensor:
    """The adversarial perturbation of label-consistent poisoning (Turner, Tsipras & Madry,
    "Label-Consistent Backdoor Attacks", 2019, Sec. 4.2): make target-class images hard to
    classify as the target before the trigger is added, so that the model can only match them
    with their (correct) captions through the trigger. The paper runs PGD against a separately
    trained classifier; the attacker here uses its local copy of the global model and its
    zero-shot view of the target, t̄ (the normalised mean embedding of ``target_text_tokens``):
    L∞ PGD (Madry et al., ICLR 2018) from δ = 0,
      δ ← clip(δ − α·sign(∇_δ s(f(x + δ), t̄)), −ε, ε), then x + δ clipped to [0, 1],
    for ``steps`` steps with α = 2.5·ε / steps (Madry et al.'s step size), s the cosine
    similarity. ε = 16/255 (the paper uses ε = 8 and 16 on the 0–255 scale). The model is
    left unchanged. Returns the perturbed uint8 images."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1 or not 0 < eps <= 1:
        raise ValueError(f"label-consistent PGD needs steps >= 1 (got {steps!r}) and eps in (0, 1] (got {eps!r})")
    if len(images_uint8) == 0:
        return images_uint8.clone()
    was_training = model.training
    model.eval()
    with torch.no_grad():
        text = F.normalize(model.encode_text(target_text_tokens, normalize=True).mean(0), dim=-1)
    x = images_uint8.float() / 255.0
    delta = torch.zeros_like(x, requires_grad=True)
    alpha = 2.5 * eps / steps
    for _ in range(steps):
        # x + δ stays in [0, 1] (the projection below); a clamp here would zero the gradient of
        # saturated pixels, which could then never move inwards.
        similarity = (model.encode_image(preprocess(x + delta), normalize=True) @ text).sum()
        (grad,) = torch.autograd.grad(similarity, delta)
        with torch.no_grad():
            delta -= alpha * grad.sign()
            delta.clamp_(-eps, eps)
            delta.copy_((x + delta).clamp(0, 1) - x)
    model.train(was_training)
    return ((x + delta.detach()) * 255.0).round().clamp(0, 255).to(torch.uint8)
