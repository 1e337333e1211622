"""The augmentations of the robust contrastive objectives: random image views (SimCLR's
recipe, CleanCLIP's AutoAugment) and EDA-style caption edits, all drawn from a
``torch.Generator`` so that a seed fixes them."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision import transforms
from torchvision.transforms import v2


def image_views(size: int) -> v2.Compose:
    """One random view of an image, SimCLR's recipe (Chen et al., ICML 2020) as RoCLIP's
    released code uses it (Yang et al., NeurIPS 2023; CleanCLIP's is AutoAugment instead,
    ``autoaugment_images``): random resized crop to ``size`` (scale 0.08–1), horizontal
    flip (p = 0.5), colour jitter (brightness, contrast, saturation 0.5, hue 0.1) with
    p = 0.8, grayscale with p = 0.2. RoCLIP's Gaussian blur
    (kernel 21 at 224 px) is left out: at 32 px it would blur the whole image away."""
    return v2.Compose([
        v2.RandomResizedCrop(size, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.5, 0.5, 0.5, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
    ])


def per_image(transform: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
              generator: torch.Generator) -> torch.Tensor:
    """``transform`` applied to each image of ``images`` (B, 3, H, W) on its own, stacked.
    torchvision's random transforms draw from torch's global RNG, and a batched call would
    give every image the same draw; so image i is transformed with the global RNG seeded to
    the i-th of B seeds drawn from ``generator``, inside ``torch.random.fork_rng`` (the global
    RNG is left as it was, and a seed fixes the views)."""
    seeds = torch.randint(0, 2**62, (len(images),), generator=generator).tolist()
    out = []
    with torch.random.fork_rng(devices=[]):
        for image, seed in zip(images, seeds):
            torch.manual_seed(seed)
            out.append(transform(image))
    return torch.stack(out)


def augment_images(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """uint8 images (B, 3, H, W) → one random view of each (``image_views``), uint8
    (B, 3, size, size), drawn per image from ``generator`` (``per_image``)."""
    return per_image(image_views(size), images, generator)


def autoaugment_images(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """uint8 images (B, 3, H, W) → one AutoAugment view of each, uint8, same size: CleanCLIP's
    image augmentation (Bansal et al., ICCV 2023; utils/augment_image.py of its released code:
    ``torchvision.transforms.AutoAugment()``, the default ImageNet policy of Cubuk et al.,
    CVPR 2019 — one of its 25 sub-policies, i.e. two operations such as rotate, shear,
    posterize, solarize, colour or contrast, each applied with its probability and
    magnitude), drawn per image from ``generator`` (``per_image``). The reference augments
    the decoded image before its 224 px preprocessing; here the stored uint8 image, before
    ``Preprocess`` resizes it to the model's size."""
    return per_image(transforms.AutoAugment(), images, generator)


def eda(caption: str, generator: torch.Generator, alpha: float = 0.1) -> str:
    """An EDA-style edit of a caption (Wei & Zou, "EDA: Easy Data Augmentation Techniques for
    Boosting Performance on Text Classification Tasks", EMNLP 2019), as CleanCLIP and RoCLIP
    augment captions — the two operations that need no thesaurus only (synonym replacement
    and random insertion need WordNet, which a run may not download): with probability ½
    *random swap*, max(1, ⌊α·L⌋) times exchange the words at two random positions; else
    *random deletion*, drop each word with probability α, keeping one random word if none
    survives. L is the number of words (split on whitespace); a one-word caption is kept.
    So the result is always a reordering or a sub-sequence of the caption's words."""
    words = caption.split()
    if len(words) < 2:
        return caption
    if torch.rand((), generator=generator) < 0.5:
        for _ in range(max(1, int(alpha * len(words)))):
            i, j = torch.randint(0, len(words), (2,), generator=generator).tolist()
            words[i], words[j] = words[j], words[i]
        return " ".join(words)
    keep = torch.rand(len(words), generator=generator) >= alpha
    if not keep.any():
        return words[int(torch.randint(0, len(words), (), generator=generator))]
    return " ".join(w for w, k in zip(words, keep.tolist()) if k)
