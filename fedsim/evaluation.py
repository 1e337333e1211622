"""Zero-shot clean accuracy, attack success rate and retrieval recall of a CLIP model."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


@torch.no_grad()
def encode_images(model, images: torch.Tensor, preprocess, batch_size: int = 500) -> torch.Tensor:
    model.eval()
    return torch.cat(
        [
            model.encode_image(preprocess(images[i : i + batch_size]), normalize=True)
            for i in range(0, len(images), batch_size)
        ]
    )


@torch.no_grad()
def zero_shot_classifier(
    model, tokenizer, classnames: Sequence[str], templates: Sequence[str]
) -> torch.Tensor:
    """(embed_dim, classes) weights: per class, the normalised mean of the normalised text
    embeddings of every template filled with the class name (prompt ensembling, Radford et
    al., ICML 2021, Sec. 3.1.4)."""
    model.eval()
    prompts = [t.format(c) for c in classnames for t in templates]
    emb = model.encode_text(tokenizer(prompts), normalize=True)
    emb = emb.view(len(classnames), len(templates), -1).mean(1)
    return torch.nn.functional.normalize(emb, dim=-1).t()


def predict(image_features: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    return (image_features @ classifier).argmax(1)


def clean_accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    return float((predictions == labels).float().mean())


def attack_success_rate(
    triggered_predictions: torch.Tensor, labels: torch.Tensor, target: int
) -> float:
    """Carlini & Terzis (ICLR 2022): share of triggered test images whose true class is not
    the target that are classified as the target."""
    keep = labels != target
    return float((triggered_predictions[keep] == target).float().mean())


@torch.no_grad()
def retrieval_recall(
    image_features: torch.Tensor, text_features: torch.Tensor, ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Image→text and text→image Recall@k for paired rows (row i of each is a pair): the share
    of queries whose own pair is among the k most similar candidates."""
    sim = image_features @ text_features.t()
    own = sim.diag().unsqueeze(1)
    # rank = number of candidates strictly more similar than the true pair
    i2t_rank = (sim > own).sum(1)
    t2i_rank = (sim.t() > own).sum(1)
    out = {}
    for k in ks:
        out[f"i2t_r{k}"] = float((i2t_rank < k).float().mean())
        out[f"t2i_r{k}"] = float((t2i_rank < k).float().mean())
    return out


def make_trigger_images(images: torch.Tensor, trigger: Callable) -> torch.Tensor:
    """uint8 images → triggered uint8 images, through the same float [0, 1] path as poisoning."""
    return (trigger(images.float() / 255.0) * 255.0).round().clamp(0, 255).to(torch.uint8)
