"""The augmentations of the robust contrastive objectives: random image views and EDA-style
caption edits, both drawn from a ``torch.Generator`` so that a seed fixes them."""

from __future__ import annotations

import torch
from torchvision.transforms import v2


def image_views(size: int) -> v2.Compose:
    """One random view of an image, SimCLR's recipe as RoCLIP's released code uses it
    (Yang et al., NeurIPS 2023; CleanCLIP's is the same family): random resized crop to
    ``size`` (scale 0.08–1), horizontal flip (p = 0.5), colour jitter (brightness, contrast,
    saturation 0.5, hue 0.1) with p = 0.8, grayscale with p = 0.2. RoCLIP's Gaussian blur
    (kernel 21 at 224 px) is left out: at 32 px it would blur the whole image away."""
    return v2.Compose([
        v2.RandomResizedCrop(size, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.5, 0.5, 0.5, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
    ])


def augment_images(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """uint8 images (B, 3, H, W) → one random view of each (``image_views``), uint8
    (B, 3, size, size). torchvision draws from the global RNG and a batched call would give
    every image the same crop, so each image gets its own draw, seeded from ``generator``
    (the global RNG is left as it was)."""
    views = image_views(size)
    seeds = torch.randint(0, 2**62, (len(images),), generator=generator).tolist()
    out = []
    with torch.random.fork_rng(devices=[]):
        for image, seed in zip(images, seeds):
            torch.manual_seed(seed)
            out.append(views(image))
    return torch.stack(out)


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
