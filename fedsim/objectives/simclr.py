"""SimCLR (Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive Learning of
Visual Representations", ICML 2020): uni-modal contrastive training of an image encoder and
its projection head on two augmented views of each image."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedsim.models import Preprocess
from fedsim.objectives.augment import augment_images
from fedsim.training import BatchLoss, batch_statistics_only, batchnorms, update_batchnorm

BATCHNORM = ("clean", "augmented")


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (Chen et al., ICML 2020, Alg. 1) of the projections (N, D) of two views of N
    images: with z the 2N L2-normalised rows and s_ij = z_iᵀ z_j / τ, each anchor i's loss is
      ℓ(i) = −log( exp(s_i,p(i)) / Σ_{k ≠ i} exp(s_ik) ),
    p(i) the other view of the same image (the positive; the other 2N − 2 rows are the
    negatives), and the loss is the mean of ℓ over all 2N anchors."""
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    n = len(z1)
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, positive)


def simclr(
    model: torch.nn.Module,
    images: torch.Tensor,
    captions: tuple[str, ...],
    *,
    tokenizer,
    preprocess: Preprocess,
    generator: torch.Generator,
    epoch_offset: int,
    temperature: float,
    batchnorm: str = "clean",
) -> BatchLoss:
    """SimCLR's local training (Chen et al., ICML 2020) as a training mode of
    ``fedsim.objectives`` (captions and tokenizer unused): every batch draws two random views
    of each image (``augment_images``: crop, flip, colour jitter, grayscale) and minimises
    ``nt_xent`` of the projections ``model(x)`` (backbone + projection head,
    ``fedsim.models.SimCLRModel``). Both views go through the model in one batch, so that
    BatchNorm normalises them together, as SimCLR's global BN does.

    BatchNorm's running statistics (what the kNN / probe evaluation normalises with and FedAvg
    averages), ``batchnorm``:
    - "clean" (default, a named variant): they take the step of the batch's clean images (one
      training-mode forward without gradient, ``update_batchnorm`` — the step the standard
      objective's forward gives them); the views are normalised by their own batch statistics
      as in the paper but update nothing (``batch_statistics_only``). Reason, measured: with
      the running statistics of the views, a warm-started tower at lr 1e-12 (weights
      unchanged) lost kNN CA 0.887 → 0.863 in two rounds of the quickstart (2026-12-07) —
      the evaluation normalised clean images with the statistics of crops, jitter and
      grayscale, the BatchNorm artifact of issue #22.
    - "augmented": the reference's behaviour (SimCLR's code trains BN on the views in training
      mode; its running statistics are the views'), for comparison."""
    if batchnorm not in BATCHNORM:
        raise ValueError(f"batchnorm={batchnorm!r}; allowed: {', '.join(BATCHNORM)}")

    def batch_loss(model, idx, epoch):
        size = preprocess.image_size
        views = torch.cat([augment_images(images[idx], size, generator),
                           augment_images(images[idx], size, generator)])
        if batchnorm == "augmented":
            z1, z2 = model(preprocess(views)).chunk(2)
        else:
            if any(m.training for m in batchnorms(model)):  # a training step, not a loss measured in eval mode
                update_batchnorm(model, preprocess(images[idx]))
            with batch_statistics_only(model):
                z1, z2 = model(preprocess(views)).chunk(2)
        return nt_xent(z1, z2, temperature)

    return batch_loss
