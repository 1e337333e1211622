"""Image triggers: small callables on float images (..., 3, H, W) in [0, 1] that return the
triggered images of the same shape, like a torchvision transform.

Every trigger is a deterministic function of its construction parameters (``seed`` included),
so the clients that poison and the server that measures the attack success rate rebuild the
same trigger from the same config. Poisoning and evaluation both apply a trigger through
``fedsim.evaluation.make_trigger_images`` (uint8 → float → trigger → uint8), so a trigger
only ever sees and returns [0, 1] floats.

The families are those of the CleanCLIP evaluation (Bansal et al., ICCV 2023): BadNet patches,
Blended, SIG and WaNet; ``split_patch`` gives the DBA pieces of a patch; CTRL's frequency-domain
trigger (Li et al., ICCV 2023) is the one designed against self-supervised (SimCLR) training.

Every trigger is defined for any image size: a BadNet patch's size is in pixels or a fraction
of the shorter side; Blended's noise, SIG's sinusoid (f periods across the width) and WaNet's
warping field (upsampled to H × W) are drawn at the image's size; CTRL needs H and W to be
multiples of its DCT window (32 px by default: 32 and 224 both are). Only a pattern given as
explicit pixels has one size, and a ``ValueError`` says so when the images have another.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

# Magenta: absent from the data's colors (fedsim.data.shapes.COLORS), so a solid patch is an
# unambiguous feature.
MAGENTA = (1.0, 0.0, 1.0)
LOCATIONS = ("bottom_right", "random")


def _check_images(x: torch.Tensor, name: str) -> None:
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"{name} expects images (..., 3, H, W), got shape {tuple(x.shape)}")


def _check_seed(seed, name: str) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"{name} seed={seed!r} must be an int >= 0")


def _pattern_tensor(value, shape: tuple[int, ...], name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32).detach().clone()
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} pattern must have shape {shape}, got {tuple(t.shape)}")
    if t.numel() and (t.min() < 0 or t.max() > 1):
        raise ValueError(f"{name} pattern pixels must lie in [0, 1]")
    return t


@dataclass(frozen=True, eq=False)
class BadNetPatch:
    """BadNets (Gu, Dolan-Gavitt & Garg, "BadNets: Identifying Vulnerabilities in the Machine
    Learning Model Supply Chain", 2017): overwrite a square patch of s × s pixels with a fixed
    pattern.

    ``size``: s in pixels (an int ≥ 1), or a fraction of the image's shorter side (a float in
    (0, 1)): s = max(1, ⌊size · min(H, W) + 1/2⌋), the fraction rounded half up, so that one
    config fits a 32-px and a 224-px model alike (0.125: 4 px and 28 px). ``resolve(H, W)``
    gives the same trigger in pixels.
    ``pattern``: "solid" (every pixel ``color``), "noise" (i.i.d. uniform [0, 1] pixels drawn
    from ``seed``) or a (3, s, s) tensor in [0, 1] (e.g. a patch learned by BadCLIP): given as
    pixels, it is never resized — with a fractional ``size`` the images must be of a size at
    which the fraction gives its s (a ``ValueError`` otherwise).
    ``location``: "bottom_right", (y, x) of the top-left corner, or "random": a position per
    image, uniform over all positions where the patch fits, drawn from a generator seeded with
    ``seed`` afresh on every call — the k-th image of a call always gets the same position, so
    evaluation is reproducible (CleanCLIP's random-location patch draws them unseeded).
    ``rows``: paste only rows [r0, r1) of a patch of a pixel ``size`` (one DBA piece, see
    ``split_patch``).
    ``patch``: the (3, s, s) pixels; None for a fractional solid or noise patch until
    ``resolve`` fixes s."""

    size: int | float = 4
    location: str | tuple[int, int] = "bottom_right"
    pattern: str | torch.Tensor = "solid"
    color: tuple[float, float, float] = MAGENTA
    seed: int = 0
    rows: tuple[int, int] | None = None
    patch: torch.Tensor | None = field(init=False, repr=False)

    def __post_init__(self):
        pixels = isinstance(self.size, int) and not isinstance(self.size, bool) and self.size >= 1
        if not pixels and not (isinstance(self.size, float) and 0.0 < self.size < 1.0):
            raise ValueError(
                f"badnet size={self.size!r} must be a positive int (pixels) or a float in (0, 1) "
                "(a fraction of the image's shorter side)"
            )
        _check_seed(self.seed, "badnet")
        if isinstance(self.location, (list, tuple)):
            if len(self.location) != 2 or not all(isinstance(v, int) and v >= 0 for v in self.location):
                raise ValueError(f"badnet location={self.location!r} must be (y, x) with ints >= 0")
            object.__setattr__(self, "location", tuple(self.location))
        elif self.location not in LOCATIONS:
            raise ValueError(
                f"badnet location={self.location!r} is unknown; allowed: {', '.join(LOCATIONS)} or (y, x)"
            )
        try:
            color = tuple(float(c) for c in self.color)
        except (TypeError, ValueError):
            color = ()
        if len(color) != 3 or not all(0.0 <= c <= 1.0 for c in color):
            raise ValueError(f"badnet color={self.color!r} must be 3 values in [0, 1]")
        object.__setattr__(self, "color", color)
        if isinstance(self.pattern, str):
            if self.pattern not in ("solid", "noise"):
                raise ValueError(
                    f"badnet pattern={self.pattern!r} is unknown; allowed: solid, noise or a tensor"
                )
            patch = self._drawn(self.size) if pixels else None
        else:
            given = torch.as_tensor(self.pattern)
            side = self.size if pixels else (given.shape[-1] if given.dim() else 0)
            patch = _pattern_tensor(self.pattern, (3, side, side), "badnet")
        object.__setattr__(self, "patch", patch)
        if self.rows is not None:
            r0, r1 = self.rows
            if not pixels:
                raise ValueError(f"badnet rows={self.rows!r} need a size in pixels, not size={self.size}")
            if not 0 <= r0 < r1 <= self.size:
                raise ValueError(f"badnet rows={self.rows!r} must satisfy 0 <= r0 < r1 <= size={self.size}")
            object.__setattr__(self, "rows", (int(r0), int(r1)))

    def _drawn(self, side: int) -> torch.Tensor:
        """The (3, side, side) "solid" or "noise" pixels."""
        if self.pattern == "solid":
            return torch.tensor(self.color).view(3, 1, 1).expand(3, side, side).clone()
        rng = np.random.default_rng([self.seed, 0])
        return torch.from_numpy(rng.random((3, side, side)).astype(np.float32))

    def resolve(self, height: int, width: int) -> BadNetPatch:
        """This trigger on ``height`` × ``width`` images, with ``size`` in pixels (itself when
        it already is); raises ``ValueError`` when the patch does not fit them."""
        if isinstance(self.size, int):
            if self.size > height or self.size > width:
                raise ValueError(
                    f"badnet size={self.size} does not fit {height}×{width} images; allowed: an int "
                    f"in [1, {min(height, width)}] (pixels) or a float in (0, 1) (a fraction of the "
                    "shorter side)"
                )
            return self
        side = max(1, int(self.size * min(height, width) + 0.5))
        if isinstance(self.pattern, str):
            return replace(self, size=side)
        if self.patch.shape[-1] != side:
            raise ValueError(
                f"badnet size={self.size} is {side} px on {height}×{width} images, but the pattern "
                f"is given as {self.patch.shape[-1]}×{self.patch.shape[-1]} pixels (patterns are "
                f"not resized); give size = {self.patch.shape[-1]} (pixels) or a pattern of {side} px"
            )
        return replace(self, size=side, pattern=self.patch)

    def positions(self, n: int, height: int, width: int) -> list[tuple[int, int]]:
        """Top-left corner (y, x) of the patch for each of ``n`` images of one call."""
        size = self.resolve(height, width).size
        if self.location == "bottom_right":
            return [(height - size, width - size)] * n
        if self.location == "random":
            rng = np.random.default_rng([self.seed, 1])
            ys = rng.integers(0, height - size + 1, n)
            xs = rng.integers(0, width - size + 1, n)
            return list(zip(ys.tolist(), xs.tolist()))
        y, x = self.location
        if y + size > height or x + size > width:
            raise ValueError(f"badnet location={self.location} puts the patch outside {height}×{width}")
        return [(y, x)] * n

    def paste(self, x: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
        """This trigger's geometry with another (3, s, s) ``patch``; differentiable in
        ``patch``, which is what BadCLIP's patch optimisation needs."""
        _check_images(x, "badnet")
        flat = x.reshape(-1, *x.shape[-3:]).clone()
        size = self.resolve(*flat.shape[-2:]).size
        r0, r1 = self.rows or (0, size)
        piece = patch[:, r0:r1].to(flat)
        for i, (y, left) in enumerate(self.positions(len(flat), *flat.shape[-2:])):
            flat[i, :, y + r0 : y + r1, left : left + size] = piece
        return flat.reshape(x.shape)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, "badnet")
        resolved = self.resolve(*x.shape[-2:])
        return resolved.paste(x, resolved.patch)


