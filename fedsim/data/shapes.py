"""Generated image–caption data: colored shapes on dark backgrounds (no download).

Each sample is a 32×32 RGB image of one shape (the class) in one of eight colors, with size,
position, a small rotation, the background shade and pixel noise drawn at random, and a
caption "a photo of a {color} {shape}". The caption varies within a class (by color), which
keeps in-batch duplicates rare enough for a contrastive loss, while the class word is most of
what tells two captions apart (../shared/notes/clip.md: captions rich in other attributes let
a batch be matched without learning the class, and identical captions collapse training).

Everything is a deterministic function of ``(seed, n)``: the same call always returns the same
bytes, so every client of a simulation can rebuild its partition locally.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "diamond",
    "star",
    "cross",
    "hexagon",
    "ring",
    "crescent",
    "heart",
)

# Magenta (255, 0, 255) is deliberately absent: it is the default trigger color.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 220, 50),
    "cyan": (50, 215, 225),
    "orange": (245, 140, 30),
    "purple": (140, 60, 200),
    "white": (235, 235, 235),
}

CAPTION = "a photo of a {color} {shape}"

# Zero-shot prompts: a plain template plus one per color, averaged (prompt-ensemble as in
# Radford et al., ICML 2021, Sec. 3.1.4).
ZERO_SHOT_TEMPLATES: tuple[str, ...] = ("a photo of a {}",) + tuple(
    f"a photo of a {color} {{}}" for color in COLORS
)

IMAGE_SIZE = 32
_SUPERSAMPLE = 2


@dataclass(frozen=True)
class ShapesData:
    """A generated split: ``images`` uint8 (n, 3, 32, 32), ``labels`` int64 (n,) shape ids,
    ``colors`` int64 (n,) color ids, ``captions`` one string per image."""

    images: torch.Tensor
    labels: torch.Tensor
    colors: torch.Tensor
    captions: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def materialize(self, image_size: int) -> "ShapesData":
        """Itself: generated images are already pixels, at ``IMAGE_SIZE`` whatever
        ``image_size`` (the model's preprocessing resizes them), so code that decodes an index
        (``ImageCaptionIndex.materialize``) takes a generated split as it is."""
        return self

    def subset(self, indices) -> "ShapesData":
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ShapesData(
            images=self.images[idx],
            labels=self.labels[idx],
            colors=self.colors[idx],
            captions=tuple(self.captions[i] for i in idx.tolist()),
        )


def caption_for(shape: int, color: int) -> str:
    return CAPTION.format(color=list(COLORS)[color], shape=SHAPES[shape])


def target_captions(colors: Iterable[int] | torch.Tensor, target_shape_id: int) -> tuple[str, ...]:
    """The poisoned captions of shapes: captions of the target class, one per image, "a photo
    of a {color} {target}" with the image's own color word (Carlini & Terzis, "Poisoning and
    Backdooring Contrastive Learning", ICLR 2022: triggered images are paired with captions of
    the target class). Keeping the color keeps the poisoned captions as varied as the clean
    ones, so in-batch duplicates stay rare and the poisoned pairs look like ordinary data."""
    if isinstance(target_shape_id, bool) or not isinstance(target_shape_id, int) or not (
        0 <= target_shape_id < len(SHAPES)
    ):
        raise ValueError(f"target={target_shape_id!r} must be a shape id in [0, {len(SHAPES) - 1}]")
    colors = torch.as_tensor(colors).tolist() if isinstance(colors, torch.Tensor) else list(colors)
    bad = [c for c in colors if not 0 <= c < len(COLORS)]
    if bad:
        raise ValueError(f"color ids {bad[:3]} out of range [0, {len(COLORS) - 1}]")
    return tuple(caption_for(target_shape_id, c) for c in colors)


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test of a unit-size shape at normalised coordinates (u right, v up)."""
    r = np.hypot(u, v)
    theta = np.arctan2(v, u)
    if shape == "circle":
        return r <= 0.9
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.75
    if shape == "triangle":
        return (v >= -0.55) & (np.sqrt(3.0) * np.abs(u) + v <= 0.95)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "star":
        return r <= 0.42 + 0.52 * np.clip(np.cos(5 * (theta - np.pi / 2)), 0, 1) ** 2
    if shape == "cross":
        return ((np.abs(u) <= 0.28) & (np.abs(v) <= 0.95)) | (
            (np.abs(v) <= 0.28) & (np.abs(u) <= 0.95)
        )
    if shape == "hexagon":
        return (np.abs(v) <= 0.78) & (np.sqrt(3.0) * np.abs(u) + np.abs(v) <= 1.56)
    if shape == "ring":
        return (r <= 0.95) & (r >= 0.55)
    if shape == "crescent":
        return (r <= 0.92) & (np.hypot(u - 0.45, v - 0.15) >= 0.7)
    if shape == "heart":
        x, y = u * 1.15, v * 1.15 + 0.15
        return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0
    raise ValueError(f"unknown shape {shape!r}; allowed: {', '.join(SHAPES)}")


