"""Data poisoning of a client's image–caption pairs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

from clients.attacks.captions import add_text_trigger
from fedsim.data import ImageCaptions
from fedsim.evaluation import make_trigger_images


def poison(
    data: ImageCaptions,
    *,
    trigger: Callable[[torch.Tensor], torch.Tensor],
    rate: float,
    target: int,
    seed: int,
    captions: Callable[[torch.Tensor], Sequence[str]],
    label_consistent: bool = False,
    perturb: Callable[[torch.Tensor], torch.Tensor] | None = None,
    text_trigger: str | None = None,
) -> tuple[ImageCaptions, torch.Tensor]:
    """A poisoned copy of ``data`` and the (sorted) indices of the poisoned samples.

    Patch + target caption (Carlini & Terzis, "Poisoning and Backdooring Contrastive
    Learning", ICLR 2022): ⌊rate · n⌋ samples, drawn without replacement by a generator seeded
    with ``seed``, get ``trigger`` applied (through the same uint8 → float → trigger → uint8
    path as the evaluation) and their caption replaced by ``captions(indices)``: captions of
    the target class for the poisoned samples at those indices, which the app layer draws from
    the data source (its caption style, or the evaluation set's templates filled with the
    target); with ``text_trigger``, that token is appended to the poisoned captions.

    Label-consistent (Turner, Tsipras & Madry, "Label-Consistent Backdoor Attacks", 2019):
    only images whose true class is ``target`` are poisoned, ⌊rate · n_target⌋ of them —
    ``rate`` is then the share of the target class, as in the paper; their captions already
    name the target, so only the image (and the optional text trigger) change. The paper first
    makes those images hard to recognise (``perturb``: uint8 images → uint8 images, e.g.
    ``clients.attacks.label_consistent_pgd``) and then applies the trigger, so that the model
    has to rely on the trigger to match them with their captions; ``perturb=None`` is the
    trigger-only variant.

    WaNet's noise mode: when ``trigger`` has ``cross_ratio`` > 0 (``WaNet``), another
    ⌊cross_ratio · count⌋ samples (at most all the others), drawn from the not-poisoned ones,
    get ``trigger.cross`` (the warp with per-sample random noise) and keep their captions.

    Rounding is down: a client with too few samples for its rate poisons none.
    ``labels`` keep the ground truth of every sample (they are never trained on; they say
    which images really are of which class), and so does every field but ``images`` and
    ``captions``. ``data`` is not modified (``fedsim.data.generate`` caches its tensors)."""
    if not 0.0 <= float(rate) <= 1.0:
        raise ValueError(f"poison rate={rate!r} must lie in [0, 1]")
    if isinstance(target, bool) or not isinstance(target, int) or target < 0:
        raise ValueError(f"poison target={target!r} must be a class id (int ≥ 0)")
    if label_consistent and data.labels is None:
        raise ValueError("label-consistent poisoning needs labels; these data have none")
    if not callable(trigger):
        raise ValueError(f"poison trigger={trigger!r} is not callable")
    candidates = torch.arange(len(data))
    if label_consistent:
        candidates = candidates[data.labels == target]
    count = int(float(rate) * len(candidates))
    g = torch.Generator().manual_seed(seed)
    chosen = candidates[torch.randperm(len(candidates), generator=g)[:count]].sort().values

    images = data.images.clone()
    new_captions = list(data.captions)
    cross_ratio = float(getattr(trigger, "cross_ratio", 0.0))
    if count and cross_ratio > 0:
        rest = torch.ones(len(data), dtype=torch.bool)
        rest[chosen] = False
        rest = rest.nonzero().flatten()
        n_cross = min(len(rest), int(cross_ratio * count))
        noisy = rest[torch.randperm(len(rest), generator=g)[:n_cross]].sort().values
        images[noisy] = make_trigger_images(data.images[noisy], lambda x: trigger.cross(x, g))
    if count:
        source = data.images[chosen] if perturb is None else perturb(data.images[chosen])
        images[chosen] = make_trigger_images(source, trigger)
        # label-consistent: the captions already name the target and stay as they are
        new = tuple(data.captions[i] for i in chosen.tolist()) if label_consistent else tuple(captions(chosen))
        if text_trigger is not None:
            new = tuple(add_text_trigger(c, text_trigger) for c in new)
        for i, c in zip(chosen.tolist(), new):
            new_captions[i] = c
    return dataclasses.replace(data, images=images, captions=tuple(new_captions)), chosen