def split_patch(trigger: BadNetPatch, parts: int = 4) -> list[BadNetPatch]:
    """DBA (Xie, Huang, Chen & Li, "DBA: Distributed Backdoor Attacks against Federated
    Learning", ICLR 2020): the global trigger split into ``parts`` local triggers, one per
    colluding client. Here the pieces are horizontal bands of the patch's rows (DBA's local
    triggers are bars of the global pattern): piece i covers rows [⌊i·size/parts⌋,
    ⌊(i+1)·size/parts⌋), so the pieces are disjoint and together are the full patch, which is
    what the attack success rate is measured with."""
    if not isinstance(trigger, BadNetPatch) or trigger.rows is not None:
        raise ValueError("split_patch needs a whole BadNetPatch (a patch trigger with rows=None)")
    if isinstance(trigger.size, float):
        raise ValueError(f"split_patch needs a patch size in pixels, not size={trigger.size}; "
                         "resolve the trigger at the images' size first (trigger.resolve(H, W))")
    if isinstance(parts, bool) or not isinstance(parts, int) or not 1 <= parts <= trigger.size:
        raise ValueError(f"split_patch parts={parts!r} must be an int in [1, size={trigger.size}]")
    bounds = [i * trigger.size // parts for i in range(parts + 1)]
    return [replace(trigger, rows=(a, b)) for a, b in zip(bounds, bounds[1:])]


@dataclass(frozen=True, eq=False)
class Blended:
    """Blended injection (Chen, Liu, Li, Lu & Song, "Targeted Backdoor Attacks on Deep Learning
    Systems Using Data Poisoning", 2017): x' = (1 − α)·x + α·p.

    ``pattern``: "noise" (i.i.d. uniform [0, 1] pixels of the image's size, drawn from
    ``seed``, so any size works) or a (3, H, W) tensor in [0, 1], for H × W images only (it is
    not resized). α = 0.2 as in the CleanCLIP evaluation."""

    alpha: float = 0.2
    pattern: str | torch.Tensor = "noise"
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise ValueError(f"blended alpha={self.alpha!r} must lie in [0, 1]")
        _check_seed(self.seed, "blended")
        if isinstance(self.pattern, str):
            if self.pattern != "noise":
                raise ValueError(f"blended pattern={self.pattern!r} is unknown; allowed: noise or a tensor")
        else:
            t = torch.as_tensor(self.pattern)
            if t.dim() != 3 or t.shape[0] != 3:
                raise ValueError(f"blended pattern must have shape (3, H, W), got {tuple(t.shape)}")
            object.__setattr__(self, "pattern", _pattern_tensor(t, tuple(t.shape), "blended"))

    def pattern_for(self, height: int, width: int) -> torch.Tensor:
        if isinstance(self.pattern, str):
            rng = np.random.default_rng([self.seed, 0])
            return torch.from_numpy(rng.random((3, height, width)).astype(np.float32))
        if self.pattern.shape[-2:] != (height, width):
            raise ValueError(
                f"blended pattern is {tuple(self.pattern.shape[-2:])}, images are {height}×{width}; "
                "a pattern given as pixels is not resized: give one of the images' size, or "
                "pattern = \"noise\" (drawn at any size)"
            )
        return self.pattern

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, "blended")
        p = self.pattern_for(*x.shape[-2:]).to(x)
        return (1 - self.alpha) * x + self.alpha * p


