"""Adversarial training against backdoors (Gao et al., "On the Effectiveness of Adversarial
Training against Backdoor Attacks", arXiv 2202.10627, 2022) with
CLIP's contrastive loss, as an honest client's local training."""

from __future__ import annotations

import torch

from fedsim.models import Preprocess, tokenize
from fedsim.training import BatchLoss, clip_loss, frozen_batchnorm, update_batchnorm


def pgd_images(
    model: torch.nn.Module,
    images: torch.Tensor,
    tokens: torch.Tensor,
    *,
    preprocess: Preprocess,
    eps: float,
    alpha: float,
    steps: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """L∞ PGD (Madry et al., ICLR 2018) on a batch of image–caption pairs: images (uint8 or
    [0, 1] float) → float images x' in [0, 1] with ‖x' − x‖∞ ≤ ``eps`` that maximise CLIP's
    InfoNCE of (x', captions): a uniform random start in the ε-ball, then ``steps`` times
    x' ← clip_{[0,1] ∩ B∞(x, ε)}(x' + α · sign ∇x' L). The model runs in eval mode (its
    BatchNorm statistics are not fed the attack's batches) and its parameters get no
    gradient."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    was_training = model.training
    model.eval()
    delta = (torch.rand(x.shape, generator=generator) * 2 - 1) * eps
    adv = (x + delta).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = clip_loss(*model(preprocess(adv), tokens)[:3])
        (grad,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + alpha * grad.sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
    model.train(was_training)
    return adv.detach()


def adversarial(
    model: torch.nn.Module,
    images: torch.Tensor,
    captions: tuple[str, ...],
    *,
    tokenizer,
    preprocess: Preprocess,
    generator: torch.Generator,
    epoch_offset: int,
    eps: float,
    alpha: float,
    steps: int,
) -> BatchLoss:
    """Adversarial training as Gao et al. (2022) study it against backdoors, with CLIP's
    InfoNCE as the loss: before each optimiser step the batch's images are replaced by their
    L∞ PGD perturbations (``pgd_images``: radius ``eps``, ``steps`` steps of size ``alpha``,
    random start) that maximise the contrastive loss against their own captions, and the
    step minimises the loss on those. Gao et al. find small-ε L∞ training can *help* a
    backdoor and larger or spatial perturbations hurt it: measure, whichever way it goes.

    BatchNorm: the inner maximisation runs with the model in eval mode (``pgd_images``, as
    PGD-AT codebases craft the attack). The outer step differs from Madry et al.'s recipe,
    which trains on the PGD images in training mode: here the batch's *clean* images update
    the running statistics (one training-mode forward without gradient, ``update_batchnorm``
    — the step the standard objective's forward gives them) and the loss pass of the PGD
    images runs with BatchNorm in eval mode (``frozen_batchnorm``). So the attack maximises
    the very function the step minimises, and no adversarial batch statistics reach the
    model that FedAvg averages and the evaluation reads (in training mode they would: the
    same failure as RoCLIP's augmented views, see ``fedsim.training.frozen_batchnorm``)."""
    tokens = tokenize(tokenizer, captions)

    def batch_loss(model, idx, epoch):
        # the statistics first, so that the attack and the step see one and the same network
        update_batchnorm(model, preprocess(images[idx]))
        adv = pgd_images(model, images[idx], tokens[idx], preprocess=preprocess, eps=eps,
                         alpha=alpha, steps=steps, generator=generator)
        with frozen_batchnorm(model):
            return clip_loss(*model(preprocess(adv), tokens[idx])[:3])

    return batch_loss
