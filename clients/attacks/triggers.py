"""Image triggers: small callables on float images (..., 3, H, W) in [0, 1] that return the
triggered images of the same shape, like a torchvision transform.

Every trigger is a deterministic function of its construction parameters (``seed`` included),
so the clients that poison and the server that measures the attack success rate rebuild the
same trigger from the same config. Poisoning and evaluation both apply a trigger through
``fedsim.evaluation.make_trigger_images`` (uint8 → float → trigger → uint8), so a trigger
only ever sees and returns [0, 1] floats.

The families are those of the CleanCLIP evaluation (Bansal et al., ICCV 2023): BadNet patches,
Blended, SIG and WaNet; ``split_patch`` gives the DBA pieces of a patch.
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
    Learning Model Supply Chain", 2017): overwrite a ``size`` × ``size`` square with a fixed
    pattern.

    ``pattern``: "solid" (every pixel ``color``), "noise" (i.i.d. uniform [0, 1] pixels drawn
    from ``seed``) or a (3, size, size) tensor in [0, 1] (e.g. a patch learned by BadCLIP).
    ``location``: "bottom_right", (y, x) of the top-left corner, or "random": a position per
    image, uniform over all positions where the patch fits, drawn from a generator seeded with
    ``seed`` afresh on every call — the k-th image of a call always gets the same position, so
    evaluation is reproducible (CleanCLIP's random-location patch draws them unseeded).
    ``rows``: paste only rows [r0, r1) of the patch (one DBA piece, see ``split_patch``)."""

    size: int = 4
    location: str | tuple[int, int] = "bottom_right"
    pattern: str | torch.Tensor = "solid"
    color: tuple[float, float, float] = MAGENTA
    seed: int = 0
    rows: tuple[int, int] | None = None
    patch: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self):
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"badnet size={self.size!r} must be a positive int")
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
        shape = (3, self.size, self.size)
        if isinstance(self.pattern, str):
            if self.pattern == "solid":
                patch = torch.tensor(color).view(3, 1, 1).expand(shape).clone()
            elif self.pattern == "noise":
                rng = np.random.default_rng([self.seed, 0])
                patch = torch.from_numpy(rng.random(shape).astype(np.float32))
            else:
                raise ValueError(
                    f"badnet pattern={self.pattern!r} is unknown; allowed: solid, noise or a tensor"
                )
        else:
            patch = _pattern_tensor(self.pattern, shape, "badnet")
        object.__setattr__(self, "patch", patch)
        if self.rows is not None:
            r0, r1 = self.rows
            if not 0 <= r0 < r1 <= self.size:
                raise ValueError(f"badnet rows={self.rows!r} must satisfy 0 <= r0 < r1 <= size={self.size}")
            object.__setattr__(self, "rows", (int(r0), int(r1)))

    def positions(self, n: int, height: int, width: int) -> list[tuple[int, int]]:
        """Top-left corner (y, x) of the patch for each of ``n`` images of one call."""
        if self.size > height or self.size > width:
            raise ValueError(f"badnet size={self.size} does not fit {height}×{width} images")
        if self.location == "bottom_right":
            return [(height - self.size, width - self.size)] * n
        if self.location == "random":
            rng = np.random.default_rng([self.seed, 1])
            ys = rng.integers(0, height - self.size + 1, n)
            xs = rng.integers(0, width - self.size + 1, n)
            return list(zip(ys.tolist(), xs.tolist()))
        y, x = self.location
        if y + self.size > height or x + self.size > width:
            raise ValueError(f"badnet location={self.location} puts the patch outside {height}×{width}")
        return [(y, x)] * n

    def paste(self, x: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
        """This trigger's geometry with another (3, size, size) ``patch``; differentiable in
        ``patch``, which is what BadCLIP's patch optimisation needs."""
        _check_images(x, "badnet")
        flat = x.reshape(-1, *x.shape[-3:]).clone()
        r0, r1 = self.rows or (0, self.size)
        piece = patch[:, r0:r1].to(flat)
        for i, (y, left) in enumerate(self.positions(len(flat), *flat.shape[-2:])):
            flat[i, :, y + r0 : y + r1, left : left + self.size] = piece
        return flat.reshape(x.shape)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.paste(x, self.patch)


def split_patch(trigger: BadNetPatch, parts: int = 4) -> list[BadNetPatch]:
    """DBA (Xie, Huang, Chen & Li, "DBA: Distributed Backdoor Attacks against Federated
    Learning", ICLR 2020): the global trigger split into ``parts`` local triggers, one per
    colluding client. Here the pieces are horizontal bands of the patch's rows (DBA's local
    triggers are bars of the global pattern): piece i covers rows [⌊i·size/parts⌋,
    ⌊(i+1)·size/parts⌋), so the pieces are disjoint and together are the full patch, which is
    what the attack success rate is measured with."""
    if not isinstance(trigger, BadNetPatch) or trigger.rows is not None:
        raise ValueError("split_patch needs a whole BadNetPatch (a patch trigger with rows=None)")
    if isinstance(parts, bool) or not isinstance(parts, int) or not 1 <= parts <= trigger.size:
        raise ValueError(f"split_patch parts={parts!r} must be an int in [1, size={trigger.size}]")
    bounds = [i * trigger.size // parts for i in range(parts + 1)]
    return [replace(trigger, rows=(a, b)) for a, b in zip(bounds, bounds[1:])]


@dataclass(frozen=True, eq=False)
class Blended:
    """Blended injection (Chen, Liu, Li, Lu & Song, "Targeted Backdoor Attacks on Deep Learning
    Systems Using Data Poisoning", 2017): x' = (1 − α)·x + α·p.

    ``pattern``: "noise" (i.i.d. uniform [0, 1] pixels of the image's size, drawn from
    ``seed``) or a (3, H, W) tensor in [0, 1]. α = 0.2 as in the CleanCLIP evaluation."""

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
                f"blended pattern is {tuple(self.pattern.shape[-2:])}, images are {height}×{width}"
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


TRIGGERS = {"badnet": BadNetPatch, "blended": Blended, "sig": SIG, "wanet": WaNet}


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