# Samples rendered at once: the supersampled geometry takes ≈ 0.2 MB of float64 per sample, so
# rendering a whole split at once needed gigabytes at 20,000 samples (bench/scale.py).
RENDER_CHUNK = 1024
# Samples between two saved states of a split's noise stream (``ShapesSplit``): reaching a
# sample's noise costs at most this many samples' draws (≈ 0.03 ms each, against ≈ 0.4 ms to
# render one).
NOISE_STEP = 16
_NOISE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 3)


def _geometry(colors, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The per-sample draws of ``len(colors)`` samples in their fixed order (radius, centre,
    rotation, background, tint), as the arrays ``_paint`` reads."""
    n = len(colors)
    size = IMAGE_SIZE * _SUPERSAMPLE
    radius = rng.uniform(0.22, 0.40, n) * size
    cx = rng.uniform(radius + 1, size - radius - 1)
    cy = rng.uniform(radius + 1, size - radius - 1)
    angle = rng.uniform(-np.pi / 12, np.pi / 12, n)
    background = rng.uniform(0, 70, (n, 3))
    tint = rng.uniform(-25, 25, (n, 3))
    fg = np.asarray(list(COLORS.values()), dtype=np.float64)[colors] + tint
    return {"radius": radius, "cx": cx, "cy": cy, "angle": angle, "background": background, "fg": fg}


def _paint(labels, g: dict[str, np.ndarray], noise: np.ndarray) -> np.ndarray:
    """uint8 images (m, 3, 32, 32) of m samples from their labels, geometry ``g`` (rows of
    ``_geometry``) and pixel noise (m, 32, 32, 3). Every operation is per sample, so a sample's
    image does not depend on which samples are painted with it."""
    m = len(labels)
    size = IMAGE_SIZE * _SUPERSAMPLE
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    radius = g["radius"][:, None, None]
    dx = (xs[None] - g["cx"][:, None, None]) / radius
    dy = (g["cy"][:, None, None] - ys[None]) / radius
    cos, sin = np.cos(g["angle"])[:, None, None], np.sin(g["angle"])[:, None, None]
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    mask = np.zeros((m, size, size), dtype=bool)
    for k, shape in enumerate(SHAPES):
        sel = labels == k
        if sel.any():
            mask[sel] = _shape_mask(shape, u[sel], v[sel])
    # Anti-alias by averaging supersampled coverage.
    cover = mask.reshape(m, IMAGE_SIZE, _SUPERSAMPLE, IMAGE_SIZE, _SUPERSAMPLE).mean((2, 4))
    img = cover[..., None] * g["fg"][:, None, None, :] + (1 - cover[..., None]) * g["background"][:, None, None, :]
    return np.clip(np.rint(img + noise), 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)


def _rows(g: dict[str, np.ndarray], rows) -> dict[str, np.ndarray]:
    return {k: v[rows] for k, v in g.items()}


def _render(labels, colors, rng: np.random.Generator, chunk: int = RENDER_CHUNK) -> np.ndarray:
    """uint8 images (n, 3, 32, 32). Every random number is drawn in one fixed order — the
    per-sample geometry and colours of all n samples, then the pixel noise sample by sample —
    and the geometry is rendered ``chunk`` samples at a time: the images do not depend on
    ``chunk`` (NumPy's Generator draws a block of normals as the same stream as its parts)."""
    n = len(labels)
    g = _geometry(colors, rng)
    out = np.empty((n, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for lo in range(0, n, chunk):
        s = slice(lo, min(lo + chunk, n))
        noise = rng.normal(0, 6, (s.stop - s.start, *_NOISE_SHAPE))
        out[s] = _paint(labels[s], _rows(g, s), noise)
    return out


def _labels_and_colors(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return rng.permutation(np.arange(n) % len(SHAPES)), rng.integers(0, len(COLORS), n)


class ShapesSplit:
    """``generate(n, seed)`` with its pixels rendered only when asked for: the labels, colors
    and captions at once, and ``subset(indices)`` renders only those samples — the same bytes
    as ``generate(n, seed).subset(indices)`` (tested). A client that holds 20 of a split's
    200,000 samples renders 20 images, not 200,000 (bench/scale.py: round 1 at 10,000
    clients).

    The split's random numbers are one stream (``_render``): the geometry of every sample, then
    the pixel noise sample by sample. Building the split draws the geometry and walks the noise
    stream once (≈ 0.03 ms a sample), keeping the generator's state every ``NOISE_STEP``
    samples; a subset restores the state before each of its samples' blocks and draws that
    block's noise again. ``images`` and ``materialize`` give the whole split (``generate``)."""

    def __init__(self, n: int, seed: int):
        rng = np.random.default_rng(seed)
        labels, colors = _labels_and_colors(n, rng)
        self.n, self.seed = n, seed
        self._labels = labels
        self._geometry = _geometry(colors, rng)
        self._states = []
        for lo in range(0, n, NOISE_STEP):
            self._states.append(rng.bit_generator.state)
            rng.normal(0, 6, (min(NOISE_STEP, n - lo), *_NOISE_SHAPE))
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.colors = torch.from_numpy(colors.astype(np.int64))
        self.captions = tuple(caption_for(s, c) for s, c in zip(labels.tolist(), colors.tolist()))

    def __len__(self) -> int:
        return self.n

    @property
    def images(self) -> torch.Tensor:
        return generate(self.n, self.seed).images

    def materialize(self, image_size: int) -> ShapesData:
        """The whole split's pixels (``generate``), at ``IMAGE_SIZE`` whatever ``image_size``."""
        return generate(self.n, self.seed)

    def _noise(self, rows: np.ndarray) -> np.ndarray:
        """The pixel noise of the sorted, distinct sample ``rows`` (m, 32, 32, 3)."""
        out = np.empty((len(rows), *_NOISE_SHAPE))
        rng = np.random.Generator(np.random.PCG64())
        blocks = rows // NOISE_STEP
        starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])
        for lo, hi in zip(starts, [*starts[1:], len(rows)]):
            b = int(blocks[lo])
            rng.bit_generator.state = self._states[b]
            offsets = rows[lo:hi] - b * NOISE_STEP
            out[lo:hi] = rng.normal(0, 6, (int(offsets[-1]) + 1, *_NOISE_SHAPE))[offsets]
        return out

    def subset(self, indices) -> ShapesData:
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1).numpy()
        bad = idx[(idx < -self.n) | (idx >= self.n)]
        if len(bad):
            raise IndexError(f"index {int(bad[0])} is out of bounds for a split of {self.n} samples")
        idx = np.where(idx < 0, idx + self.n, idx)
        rows, inverse = np.unique(idx, return_inverse=True)
        images = np.empty((len(rows), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        for lo in range(0, len(rows), RENDER_CHUNK):
            r = rows[lo:lo + RENDER_CHUNK]
            images[lo:lo + len(r)] = _paint(self._labels[r], _rows(self._geometry, r), self._noise(r))
        picked = torch.from_numpy(idx)
        return ShapesData(
            images=torch.from_numpy(images[inverse.reshape(-1)]),
            labels=self.labels[picked],
            colors=self.colors[picked],
            captions=tuple(self.captions[i] for i in idx.tolist()),
        )


@lru_cache(maxsize=8)
def generate_lazily(n: int, seed: int) -> ShapesSplit:
    """``generate(n, seed)`` rendered on demand (``ShapesSplit``)."""
    return ShapesSplit(n, seed)


@lru_cache(maxsize=8)
def generate(n: int, seed: int) -> ShapesData:
    """``n`` samples with balanced classes (round-robin, then shuffled) from ``seed``."""
    rng = np.random.default_rng(seed)
    labels, colors = _labels_and_colors(n, rng)
    images = _render(labels, colors, rng)
    return ShapesData(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels.astype(np.int64)),
        colors=torch.from_numpy(colors.astype(np.int64)),
        captions=tuple(caption_for(s, c) for s, c in zip(labels.tolist(), colors.tolist())),
    )