@dataclass(frozen=True, eq=False)
class SIG:
    """SIG (Barni, Kallas & Tondi, "A New Backdoor Attack in CNNs by Training Set Corruption
    without Label Poisoning", ICIP 2019): add the horizontal sinusoid
    v(i, j) = Δ·sin(2π·j·f / W) (column j = 0…W−1, same for every row and channel) and clip to
    [0, 1]. Δ = 20/255, f = 6 as in the paper's training signal (Δ = 20 on a 0–255 scale)."""

    delta: float = 20 / 255
    frequency: float = 6

    def __post_init__(self):
        if not 0.0 < float(self.delta) <= 1.0:
            raise ValueError(f"sig delta={self.delta!r} must lie in (0, 1]")
        if float(self.frequency) <= 0:
            raise ValueError(f"sig frequency={self.frequency!r} must be > 0")

    def signal(self, width: int) -> torch.Tensor:
        j = torch.arange(width, dtype=torch.float64)
        return (self.delta * torch.sin(2 * torch.pi * j * self.frequency / width)).float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, "sig")
        return (x + self.signal(x.shape[-1]).to(x)).clamp(0, 1)


@dataclass(frozen=True, eq=False)
class WaNet:
    """WaNet (Nguyen & Tran, "WaNet – Imperceptible Warping-based Backdoor Attack", ICLR 2021):
    resample the image along a smooth random warping field.

    A k × k × 2 field P ~ U[−1, 1] (from ``seed``) is normalised to P / mean|P|, upsampled
    bicubically to H × W (M, align_corners=True), and the sampling grid is
    clip((identity + s·M / H) · grid_rescale, −1, 1), applied with bilinear ``grid_sample``
    (align_corners=True, so s = 0 is the identity). k = 4, s = 0.5, grid_rescale = 1 as in the
    paper and its code.

    Noise ("cross") mode: ``cross_ratio`` noise samples per backdoor sample (2 in the paper:
    ρ_n = 0.2 for ρ_a = 0.1) are warped with the grid plus a random per-sample perturbation
    (U[−1, 1] per coordinate) / H, clipped to [−1, 1], and keep their clean label — here,
    their own caption (``clients.attacks.poison`` draws them). They teach the model that only
    the exact warp is the trigger. ``cross_ratio = 0`` is the variant without noise mode."""

    k: int = 4
    s: float = 0.5
    grid_rescale: float = 1.0
    cross_ratio: float = 2.0
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 2:
            raise ValueError(f"wanet k={self.k!r} must be an int >= 2")
        if float(self.s) < 0:
            raise ValueError(f"wanet s={self.s!r} must be >= 0")
        if float(self.grid_rescale) <= 0:
            raise ValueError(f"wanet grid_rescale={self.grid_rescale!r} must be > 0")
        if float(self.cross_ratio) < 0:
            raise ValueError(f"wanet cross_ratio={self.cross_ratio!r} must be >= 0")
        _check_seed(self.seed, "wanet")

    def grid(self, height: int, width: int) -> torch.Tensor:
        """(1, H, W, 2) sampling grid, (x, y) in [−1, 1] as ``grid_sample`` expects."""
        g = torch.Generator().manual_seed(self.seed)
        field_ = torch.rand(1, 2, self.k, self.k, generator=g) * 2 - 1
        field_ = field_ / field_.abs().mean()
        warp = F.interpolate(field_, size=(height, width), mode="bicubic", align_corners=True)
        ys, xs = torch.meshgrid(
            torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij"
        )
        identity = torch.stack((xs, ys), dim=-1).unsqueeze(0)
        grid = (identity + self.s * warp.permute(0, 2, 3, 1) / height) * self.grid_rescale
        return grid.clamp(-1, 1)

    def cross_grid(self, n: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
        """(n, H, W, 2) noise-mode grids: clip(grid + (U[−1, 1]) / H, −1, 1), one draw per sample."""
        noise = torch.rand(n, height, width, 2, generator=generator) * 2 - 1
        return (self.grid(height, width) + noise / height).clamp(-1, 1)

    @staticmethod
    def _sample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        _check_images(x, "wanet")
        flat = x.reshape(-1, *x.shape[-3:])
        out = F.grid_sample(flat, grid.to(flat).expand(len(flat), -1, -1, -1), mode="bilinear", align_corners=True)
        return out.reshape(x.shape)

    def cross(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The noise-mode images of ``x`` (..., 3, H, W): each warped with its own noisy grid."""
        n = x.reshape(-1, *x.shape[-3:]).shape[0]
        return self._sample(x, self.cross_grid(n, *x.shape[-2:], generator))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._sample(x, self.grid(*x.shape[-2:]))


# RGB → YUV (BT.601 analogue YUV, the matrix of kornia.color.rgb_to_yuv that CTRL's code calls)
_YUV = torch.tensor([[0.299, 0.587, 0.114], [-0.147, -0.289, 0.436], [0.615, -0.515, -0.100]],
                    dtype=torch.float64)


def dct_matrix(n: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix C (n × n, float64): C[k, i] = a_k cos(π (2i + 1) k / 2n),
    a_0 = √(1/n), a_k = √(2/n); the 2-D DCT of a block X is C X Cᵀ, its inverse Cᵀ Y C
    (scipy's ``dctn(norm="ortho")``)."""
    k = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    i = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    c = torch.cos(torch.pi * (2 * i + 1) * k / (2 * n)) * (2.0 / n) ** 0.5
    c[0] /= 2**0.5
    return c


@dataclass(frozen=True, eq=False)
class CTRL:
    """CTRL (Li, Pang, Xi, Du, Ji, Yao & Wang, "An Embarrassingly Simple Backdoor Attack on
    Self-supervised Learning", ICCV 2023): a trigger in the frequency domain of the chroma
    channels, which survives SimCLR's crops and colour jitter. As their released code
    (``utils/frequency.py``, ``Poison_Frequency``) computes it: convert RGB to YUV (BT.601,
    kornia's matrix), split each image into ``window`` × ``window`` blocks, take each block's
    orthonormal 2-D DCT-II in the ``channels`` (1, 2 = U and V), add ``magnitude`` to the
    coefficients at ``positions`` (row, column) of every block, invert the DCT, convert back to
    RGB and clamp to [0, 1]. Defaults as their CIFAR-10 run: window 32 (one block for a 32-px
    image), positions (15, 15) and (31, 31) — a mid and the highest frequency —, magnitude 100
    on the 0–255 scale, i.e. 100/255 here (the transforms are linear, so the scale carries
    over). fedsim's one change: the way back to RGB is the exact inverse of the YUV matrix
    (kornia's ``yuv_to_rgb`` uses rounded coefficients, so its round trip moves every pixel a
    little); so only the chosen coefficients of the chosen channels change, clamping aside."""

    magnitude: float = 100 / 255
    window: int = 32
    positions: tuple[tuple[int, int], ...] = ((15, 15), (31, 31))
    channels: tuple[int, ...] = (1, 2)

    def __post_init__(self):
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"ctrl window={self.window!r} must be an int >= 1")
        if not float(self.magnitude) > 0:
            raise ValueError(f"ctrl magnitude={self.magnitude!r} must be > 0 (on [0, 1] pixels: 100/255 "
                             "is the paper's 100)")
        try:
            positions = tuple((int(r), int(c)) for r, c in self.positions)
        except (TypeError, ValueError):
            positions = ()
        if not positions or not all(0 <= v < self.window for p in positions for v in p):
            raise ValueError(f"ctrl positions={self.positions!r} must be (row, column) pairs in "
                             f"[0, window={self.window})")
        channels = tuple(self.channels) if isinstance(self.channels, (list, tuple)) else ()
        if not channels or not all(c in (0, 1, 2) for c in channels):
            raise ValueError(f"ctrl channels={self.channels!r} must be YUV channels among 0 (Y), 1 (U), 2 (V)")
        object.__setattr__(self, "positions", positions)
        object.__setattr__(self, "channels", channels)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, "ctrl")
        h, w, n = x.shape[-2], x.shape[-1], self.window
        if h % n or w % n:
            raise ValueError(f"ctrl window={n} does not tile {h}×{w} images; allowed: a window "
                             f"that divides both sides (e.g. {n} for images whose sides are multiples of {n})")
        flat = x.reshape(-1, 3, h, w).double()
        yuv = torch.einsum("ij,bjhw->bihw", _YUV, flat)
        c = dct_matrix(n)
        # (b, ch, H/n, n, W/n, n) blocks; the DCT acts on each block's two n-axes
        blocks = yuv.reshape(-1, 3, h // n, n, w // n, n)
        coef = torch.einsum("kr,bcirjs,ls->bcikjl", c, blocks, c)
        for ch in self.channels:
            for r, col in self.positions:
                coef[:, ch, :, r, :, col] += float(self.magnitude)
        yuv = torch.einsum("kr,bcikjl,ls->bcirjs", c, coef, c).reshape(-1, 3, h, w)
        rgb = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(_YUV), yuv)
        return rgb.clamp(0, 1).to(x.dtype).reshape(x.shape)


TRIGGERS = {"badnet": BadNetPatch, "blended": Blended, "sig": SIG, "wanet": WaNet, "ctrl": CTRL}


def make_trigger(name: str, **params):
    """The one factory from a config's trigger name and parameters to a trigger."""
    if name not in TRIGGERS:
        raise ValueError(f"trigger {name!r} is unknown; allowed: {', '.join(TRIGGERS)}")
    cls = TRIGGERS[name]
    allowed = [p for p, v in inspect.signature(cls).parameters.items() if p != "rows"]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"trigger {name!r} has no parameter {', '.join(unknown)}; allowed: {', '.join(allowed)}"
        )
    return cls(**params)
