"""One factory from a model name to (model, preprocess, tokenizer), as open_clip does.

The tiny CLIPs live as open_clip model configs in ``fedsim/model_configs/`` and are built
through open_clip itself, so any open_clip architecture name works the same way (without
pretrained weights: nothing is downloaded).
"""

from __future__ import annotations

import logging
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
open_clip.add_model_config(MODEL_CONFIG_DIR)

TINY_MODELS: tuple[str, ...] = tuple(sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json")))


class Preprocess:
    """uint8 or [0, 1] float images (B, 3, H, W) → normalised model input at the model's
    resolution (OpenAI CLIP mean/std, bilinear resize only when sizes differ)."""

    def __init__(self, image_size: int):
        self.image_size = image_size
        self.mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", align_corners=False)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


def create_model_and_transforms(name: str, *, seed: int = 0):
    """``name`` → (open_clip CLIP model with seeded random init, Preprocess, tokenizer)."""
    available = open_clip.list_models()
    if name not in available:
        raise ValueError(
            f"model.name={name!r} is not an open_clip model config; tiny ones: "
            f"{', '.join(TINY_MODELS)}"
        )
    torch.manual_seed(seed)
    # open_clip logs a warning for every model built without pretrained weights: by design here.
    logging.getLogger().disabled, was = True, logging.getLogger().disabled
    try:
        model = open_clip.create_model(name, pretrained=None)
    finally:
        logging.getLogger().disabled = was
    image_size = model.visual.image_size
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else image_size
    return model, Preprocess(int(image_size)), open_clip.get_tokenizer(name)


def tokenize(tokenizer, texts) -> torch.Tensor:
    """Tokenise each distinct text once (captions repeat a lot) and index the result."""
    distinct = sorted(set(texts))
    where = {t: i for i, t in enumerate(distinct)}
    return tokenizer(distinct)[torch.tensor([where[t] for t in texts], dtype=torch.long)]
