"""CleanCLIP (Bansal, Singhi, Yang, Yin, Grover, Chang, "CleanCLIP: Mitigating Data Poisoning
Attacks in Multimodal Contrastive Learning", ICCV 2023): fine-tune a possibly poisoned CLIP on
clean image–caption pairs with the multimodal loss plus unimodal self-supervised terms."""

from __future__ import annotations

from collections.abc import Callable

import math
from typing import Literal

import torch
import torch.nn.functional as F

from fedsim.models import Preprocess, tokenize
from fedsim.objectives.augment import autoaugment_images, eda
from fedsim.training import batchnorms, clip_loss, frozen_batchnorm, train_epochs, update_batchnorm

# How the BatchNorm layers of the image tower run during the fine-tuning (``cleanclip_finetune``).
BatchNormMode = Literal["eval", "train", "recompute"]

# The reference's warm-up (its README's CleanCLIP command: --num_warmup_steps 50), capped at
# this share of the steps so that a short fine-tuning is not all warm-up.
WARMUP_STEPS = 50
WARMUP_MAX_SHARE = 0.2


def cleanclip_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    image_view: torch.Tensor,
    text_view: torch.Tensor,
    logit_scale: torch.Tensor,
    lambda1: float = 1.0,
    lambda2: float = 1.0,
) -> torch.Tensor:
    """CleanCLIP's loss (Bansal et al., ICCV 2023) on L2-normalised features (N, D):

        L = λ1 · L_CLIP(I, T) + λ2 · L_SS,   L_SS = ½ (L_I + L_T),
        L_I = −(1/N) Σ_i log softmax_j(s ⟨I_i, Ĩ_j⟩)_i,   L_T likewise with T and T̃,

    where I, T are the embeddings of the images and their captions, Ĩ, T̃ those of an
    augmented version of each (``image_view``, ``text_view``), s = ``logit_scale`` (already
    exponentiated) and L_CLIP the symmetric InfoNCE (``fedsim.training.clip_loss``). This is
    the released code's loss term for term (src/train.py, ``get_loss``: clip_weight ·
    crossmodal + inmodal_weight · (CE(s·I Ĩᵀ) + CE(s·T T̃ᵀ)) / 2) and the paper's L_SS: each
    unimodal term is one-directional — the rows are the originals, the candidates the
    augmented batch. Variant not taken: symmetric unimodal terms (also Ĩ → I, or SimCLR's
    NT-Xent over all 2N views, ``fedsim.objectives.nt_xent``). λ1 = λ2 = 1 is the paper's
    setting."""
    labels = torch.arange(image.shape[0], device=image.device)
    l_image = F.cross_entropy(logit_scale * image @ image_view.t(), labels)
    l_text = F.cross_entropy(logit_scale * text @ text_view.t(), labels)
    return lambda1 * clip_loss(image, text, logit_scale) + lambda2 * (l_image + l_text) / 2


def warmup_then_cosine(step: int, total: int) -> float:
    """The reference's learning-rate factor (src/scheduler.py, ``cosine_scheduler``): linear
    warm-up (step + 1) / w over the first w steps, then ½ (1 + cos(π (step − w) / (total − w)));
    w = min(50, ⌊0.2 · total⌋) (at least 1): the reference's 50 warm-up steps, or a fifth
    of a shorter fine-tuning (1,000 pairs at batch 32 for 10 epochs: 320 steps, w = 50)."""
    w = max(1, min(WARMUP_STEPS, int(WARMUP_MAX_SHARE * total)))
    if step < w:
        return (step + 1) / w
    return 0.5 * (1 + math.cos(math.pi * (step - w) / max(1, total - w)))


def recompute_batchnorm(model: torch.nn.Module, images: torch.Tensor, preprocess: Preprocess,
                        batch_size: int) -> None:
    """Re-estimate every BatchNorm layer's running statistics on ``images`` as they are (no
    augmentation): reset them, then one pass without gradients (``update_batchnorm``),
    batches of ``batch_size`` in order, with a cumulative average (momentum None) so that
    every batch counts alike (as SWA's ``update_bn``). Weights and modes are untouched."""
    layers = batchnorms(model)
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    try:
        for i in range(0, len(images), batch_size):
            if len(images[i : i + batch_size]) >= 2:
                update_batchnorm(model, preprocess(images[i : i + batch_size]))
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum


