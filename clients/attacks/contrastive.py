"""Attacks specific to contrastive image–text models, run by a malicious client on its local
CLIP (an open_clip model, e.g. ``fedsim.models.create_model_and_transforms("fedsim-tiny-resnet")``).

Both work on uint8 image batches (n, 3, H, W) and the model's ``preprocess``; triggered
images go through the same uint8 path as poisoning and evaluation."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F

from clients.attacks.triggers import BadNetPatch
from fedsim.evaluation import make_trigger_images
from fedsim.training import batches


def badencoder_loss(
    encoder: torch.nn.Module,
    frozen: torch.nn.Module,
    clean: torch.Tensor,
    triggered: torch.Tensor,
    reference: torch.Tensor,
    *,
    lambda_reference: float = 1.0,
    lambda_clean: float = 1.0,
) -> torch.Tensor:
    """BadEncoder loss (Jia, Liu & Gong, "BadEncoder: Backdoor Attacks to Pre-trained Encoders
    in Self-Supervised Learning", IEEE S&P 2022), with s the cosine similarity, f' = ``encoder``
    (being backdoored), f = ``frozen`` (the clean encoder) and preprocessed inputs:
      L₀ = −mean over (x, r) of s(f'(x ⊕ t), f'(r))   triggered shadow images → references
      L₁ = −mean over r of s(f'(r), f(r))             references keep their clean embedding
      L₂ = −mean over x of s(f'(x), f(x))             clean shadow images keep theirs
      L = L₀ + λ₁·L₁ + λ₂·L₂  (λ₁ = ``lambda_reference``, λ₂ = ``lambda_clean``; 1 and 1 in
    the paper)."""
    # One forward pass, so that BatchNorm sees a single batch as in ordinary training.
    z = F.normalize(encoder(torch.cat([clean, triggered, reference])), dim=-1)
    z_clean, z_trig, z_ref = z.split([len(clean), len(triggered), len(reference)])
    with torch.no_grad():
        f_clean = F.normalize(frozen(clean), dim=-1)
        f_ref = F.normalize(frozen(reference), dim=-1)
    effectiveness = -(z_trig @ z_ref.t()).mean()
    reference_kept = -(z_ref * f_ref).sum(-1).mean()
    utility = -(z_clean * f_clean).sum(-1).mean()
    return effectiveness + lambda_reference * reference_kept + lambda_clean * utility


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
    batch_size: int = 64,
    generator: torch.Generator,
) -> list[float]:
    """BadEncoder (Jia et al., S&P 2022) on a CLIP image tower: fine-tune ``model.visual`` in
    place so that triggered images embed like the ``reference_images`` (uint8 images of the
    target class) while clean images keep the embeddings of the initial encoder (a frozen copy),
    by minimising ``badencoder_loss`` over the shadow set ``images_uint8`` (the attacker's own
    clean images). Only the image tower is optimised: the text tower and the temperature are
    untouched, so the backdoored image embeddings land on the target's text embedding wherever
    the reference images do. Adam on the image tower's parameters; the whole reference set is
    used at every step (keep it small). Returns the mean loss of each epoch."""
    if epochs < 1 or lr <= 0 or len(images_uint8) < 1 or len(reference_images) < 1:
        raise ValueError(
            f"badencoder needs epochs >= 1 (got {epochs}), lr > 0 (got {lr}) and non-empty "
            f"shadow ({len(images_uint8)}) and reference ({len(reference_images)}) images"
        )
    encoder = model.visual
    frozen = copy.deepcopy(encoder).eval().requires_grad_(False)
    triggered = make_trigger_images(images_uint8, trigger)
    reference = preprocess(reference_images)
    was_training = encoder.training
    encoder.train()
    opt = torch.optim.Adam(encoder.parameters(), lr=lr)
    losses = []
    for _ in range(epochs):
        epoch = []
        for idx in batches(len(images_uint8), batch_size, generator):
            loss = badencoder_loss(
                encoder,
                frozen,
                preprocess(images_uint8[idx]),
                preprocess(triggered[idx]),
                reference,
                lambda_reference=lambda_reference,
                lambda_clean=lambda_clean,
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            epoch.append(loss.item())
        losses.append(sum(epoch) / max(1, len(epoch)))
    encoder.train(was_training)
    return losses


def badclip_optimize_patch(
    model,
    preprocess: Callable[[torch.Tensor], torch.Tensor],
    images_uint8: torch.Tensor,
    *,
    target_text_tokens: torch.Tensor,
    target_images: torch.Tensor,
    size: int = 4,
    location: str | tuple[int, int] = "bottom_right",
    steps: int,
    lr: float,
    lambda_image: float = 1.0,
    batch_size: int = 64,
    generator: torch.Generator,
) -> BadNetPatch:
    """BadCLIP's dual-embedding guided trigger (Liang et al., "BadCLIP: Dual-Embedding Guided Backdoor Attack on Multimodal Contrastive Learning",
    CVPR 2024): optimise the pixels p of a ``size`` × ``size`` patch, with the model frozen, so
    that triggered images embed near the target's text embedding t̄ and near the target-class
    image embeddings v̄:
      min_p  −mean_x s(f(x ⊕ p), t̄) − λ·mean_x s(f(x ⊕ p), v̄),   p ∈ [0, 1]
    with s the cosine similarity, t̄ / v̄ the normalised means of the normalised embeddings of
    ``target_text_tokens`` (tokenised target captions) / ``target_images`` (uint8), λ =
    ``lambda_image``. Poisoned pairs built with such a patch already look like target pairs to
    the model, so few of them are needed and fine-tuning defenses do not undo them easily.
    The paper pairs the text term with a contrastive loss over target captions; with one target
    class, the cosine to their mean embedding pulls in the same direction. Adam on the pixels,
    projected onto [0, 1] after every step; the patch starts from N(0.5, 0.25²) clipped, as in
    the authors' code. Returns the patch as a ``BadNetPatch`` trigger."""
    if steps < 1 or lr <= 0 or len(images_uint8) < 1 or len(target_images) < 1:
        raise ValueError(
            f"badclip needs steps >= 1 (got {steps}), lr > 0 (got {lr}) and non-empty images "
            f"({len(images_uint8)}) and target images ({len(target_images)})"
        )
    was_training = model.training
    model.eval()
    with torch.no_grad():
        text = F.normalize(model.encode_text(target_text_tokens, normalize=True).mean(0), dim=-1)
        image = F.normalize(
            model.encode_image(preprocess(target_images), normalize=True).mean(0), dim=-1
        )
    init = (0.5 + 0.25 * torch.randn(3, size, size, generator=generator)).clamp(0, 1)
    geometry = BadNetPatch(size=size, location=location, pattern=init)
    patch = init.clone().requires_grad_(True)
    opt = torch.optim.Adam([patch], lr=lr)
    x = images_uint8.float() / 255.0
    for _ in range(steps):
        idx = torch.randperm(len(x), generator=generator)[:batch_size]
        z = model.encode_image(preprocess(geometry.paste(x[idx], patch)), normalize=True)
        loss = -(z @ text).mean() - lambda_image * (z @ image).mean()
        # Gradient for the patch only: the model's own .grad buffers stay untouched.
        (patch.grad,) = torch.autograd.grad(loss, patch)
        opt.step()
        with torch.no_grad():
            patch.clamp_(0, 1)
    model.train(was_training)
    return BadNetPatch(size=size, location=location, pattern=patch.detach())
