"""Split sample indices over clients: IID, or label skew drawn from a Dirichlet(α).

Both are deterministic in ``seed`` and assign every sample to exactly one client.
"""

from __future__ import annotations

import numpy as np


def iid(num_samples: int, num_clients: int, seed: int) -> list[np.ndarray]:
    """A seeded permutation cut into ``num_clients`` parts whose sizes differ by at most one."""
    _check(num_samples, num_clients)
    perm = np.random.default_rng(seed).permutation(num_samples)
    return [np.sort(part) for part in np.array_split(perm, num_clients)]


def dirichlet(
    labels: np.ndarray, num_clients: int, alpha: float, seed: int, min_size: int = 1
) -> list[np.ndarray]:
    """Label-skewed split (Hsu et al., 2019, "Measuring the effects of non-identical data
    distribution"): for each class c draw p_c ~ Dir(α·1_N) and give client k the share
    p_c[k] of class c's samples. Small α → each client sees few classes. The draw is repeated
    (with the same generator) until every client holds at least ``min_size`` samples."""
    labels = np.asarray(labels)
    _check(len(labels), num_clients)
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if min_size * num_clients > len(labels):
        raise ValueError(
            f"min_size={min_size} × num_clients={num_clients} exceeds {len(labels)} samples"
        )
    rng = np.random.default_rng(seed)
    classes = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(1000):
        # Count first and cut only an accepted draw: an impossible split (tiny α, many
        # clients) is rejected after 1000 draws in well under a second.
        draws, sizes = [], np.zeros(num_clients, dtype=np.int64)
        for idx in classes:
            perm = rng.permutation(idx)
            p = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(int)
            sizes += np.diff(cuts, prepend=0, append=len(idx))
            draws.append((perm, cuts))
        if sizes.min() >= min_size:
            parts = zip(*(np.split(perm, cuts) for perm, cuts in draws))
            return [np.sort(np.concatenate(chunks)).astype(np.int64) for chunks in parts]
    raise ValueError(
        f"no Dirichlet(alpha={alpha}) split gave every one of {num_clients} clients "
        f"{min_size}+ samples in 1000 draws; raise alpha or lower min_size"
    )


def _check(num_samples: int, num_clients: int) -> None:
    if num_clients < 1 or num_clients > num_samples:
        raise ValueError(f"num_clients must be in [1, {num_samples}], got {num_clients}")


def sample(num_samples: int, sizes: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """Disjoint seeded random choices of ``sizes`` samples each (in turn, each cut to what the
    earlier ones left), every one sorted: a whole set when ``sizes[0] ≥ num_samples``."""
    perm = np.random.default_rng(seed).permutation(num_samples)
    out, start = [], 0
    for size in sizes:
        out.append(np.sort(perm[start : start + size]))
        start = min(num_samples, start + size)
    return out
