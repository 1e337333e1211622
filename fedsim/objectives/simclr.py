"""SimCLR (Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive Learning of
Visual Representations", ICML 2020): uni-modal contrastive training of an image encoder and
its projection head on two augmented views of each image."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedsim.models import Preprocess
from fedsim.objectives.augment import augment_images
from fedsim.training import BatchLoss


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
) -> BatchLoss:
    """SimCLR's local training (Chen et al., ICML 2020) as a training mode of
    ``fedsim.objectives`` (captions and tokenizer unused): every batch draws two random views
    of each image (``augment_images``: crop, flip, colour jitter, grayscale) and minimises
    ``nt_xent`` of the projections ``model(x)`` (backbone + projection head,
    ``fedsim.models.SimCLRModel``). Both views go through the model in one batch, so that
    BatchNorm normalises them together, as SimCLR's global BN does."""

    def batch_loss(model, idx, epoch):
        size = preprocess.image_size
        views = torch.cat([augment_images(images[idx], size, generator),
                           augment_images(images[idx], size, generator)])
        z1, z2 = model(preprocess(views)).chunk(2)
        return nt_xent(z1, z2, temperature)

    return batch_loss
