"""Byzantine (untargeted) attacks on updates, in the server-side adversary form.

Each attack is a pure function ``fn(honest (m, d), n_malicious, **params) -> (n_malicious, d)``
that crafts the malicious updates of a round from the honest ones; ``sign_flip`` alone works on
the attackers' own updates, ``fn(own (k, d), **params) -> (k, d)``. The omniscient attacks (LIE,
IPM, MinMax, MinSum, Fang) need the honest updates of the round, which a real attacker can only
estimate (e.g. from its own clean updates); the simulation gives them exactly, through the
strategy's adversary hook (``strategies.robust_strategy.Adversary``), which sees the honest
replies before aggregation and rewrites the malicious rows — the strongest, full-knowledge
threat model of the papers. ``make_adversary`` turns a config into such a hook.

Standard deviations are the unbiased sample ones (``torch.std``, as in the papers' code).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import torch

PERTURBATIONS = ("std", "unit", "sign")


def _check(honest: torch.Tensor, n_malicious: int, name: str, min_honest: int) -> None:
    if honest.dim() != 2:
        raise ValueError(f"{name} expects honest updates (m, d), got shape {tuple(honest.shape)}")
    if len(honest) < min_honest:
        raise ValueError(f"{name} needs at least {min_honest} honest updates, got {len(honest)}")
    if isinstance(n_malicious, bool) or not isinstance(n_malicious, int) or n_malicious < 1:
        raise ValueError(f"{name} n_malicious={n_malicious!r} must be an int >= 1")


def _number(value, name: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r} must be a finite number")
    if positive and value <= 0:
        raise ValueError(f"{name}={value!r} must be > 0")
    return float(value)


def sign_flip(own: torch.Tensor, *, scale: float = 1.0) -> torch.Tensor:
    """Sign flipping (Li, Xu, Chen, Giannakis & Ling, "RSA: Byzantine-Robust Stochastic
    Aggregation Methods for Distributed Learning from Heterogeneous Datasets", AAAI 2019): each
    attacker sends −scale · its own honest update. It needs no knowledge of the others, so it
    works on the attackers' own rows ``own`` (k, d)."""
    return -_number(scale, "scale", positive=True) * own


def gaussian_noise(
    honest: torch.Tensor, n_malicious: int, *, sigma: float = 1.0, generator: torch.Generator
) -> torch.Tensor:
    """Gaussian attack (Blanchard, El Mhamdi, Guerraoui & Stainer, "Machine Learning with
    Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017; Fang et al., USENIX
    Security 2020): each attacker sends an independent N(0, σ²·I) vector. Only the dimension d
    is taken from ``honest``."""
    _check(honest, n_malicious, "gaussian_noise", 0)
    sigma = _number(sigma, "sigma", positive=True)
    noise = torch.randn(n_malicious, honest.shape[1], generator=generator, dtype=torch.float64)
    return (sigma * noise).to(honest.dtype)


def lie_z(n: int, n_malicious: int) -> float:
    """z of "A Little Is Enough" for n clients of which ``n_malicious`` attack: with
    s = ⌊n/2 + 1⌋ − n_malicious (honest clients the attackers must win over for a majority),
    z = Φ⁻¹((n − s)/n), the inverse standard normal CDF (``scipy.stats.norm.ppf``; not the CDF,
    a known slip in some reimplementations)."""
    s = math.floor(n / 2 + 1) - n_malicious
    if not 0 < s < n:
        raise ValueError(
            f"lie: s = floor(n/2 + 1) - n_malicious = {s} for n={n}, n_malicious={n_malicious}; "
            "the attack assumes fewer than half the clients attack (0 < s < n)"
        )
    # Imported here: scipy.stats costs seconds to import, paid by every ClientApp process the
    # Deployment Engine starts (one per message), attacker or not.
    from scipy.stats import norm

    return float(norm.ppf((n - s) / n))


def lie(honest: torch.Tensor, n_malicious: int, *, z: float | None = None) -> torch.Tensor:
    """LIE, "A Little Is Enough" (Baruch, Baruch & Goldberg, "A Little Is Enough: Circumventing
    Defenses For Distributed Learning", NeurIPS 2019): every attacker sends μ − z·σ, with μ and
    σ the per-coordinate mean and standard deviation of the honest updates and, unless given,
    z = ``lie_z(m + n_malicious, n_malicious)``."""
    _check(honest, n_malicious, "lie", 2)
    z = lie_z(len(honest) + n_malicious, n_malicious) if z is None else _number(z, "z")
    crafted = honest.mean(0) - z * honest.std(0)
    return crafted.expand(n_malicious, -1).clone()


def ipm(honest: torch.Tensor, n_malicious: int, *, epsilon: float = 0.1) -> torch.Tensor:
    """Inner product manipulation (Xie, Koyejo & Gupta, "Fall of Empires: Breaking
    Byzantine-tolerant SGD by Inner Product Manipulation", UAI 2019, PMLR 115, 2020): every
    attacker sends −ε · mean(honest), so that the aggregate's inner product with the true mean
    turns negative. A small ε (0.1, the default) keeps the malicious updates near the honest
    cloud, where distance-based rules such as Krum select them; a large ε reverses a mean
    outright."""
    _check(honest, n_malicious, "ipm", 1)
    epsilon = _number(epsilon, "epsilon", positive=True)
    return (-epsilon * honest.mean(0)).expand(n_malicious, -1).clone()


def _perturbation(honest: torch.Tensor, kind: str) -> torch.Tensor:
    """∇p of Shejwalkar & Houmansadr: inverse unit vector −μ/‖μ‖, inverse sign −sign(μ) or
    inverse standard deviation −σ."""
    mu = honest.mean(0)
    if kind == "unit":
        n = mu.norm()
        return -mu / n if n > 0 else torch.zeros_like(mu)
    if kind == "sign":
        return -torch.sign(mu)
    if kind == "std":
        return -honest.std(0)
    raise ValueError(f"perturbation={kind!r} is unknown; allowed: {', '.join(PERTURBATIONS)}")


# Columns per block in ``_ray_terms``: bounds its float64 temporaries to m × 2^18 × 8 bytes.
_BLOCK = 1 << 18


def _ray_terms(x: torch.Tensor, p: torch.Tensor):
    """For the ray μ + γ·p around the honest rows x (float64): the (m, m) squared distances
    between honest updates, b_i = (μ − x_i)·p and ‖μ − x_i‖².

    All come from inner products of the centred rows y_i = x_i − μ (b_i = −⟨y_i, p⟩,
    ‖μ − x_i‖² = ‖y_i‖², distances ‖y_i‖² + ‖y_j‖² − 2⟨y_i, y_j⟩), accumulated over column
    blocks so that no (m, d) temporary is built (d is the model size). Centring keeps the
    Gram expansion at the spread's scale: on the raw rows a common offset of 10⁶ on
    unit-spread updates made the distances 3 % wrong."""
    m = x.shape[0]
    g = torch.zeros(m, m, dtype=x.dtype, device=x.device)
    yp = torch.zeros(m, dtype=x.dtype, device=x.device)
    for xb, mb, pb in zip(x.split(_BLOCK, dim=1), x.mean(0).split(_BLOCK), p.split(_BLOCK)):
        yb = xb - mb
        g += yb @ yb.t()
        yp += yb @ pb
    sq = g.diagonal()
    distances = (sq[:, None] + sq[None, :] - 2 * g).clamp_min(0)
    return distances, -yp, sq


def _max_gamma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Largest γ ≥ 0 with a·γ² + 2·b·γ + c ≤ 0 for every entry (a > 0, c ≤ 0 at γ = 0)."""
    roots = (-b + (b * b - a * c).clamp_min(0).sqrt()) / a
    return roots.min().clamp_min(0)


def _on_ray(honest: torch.Tensor, n_malicious: int, perturbation: str, name: str, gamma_of) -> torch.Tensor:
    """μ + γ·∇p for every attacker, γ = gamma_of(‖∇p‖², honest squared distances,
    b_i, ‖μ − x_i‖²) (see ``_ray_terms``); any γ when ∇p = 0."""
    _check(honest, n_malicious, name, 2)
    x = honest.double()
    p = _perturbation(x, perturbation)
    a = p @ p
    gamma = gamma_of(a, *_ray_terms(x, p)) if a > 0 else 0.0
    return (x.mean(0) + gamma * p).to(honest.dtype).expand(n_malicious, -1).clone()


def min_max(honest: torch.Tensor, n_malicious: int, *, perturbation: str = "std") -> torch.Tensor:
    """MinMax (Shejwalkar & Houmansadr, "Manipulating the Byzantine: Optimizing Model Poisoning
    Attacks and Defenses for Federated Learning", NDSS 2021): every attacker sends μ + γ·∇p
    with the largest γ such that its largest distance to any honest update is at most the
    largest distance between two honest updates:
    max_i ‖μ + γ∇p − ∇_i‖ ≤ max_{i,j} ‖∇_i − ∇_j‖.

    The paper finds γ by binary search (from γ = 10, which in its code caps γ below 20). Each
    constraint is a quadratic in γ that holds at γ = 0, so we solve it exactly instead: the
    limit of the search, without the cap."""
    return _on_ray(
        honest, n_malicious, perturbation, "min_max",
        lambda a, distances, b, to_mean: _max_gamma(a, b, to_mean - distances.max()),
    )


def min_sum(honest: torch.Tensor, n_malicious: int, *, perturbation: str = "std") -> torch.Tensor:
    """MinSum (Shejwalkar & Houmansadr, NDSS 2021): every attacker sends μ + γ·∇p with the
    largest γ such that its sum of squared distances to the honest updates is at most the
    largest such sum of an honest update:
    Σ_i ‖μ + γ∇p − ∇_i‖² ≤ max_i Σ_j ‖∇_i − ∇_j‖².
    Solved exactly (one quadratic in γ), as in ``min_max``."""
    return _on_ray(
        honest, n_malicious, perturbation, "min_sum",
        lambda a, distances, b, to_mean: _max_gamma(
            len(distances) * a, b.sum(), to_mean.sum() - distances.sum(1).max()
        ),
    )


def fang(
    honest: torch.Tensor, n_malicious: int, *, b: float = 2.0, generator: torch.Generator
) -> torch.Tensor:
    """Fang et al. ("Local Model Poisoning Attacks to Byzantine-Robust Federated Learning",
    USENIX Security 2020), full-knowledge attack on trimmed mean, used unchanged against the
    coordinate-wise median. Per coordinate j, with s_j the sign of the honest mean (the
    direction the aggregate would move) and w_max,j / w_min,j the honest maximum / minimum,
    each attacker sends an independent draw
      s_j > 0: from [w_min,j / b, w_min,j] if w_min,j > 0, else from [b·w_min,j, w_min,j];
      s_j < 0: from [w_max,j, b·w_max,j] if w_max,j > 0, else from [w_max,j, w_max,j / b];
    i.e. beyond the most extreme honest value against the direction s_j (0 where s_j = 0).
    The draw is w/r or w·r with r ~ U[1, b], as in the authors' code; b = 2 as in the paper.
    (The paper's separate attack on Krum is not implemented here.)"""
    _check(honest, n_malicious, "fang", 1)
    b = _number(b, "b")
    if b <= 1:
        raise ValueError(f"fang b={b!r} must be > 1")
    s = torch.sign(honest.sum(0))
    directed = torch.where(s > 0, honest.min(0).values, torch.where(s < 0, honest.max(0).values, 0.0))
    r = 1 + (b - 1) * torch.rand(n_malicious, honest.shape[1], generator=generator, dtype=honest.dtype)
    # Same sign as s: shrink towards 0 (w/r); opposite sign: push further out (w·r).
    return torch.where(s * directed > 0, directed / r, directed * r)


BYZANTINE = {
    "sign_flip": sign_flip,
    "gaussian_noise": gaussian_noise,
    "lie": lie,
    "ipm": ipm,
    "min_max": min_max,
    "min_sum": min_sum,
    "fang": fang,
}
# Attacks that transform the attackers' own updates instead of crafting from the honest ones.
OWN_UPDATE_ATTACKS = frozenset({"sign_flip"})


def _tunable(name: str) -> list[str]:
    params = inspect.signature(BYZANTINE[name]).parameters
    return [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY and p != "generator"]


@dataclass(frozen=True, eq=False)
class ByzantineAdversary:
    """The strategy's adversary hook for one Byzantine attack:
    (round, partition ids, updates (n, d), malicious row mask (n,)) → updates whose malicious
    rows are replaced (from the honest rows, or from the malicious rows themselves for
    ``OWN_UPDATE_ATTACKS``). Randomised attacks draw from a generator seeded with
    (seed, round), so a run is reproducible. Picklable."""

    name: str
    seed: int = 0
    params: dict = field(default_factory=dict)

    def craft(self, server_round: int, updates: torch.Tensor, mal: torch.Tensor) -> torch.Tensor:
        """The malicious rows (k, d) for this round."""
        fn, kwargs = BYZANTINE[self.name], dict(self.params)
        if "generator" in inspect.signature(fn).parameters:
            kwargs["generator"] = torch.Generator().manual_seed(self.seed * 1_000_003 + server_round)
        if self.name in OWN_UPDATE_ATTACKS:
            return fn(updates[mal], **kwargs)
        return fn(updates[~mal], int(mal.sum()), **kwargs)

    def __call__(
        self, server_round: int, pids: list[int], updates: torch.Tensor, malicious: torch.Tensor
    ) -> torch.Tensor:
        mal = malicious.to(torch.bool)
        if not mal.any():
            return updates
        try:
            rows = self.craft(server_round, updates, mal)
        except ValueError as e:
            raise ValueError(f"round {server_round}: byzantine attack {self.name!r}: {e}") from e
        out = updates.clone()
        out[mal] = rows.to(out.dtype)
        return out


def make_adversary(name: str, *, seed: int, **params) -> ByzantineAdversary:
    """The one factory from a config's Byzantine attack name and parameters to the strategy's
    adversary hook. Parameters are checked here, on a small synthetic round, so that a bad value
    fails before the run starts rather than in its first round."""
    if name not in BYZANTINE:
        raise ValueError(f"byzantine attack {name!r} is unknown; allowed: {', '.join(BYZANTINE)}")
    allowed = _tunable(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"byzantine attack {name!r} has no parameter {', '.join(unknown)}; "
            f"allowed: {', '.join(allowed) or 'none'}"
        )
    adversary = ByzantineAdversary(name=name, seed=seed, params=dict(params))
    probe = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    try:
        adversary.craft(1, probe, torch.tensor([True, False, False, False, False, False]))
    except (ValueError, TypeError) as e:
        raise ValueError(f"byzantine attack {name!r} with {params}: {e}") from e
    return adversary
