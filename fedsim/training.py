"""Local contrastive training: the symmetric InfoNCE loss of CLIP and one client's epochs, and
the BatchNorm handling of the steps that pass augmented or adversarial images."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm


def clip_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE (Radford et al., ICML 2021, Fig. 3): with L2-normalised features and
    logits = s · I Tᵀ (s = exp of the learnable temperature, passed here already exponentiated),
    the mean of the image→text and text→image cross-entropies against the diagonal."""
    logits = logit_scale * image_features @ text_features.t()
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def batchnorms(model: torch.nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


@contextmanager
def frozen_batchnorm(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Every BatchNorm layer of ``model`` in eval mode for the duration: it normalises with its
    running statistics and updates none of them (the rest of the model keeps its mode); each
    layer's mode is restored afterwards. For passes of images that are not the client's data
    as it is (augmented views, PGD images, a backdoor's triggered images): in training mode
    they would rewrite the running statistics that the evaluation uses and that FedAvg
    averages (measured: RoCLIP's augmented views at lr 1e-9 moved a warm start's CA
    0.713 → 0.333). Freezing only the momentum is no fix: in training mode the weights would
    still adapt to the batch statistics of those images, not to the ones they are evaluated
    with."""
    layers = batchnorms(model)
    modes = [m.training for m in layers]
    for m in layers:
        m.eval()
    try:
        yield model
    finally:
        for m, mode in zip(layers, modes):
            m.train(mode)


@torch.no_grad()
def update_batchnorm(model: torch.nn.Module, images: torch.Tensor) -> None:
    """One forward of the preprocessed clean ``images`` through the image tower
    (``model.encode_image``) with its BatchNorm layers in training mode and no gradient: the
    running statistics take exactly the step that a training-mode forward of these images —
    the standard objective's — gives them; no weight changes. A model without BatchNorm is
    left alone (no pass)."""
    layers = batchnorms(model)
    if not layers:
        return
    modes = [m.training for m in layers]
    for m in layers:
        m.train()
    try:
        model.encode_image(images)
    finally:
        for m, mode in zip(layers, modes):
            m.train(mode)


@contextmanager
def batch_statistics_only(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Every BatchNorm layer of ``model`` that is in training mode normalises with the batch's
    own statistics for the duration, as in training mode, but updates neither its running
    statistics nor ``num_batches_tracked`` (``track_running_stats`` off; the layers' buffers
    are untouched). For a loss that needs training-mode normalisation of images that are not
    the client's data as it is — SimCLR's augmented views, whose batch statistics are part of
    what NT-Xent learns with (the paper's global BN) — while the running statistics, which the
    evaluation uses and FedAvg averages, take the clean images' step (``update_batchnorm``)."""
    layers = [m for m in batchnorms(model) if m.training and m.track_running_stats]
    for m in layers:
        m.track_running_stats = False
    try:
        yield model
    finally:
        for m in layers:
            m.track_running_stats = True


# (model, row indices of the batch, epoch) → the batch's loss
BatchLoss = Callable[[torch.nn.Module, torch.Tensor, int], torch.Tensor]


def pairs_loss(images: torch.Tensor, tokens: torch.Tensor, preprocess) -> BatchLoss:
    """CLIP's InfoNCE on the batch's (image, caption) pairs as they are."""
    return lambda model, idx, epoch: clip_loss(*model(preprocess(images[idx]), tokens[idx])[:3])


def batches(n: int, batch_size: int, generator: torch.Generator):
    """Shuffled index batches of one epoch; the last smaller batch is kept unless it would
    hold a single pair (a contrastive loss needs two)."""
    perm = torch.randperm(n, generator=generator)
    for i in range(0, n, batch_size):
        idx = perm[i : i + batch_size]
        if len(idx) >= 2:
            yield idx


def train_epochs(
    model: torch.nn.Module,
    images: torch.Tensor,
    tokens: torch.Tensor,
    *,
    preprocess: Callable[[torch.Tensor], torch.Tensor],
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    generator: torch.Generator,
    lr_schedule: Callable[[int, int], float] | None = None,
    after_step: Callable[[torch.nn.Module], None] | None = None,
    batch_loss: BatchLoss | None = None,
) -> float:
    """Train ``model`` in place with AdamW on (images, tokens) pairs; return the mean loss.

    ``lr_schedule(step, total_steps)`` multiplies ``lr`` per step (constant when None);
    ``after_step(model)`` runs after every optimiser step (e.g. a PGD projection);
    ``batch_loss(model, idx, epoch)``: the loss of the batch of rows ``idx`` in epoch
    ``epoch`` (0-based), for objectives other than CLIP's InfoNCE on the pairs as they are
    (``fedsim.objectives``)."""
    batch_loss = batch_loss or pairs_loss(images, tokens, preprocess)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    # the batches ``batches`` yields: a last batch of one pair is skipped, so it is no step
    steps_per_epoch = len(images) // batch_size + (len(images) % batch_size >= 2)
    total = max(1, epochs * steps_per_epoch)
    losses, step = [], 0
    for epoch in range(epochs):
        for idx in batches(len(images), batch_size, generator):
            if lr_schedule is not None:
                for group in opt.param_groups:
                    group["lr"] = lr * lr_schedule(step, total)
            loss = batch_loss(model, idx, epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step(model)
            losses.append(loss.item())
            step += 1
    return float(sum(losses) / max(1, len(losses)))


def warmup_cosine(warmup: float = 0.1) -> Callable[[int, int], float]:
    """Linear warm-up over the first ``warmup`` share of steps, then cosine decay to zero
    (the one-cycle shape that ../shared/notes/clip.md found necessary from scratch)."""

    def schedule(step: int, total: int) -> float:
        w = max(1, int(warmup * total))
        if step < w:
            return (step + 1) / w
        progress = (step - w) / max(1, total - w)
        return 0.5 * (1 + torch.cos(torch.tensor(progress * torch.pi)).item())

    return schedule
