"""CleanCLIP (Bansal, Singhi, Yang, Yin, Grover, Chang, "CleanCLIP: Mitigating Data Poisoning
Attacks in Multimodal Contrastive Learning", ICCV 2023): fine-tune a possibly poisoned CLIP on
clean image–caption pairs with the multimodal loss plus unimodal self-supervised terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedsim.models import Preprocess, tokenize
from fedsim.objectives.augment import augment_images, eda
from fedsim.training import clip_loss, train_epochs


def cleanclip_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    image_view: torch.Tensor,
    text_view: torch.Tensor,
    logit_scale: torch.Tensor,
    lambda1: float = 1.0,
    lambda2: float = 1.0,
) -> torch.Tensor:
    """CleanCLIP's loss (Bansal et al., ICCV 2023) on L2-normalised features (N, D):

        L = λ1 · L_CLIP(I, T) + λ2 · L_SS,   L_SS = ½ (L_I + L_T),
        L_I = −(1/N) Σ_i log softmax_j(s ⟨I_i, Ĩ_j⟩)_i,   L_T likewise with T and T̃,

    where I, T are the embeddings of the images and their captions, Ĩ, T̃ those of an
    augmented version of each (``image_view``, ``text_view``), s = ``logit_scale`` (already
    exponentiated) and L_CLIP the symmetric InfoNCE (``fedsim.training.clip_loss``). As in
    the paper's L_SS and its released code, each unimodal term is one-directional (an
    original against the augmented batch) and L_SS averages the two; λ1 = λ2 = 1 is the
    paper's setting."""
    labels = torch.arange(image.shape[0], device=image.device)
    l_image = F.cross_entropy(logit_scale * image @ image_view.t(), labels)
    l_text = F.cross_entropy(logit_scale * text @ text_view.t(), labels)
    return lambda1 * clip_loss(image, text, logit_scale) + lambda2 * (l_image + l_text) / 2


def cleanclip_finetune(
    model: torch.nn.Module,
    images: torch.Tensor,
    captions: tuple[str, ...],
    *,
    tokenizer,
    preprocess: Preprocess,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    lambda1: float,
    lambda2: float,
    generator: torch.Generator,
) -> float:
    """CleanCLIP fine-tuning (Bansal et al., ICCV 2023) of ``model`` in place on the clean
    pairs (uint8 ``images``, ``captions``): ``epochs`` epochs of AdamW on ``cleanclip_loss``,
    the augmented image a random view (``augment_images``, at the model's image size) and
    the augmented caption an EDA edit (``eda``), both drawn afresh for every batch. Returns
    the mean loss."""
    tokens = tokenize(tokenizer, captions)

    def batch_loss(model, idx, epoch):
        views = augment_images(images[idx], preprocess.image_size, generator)
        edited = tokenizer([eda(captions[i], generator) for i in idx.tolist()])
        image, text, scale = model(preprocess(images[idx]), tokens[idx])[:3]
        image_view, text_view = model(preprocess(views), edited)[:2]
        return cleanclip_loss(image, text, image_view, text_view, scale, lambda1, lambda2)

    return train_epochs(
        model, images, tokens, preprocess=preprocess, epochs=epochs, lr=lr, batch_size=batch_size,
        weight_decay=weight_decay, generator=generator, batch_loss=batch_loss,
    )