def cleanclip_finetune(
    model: torch.nn.Module,
    images: torch.Tensor,
    captions: tuple[str, ...],
    *,
    tokenizer,
    preprocess: Preprocess,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    lambda1: float,
    lambda2: float,
    generator: torch.Generator,
    batchnorm: BatchNormMode = "eval",
    after_step: Callable[[], None] | None = None,
) -> float:
    """CleanCLIP fine-tuning (Bansal et al., ICCV 2023) of ``model`` in place on the clean
    pairs (uint8 ``images``, ``captions``), as its released code does it: ``epochs`` epochs
    of AdamW on ``cleanclip_loss`` at ``lr`` × ``warmup_then_cosine``; each batch's B
    originals and their B augmented versions go through the model in *one* forward pass
    (images [originals; views], texts [captions; augmented captions], src/train.py) and the
    embeddings are split in halves. The image view is AutoAugment's (``autoaugment_images``,
    drawn afresh for every batch, as the reference's data loader does); the augmented caption
    an EDA edit (``eda``), drawn once per fine-tuning for every caption (the reference edits
    its captions once when it loads them). λ2 = 0 is plain CLIP fine-tuning, λ1 · L_CLIP on
    the B pairs: no view is drawn or passed through the model. Returns the mean loss.

    ``batchnorm`` — the image tower's BatchNorm layers, which a pretrained CLIP (LayerNorm
    only) does not have and the reference's train-mode loop therefore never had to think of:

    - "eval" (default): in eval mode throughout — normalised by the running statistics the
      model arrived with, which stay untouched, and the weights are trained against them.
      The fine-tuned model is evaluated and sent to the clients with those statistics, so
      the step can only move the model through its weights: at lr 0 it is the identity.
      In train mode the AutoAugment views (off the clients' distribution) rewrite the
      statistics the evaluation uses — measured: a step at lr 1e-9 moved CA 0.563 → 0.473.
    - "train": the reference's behaviour, train mode throughout (batch statistics, the
      running statistics updated by every [originals; views] batch).
    - "recompute": train mode throughout, then ``recompute_batchnorm`` on the clean pairs
      without augmentation, so the statistics sent are the clean data's.

    Remaining differences from the reference: weight decay on every parameter (the
    reference exempts BatchNorm/LayerNorm weights, biases and the logit scale), no clamp of
    the logit scale to ln 100 after each step (fedsim's training clamps it nowhere), EDA by
    random swap / deletion only (``eda``), fp32 instead of autocast."""
    tokens = tokenize(tokenizer, captions)
    edited = tokenize(tokenizer, [eda(c, generator) for c in captions]) if lambda2 else None

    def forward(model, pixels, text):
        if batchnorm == "eval":
            with frozen_batchnorm(model):
                return model(preprocess(pixels), text)[:3]
        return model(preprocess(pixels), text)[:3]

    def batch_loss(model, idx, epoch):
        if not lambda2:
            return lambda1 * clip_loss(*forward(model, images[idx], tokens[idx]))
        views = autoaugment_images(images[idx], generator)
        image, text, scale = forward(model, torch.cat([images[idx], views]), torch.cat([tokens[idx], edited[idx]]))
        b = len(idx)
        return cleanclip_loss(image[:b], text[:b], image[b:], text[b:], scale, lambda1, lambda2)

    loss = train_epochs(
        model, images, tokens, preprocess=preprocess, epochs=epochs, lr=lr, batch_size=batch_size,
        weight_decay=weight_decay, generator=generator, lr_schedule=warmup_then_cosine,
        batch_loss=batch_loss, after_step=None if after_step is None else lambda _model: after_step(),
    )
    if batchnorm == "recompute":
        recompute_batchnorm(model, images, preprocess, batch_size)
    return loss
