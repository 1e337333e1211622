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
    for _ in range(1000):
        parts: list[list[int]] = [[] for _ in range(num_clients)]
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            p = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ValueError(
        f"no Dirichlet(alpha={alpha}) split gave every one of {num_clients} clients "
        f"{min_size}+ samples in 1000 draws; raise alpha or lower min_size"
    )


def _check(num_samples: int, num_clients: int) -> None:
    if num_clients < 1 or num_clients > num_samples:
        raise ValueError(f"num_clients must be in [1, {num_samples}], got {num_clients}")
