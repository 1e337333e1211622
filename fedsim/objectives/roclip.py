"""RoCLIP (Yang et al., "Robust Contrastive Language-Image Pretraining
against Data Poisoning and Backdoor Attacks", NeurIPS 2023) as an honest client's local
training."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedsim.models import Preprocess, tokenize
from fedsim.objectives.augment import augment_images, eda
from fedsim.training import BatchLoss, clip_loss, frozen_batchnorm, update_batchnorm


def nearest_captions(image_features: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """For each image embedding (B, D), the row of the most cosine-similar caption embedding
    in ``pool`` (P, D) (the lowest row on a tie): RoCLIP's nearest-neighbour matching."""
    sim = F.normalize(image_features, dim=-1) @ F.normalize(pool, dim=-1).t()
    return sim.argmax(dim=1)


def roclip(
    model: torch.nn.Module,
    images: torch.Tensor,
    captions: tuple[str, ...],
    *,
    tokenizer,
    preprocess: Preprocess,
    generator: torch.Generator,
    epoch_offset: int,
    every: int,
    pool_size: int,
) -> BatchLoss:
    """RoCLIP's loss (Yang et al., NeurIPS 2023) for one client's local epochs, as its released
    code computes it: every batch sees a random view of each image (``augment_images``) and
    an EDA edit of each caption (``eda``); in a *matching* epoch each image embedding I_i is
    paired with T*_i, its nearest caption embedding in the pool P (``nearest_captions``, no
    gradient through the pool), the loss is the symmetric InfoNCE between (I_i) and (T*_i),
    and the batch's caption embeddings then enter P first-in-first-out; in the other epochs
    it is CLIP's InfoNCE on the (augmented) pairs.

    fedsim's variant: the client is rebuilt every round, so P starts each round as the
    embeddings (by the round's global model) of ``pool_size`` captions drawn at random from the
    client's own data (the paper's pool persists over epochs and starts from random vectors);
    the t-th local epoch of the run, t = ``epoch_offset`` + e + 1 (e the epoch within this
    round, 0-based), matches when t is a multiple of ``every``, so the matching cadence
    counts epochs over rounds.

    BatchNorm (a choice the released code does not face alike: its ResNet-50 towers train on
    the augmented pairs in training mode, and nothing averages their statistics afterwards):
    the running statistics come from the batch's *clean* images only — one training-mode
    forward of them through the image tower without gradient (``update_batchnorm``), the
    step the standard objective's forward of the same batch gives them — and the loss pass of
    the augmented pairs runs with BatchNorm in eval mode (``frozen_batchnorm``), so the
    weights are trained with the normalisation they are evaluated and aggregated with. In
    training mode the augmented views would rewrite the statistics that FedAvg then averages
    (measured: at lr 1e-9 a warm start's CA fell 0.713 → 0.333; the standard objective 0.710)."""
    with torch.no_grad():
        model.eval()
        drawn = torch.randperm(len(captions), generator=generator)[:pool_size].tolist()
        pool = [model.encode_text(tokenize(tokenizer, [captions[i] for i in drawn]), normalize=True)]
        model.train()

    def batch_loss(model, idx, epoch):
        views = augment_images(images[idx], preprocess.image_size, generator)
        edited = tokenizer([eda(captions[i], generator) for i in idx.tolist()])
        update_batchnorm(model, preprocess(images[idx]))
        with frozen_batchnorm(model):
            image, text, scale = model(preprocess(views), edited)[:3]
        if (epoch_offset + epoch + 1) % every:
            return clip_loss(image, text, scale)
        matched = pool[0][nearest_captions(image.detach(), pool[0])]
        pool[0] = torch.cat([pool[0], text.detach()])[-pool_size:]
        return clip_loss(image, matched, scale)

    return batch_loss
