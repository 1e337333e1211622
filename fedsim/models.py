"""One factory from a model name to (model, preprocess, tokenizer), as open_clip does.

The tiny CLIPs live as open_clip model configs in ``fedsim/model_configs/`` and are built
through open_clip itself, so any open_clip architecture name works the same way. Weights come
from a local checkpoint file or nowhere (a seeded random init): nothing is downloaded.
"""

from __future__ import annotations

import logging
import zipfile
from functools import lru_cache
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


class SimCLRModel(torch.nn.Module):
    """SimCLR's network (Chen et al., ICML 2020): a base encoder f — here the image tower of an
    open_clip model (``visual``) — and a projection head g, the paper's 2-layer MLP
    z = W₂ ReLU(W₁ h) on h = f(x), with W₁ of width d (the encoder's output size) and z of
    ``projection_dim``. ``forward`` gives z (what NT-Xent trains); ``encode_image`` gives h,
    the representation the evaluation and the attacks read (the head is discarded after
    training, as in the paper). It is the whole federated model: the text tower is not built."""

    def __init__(self, visual: torch.nn.Module, feature_dim: int, projection_dim: int):
        super().__init__()
        self.visual = visual
        self.head = torch.nn.Sequential(
            torch.nn.Linear(feature_dim, feature_dim), torch.nn.ReLU(),
            torch.nn.Linear(feature_dim, projection_dim),
        )

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        h = self.visual(images)
        return F.normalize(h, dim=-1) if normalize else h

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.visual(images))


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read safely or does not fit the architecture; the
    message names the file and the first mismatching keys."""


def check_name(name: str) -> None:
    """Raise ValueError unless ``name`` is a model fedsim can build: a tiny one of
    ``model_configs/`` (registered with open_clip above) or any open_clip architecture."""
    if name not in open_clip.list_models():
        raise ValueError(
            f"model.name={name!r} is unknown; allowed: {', '.join(TINY_MODELS)} or any open_clip "
            "architecture name"
        )


def _build(name: str, **kwargs):
    # open_clip logs a warning for every model built without pretrained weights: by design here.
    logging.getLogger().disabled, was = True, logging.getLogger().disabled
    try:
        return open_clip.create_model(name, pretrained=None, **kwargs)
    finally:
        logging.getLogger().disabled = was


@lru_cache(maxsize=8)
def _architecture(name: str) -> tuple[dict[str, tuple[int, ...]], int]:
    """(state-dict key → shape, image size) of architecture ``name``, from a model built on the
    meta device: no memory, no init, a fraction of a second even for a ViT-B-32."""
    check_name(name)
    with torch.device("meta"):
        model = _build(name, device="meta")
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}, _image_size(model)


def _image_size(model) -> int:
    size = model.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def model_image_size(name: str) -> int:
    """The side of the square images the model ``name`` takes."""
    return _architecture(name)[1]


# open_clip's weight file names (its Hugging Face hub files), safetensors first.
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def checkpoint_file(path: str | Path) -> Path:
    """The weight file ``path`` names: the file itself, or in a folder open_clip's file
    (``OPEN_CLIP_FILES``, safetensors first) directly inside it or in a local Hugging Face hub
    cache of one model (``models--org--name/snapshots/<rev>/``; the newest snapshot). Raises
    ``CheckpointError`` naming what was looked for."""
    path = Path(path)
    if not path.is_dir():
        return path
    for name in OPEN_CLIP_FILES:
        if (path / name).is_file():
            return path / name
        snapshots = sorted((p for p in path.glob(f"snapshots/*/{name}") if p.is_file()),
                           key=lambda p: p.stat().st_mtime)
        if snapshots:
            return snapshots[-1]
    raise CheckpointError(f"{path} is a folder without {' or '.join(OPEN_CLIP_FILES)} (directly inside "
                          "or in snapshots/<revision>/ of a Hugging Face cache folder)")


def _read_safetensors(path: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a safetensors file ({type(e).__name__}: {e})") from None


def read_checkpoint(path: str | Path, *, mmap: bool = False) -> dict[str, torch.Tensor]:
    """The state dict in the file ``path``: what ``torch.save(model.state_dict(), path)``
    wrote, or an open_clip training checkpoint (its ``"state_dict"``, with DDP's "module."
    prefix removed, as open_clip's own ``load_state_dict`` does), or a ``.safetensors`` file
    (read by the safetensors package: tensors only, no pickle). A folder is read as
    ``checkpoint_file`` finds in it (open_clip's weights in a local Hugging Face cache).

    Loaded with ``torch.load(weights_only=True)`` here rather than through open_clip's
    ``load_checkpoint``: open_clip 3.3 passes weights_only=True too, but retries a load that
    raised TypeError with torch.load's default, which ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``
    turns into a full unpickling; a checkpoint is data from elsewhere, so whether it may run
    code must not depend on the environment. ``mmap`` maps the tensors without reading them
    (a key and shape check of a large file costs next to nothing)."""
    path = str(checkpoint_file(path))
    if path.endswith(".safetensors"):
        checkpoint = _read_safetensors(path)
        return {k.removeprefix("module."): v for k, v in checkpoint.items()} if checkpoint and all(
            k.startswith("module.") for k in checkpoint) else checkpoint
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True,
                                mmap=mmap and zipfile.is_zipfile(path))
    except Exception as e:  # what an arbitrary file makes torch.load raise is not one type
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [""]
        # torch's weights-only refusal is a page of advice; its one informative line names the global
        reason = next((line.split("error: ", 1)[1].split(". ")[0] for line in lines
                       if "WeightsUnpickler error: " in line), lines[0])
        raise CheckpointError(
            f"{path} is not a checkpoint torch.load(weights_only=True) can read ({type(e).__name__}: "
            f"{reason}); allowed: tensors in plain containers, as torch.save(model.state_dict(), "
            "path) writes them"
        ) from None
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in checkpoint.items()
    ):
        raise CheckpointError(f"{path} holds a {type(checkpoint).__name__}, not a state dict "
                              "(a dict of names to tensors)")
    if checkpoint and all(k.startswith("module.") for k in checkpoint):
        checkpoint = {k.removeprefix("module."): v for k, v in checkpoint.items()}
    return checkpoint


def _check_fit(name: str, path, expected: dict[str, tuple[int, ...]], state: dict[str, torch.Tensor]) -> None:
    """Raise ``CheckpointError`` naming the first keys where ``state`` (read from ``path``)
    differs from the architecture's (key → shape) ``expected``: missing, unexpected, shape.
    A BatchNorm's ``num_batches_tracked`` may be missing, as ``load_state_dict`` allows (it
    counts batches seen in training mode; only BatchNorm with momentum=None reads it)."""
    missing = [k for k in expected if k not in state and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: {tuple(state[k].shape)} in the file, {expected[k]} in the model"
              for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    problems = [f"{what} {', '.join(keys[:3])}{', …' if len(keys) > 3 else ''} ({len(keys)} in all)"
                for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)) if keys]
    if problems:
        raise CheckpointError(f"{path} does not fit model.name={name!r}: {'; '.join(problems)}")


def check_checkpoint(name: str, path: str | Path) -> None:
    """Raise ``CheckpointError`` unless the file ``path`` holds a state dict with exactly the
    keys and shapes of architecture ``name``."""
    _check_fit(name, path, _architecture(name)[0], read_checkpoint(path, mmap=True))


def create_model_and_transforms(name: str, *, seed: int = 0, pretrained: str | Path | None = None,
                                projection_dim: int | None = None):
    """``name`` → (open_clip CLIP model, Preprocess, tokenizer): the weights of the checkpoint
    file ``pretrained`` (``read_checkpoint``; every key and shape must fit), else a random init
    seeded with ``seed``. With ``projection_dim``, the model is that CLIP's image tower with a
    SimCLR projection head of that output size (``SimCLRModel``; the head seeded with ``seed``
    too, the tower's weights the checkpoint's where one is given)."""
    check_name(name)
    torch.manual_seed(seed)
    model = _build(name)
    if pretrained is not None:
        state = read_checkpoint(pretrained)
        _check_fit(name, pretrained, {k: tuple(v.shape) for k, v in model.state_dict().items()}, state)
        model.load_state_dict(state, strict=True)
    preprocess, tokenizer = Preprocess(_image_size(model)), open_clip.get_tokenizer(name)
    if projection_dim is not None:
        # every open_clip image tower ends in the joint embedding space, of embed_dim
        model = SimCLRModel(model.visual, open_clip.get_model_config(name)["embed_dim"], projection_dim)
    return model, preprocess, tokenizer


def tokenize(tokenizer, texts) -> torch.Tensor:
    """Tokenise each distinct text once (captions repeat a lot) and index the result."""
    distinct = sorted(set(texts))
    where = {t: i for i, t in enumerate(distinct)}
    return tokenizer(distinct)[torch.tensor([where[t] for t in texts], dtype=torch.long)]
