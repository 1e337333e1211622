"""Split sample indices over clients: ``PARTITIONS`` maps a config's ``data.partition`` to its
partitioner — IID, label skew drawn from a Dirichlet(α), pathological k classes per client, or
quantity skew drawn from a Dirichlet(β).

Every partitioner is deterministic in ``seed``, assigns every sample to exactly one client,
and raises ``ValueError`` when it cannot give each client ``min_size`` samples, so that the
config check (``fedsim.app.data_plan.check_data``) draws the very split the clients will. It needs
only the labels (or the sample count), never an image: a client materialises its own part.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def iid(num_samples: int, num_clients: int, seed: int, min_size: int = 1) -> list[np.ndarray]:
    """A seeded permutation cut into ``num_clients`` parts whose sizes differ by at most one
    (so each holds ⌊n / N⌋ or ⌈n / N⌉ ≥ ``min_size`` samples)."""
    _check(num_samples, num_clients, min_size)
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
    _check(len(labels), num_clients, min_size)
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    classes = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(_DRAWS):
        # Count first and cut only an accepted draw: an impossible split (tiny α, many
        # clients) is rejected after 1000 draws in well under a second.
        draws, sizes = [], np.zeros(num_clients, dtype=np.int64)
        for idx in classes:
            perm = rng.permutation(idx)
            cuts = _cuts(rng.dirichlet(np.full(num_clients, alpha)), len(idx))
            sizes += np.diff(cuts, prepend=0, append=len(idx))
            draws.append((perm, cuts))
        if sizes.min() >= min_size:
            parts = zip(*(np.split(perm, cuts) for perm, cuts in draws))
            return [np.sort(np.concatenate(chunks)).astype(np.int64) for chunks in parts]
    raise ValueError(
        f"no Dirichlet(alpha={alpha}) split gave every one of {num_clients} clients "
        f"{min_size}+ samples in {_DRAWS} draws; raise alpha"
    )


def pathological(
    labels: np.ndarray, num_clients: int, classes_per_client: int, seed: int, min_size: int = 1
) -> list[np.ndarray]:
    """Pathological non-IID split (McMahan et al., "Communication-Efficient Learning of Deep
    Networks from Decentralized Data", AISTATS 2017), k-classes variant: each client holds
    exactly k classes.

    The variant is NIID-Bench's "#C = k" (Li, Diao, Chen & He, "Federated Learning on Non-IID
    Data Silos: An Experimental Study", ICDE 2022), not McMahan et al.'s sorted shards, with
    which a client may get two shards of one class (fewer than k classes) or a shard across
    two (more). NIID-Bench gives client i class i mod C and k − 1 others drawn at random;
    here all k are dealt cyclically, which balances the holders of each class.

    Exact rule, with C classes, N clients and k = ``classes_per_client``: the classes in a
    seeded random order c_0 … c_{C−1} are dealt cyclically, k consecutive ones per client slot
    (slot s holds c_{(s·k + j) mod C}, j = 0 … k − 1, which are distinct since k ≤ C), and the
    clients take the slots in a seeded random order. Each class is then held by ⌊Nk/C⌋ or
    ⌈Nk/C⌉ clients, and its samples, in a seeded random order, are cut into that many parts
    whose sizes differ by at most one. So every client holds samples of exactly k classes and
    every sample is assigned once — which needs N·k ≥ C and every class to have at least as
    many samples as holders (a ``ValueError`` otherwise)."""
    labels = np.asarray(labels)
    _check(len(labels), num_clients, min_size)
    classes = np.unique(labels)
    k = classes_per_client
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(classes):
        raise ValueError(f"classes_per_client={k!r} must be an int in [1, {len(classes)}] (the labels' classes)")
    if num_clients * k < len(classes):
        raise ValueError(
            f"{num_clients} clients × classes_per_client={k} hold fewer than the {len(classes)} classes, "
            f"so some samples would belong to no client; need clients × classes_per_client ≥ {len(classes)}"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(classes)
    slot_of = rng.permutation(num_clients)  # client i takes slot slot_of[i]
    held = [order[(slot_of[i] * k + np.arange(k)) % len(classes)] for i in range(num_clients)]
    holders = {c: [i for i in range(num_clients) if c in held[i]] for c in classes.tolist()}
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c in classes.tolist():
        idx = rng.permutation(np.flatnonzero(labels == c))
        if len(idx) < len(holders[c]):
            raise ValueError(
                f"class {c} has {len(idx)} samples for {len(holders[c])} clients holding it; "
                "lower classes_per_client"
            )
        for i, chunk in zip(holders[c], np.array_split(idx, len(holders[c]))):
            parts[i].append(chunk)
    out = [np.sort(np.concatenate(chunks)).astype(np.int64) for chunks in parts]
    smallest = min(len(p) for p in out)
    if smallest < min_size:
        raise ValueError(f"the smallest client gets {smallest} samples, fewer than {min_size}; "
                         "raise classes_per_client")
    return out


def quantity_skew(
    num_samples: int, num_clients: int, beta: float, seed: int, min_size: int = 1
) -> list[np.ndarray]:
    """Quantity skew with IID labels: NIID-Bench's Dirichlet quantity skew (Li, Diao, Chen &
    He, "Federated Learning on Non-IID Data Silos: An Experimental Study", ICDE 2022). Draw
    q ~ Dir(β·1_N) and cut a seeded permutation of the samples at ⌊n·(q_1 + … + q_i)⌋, so that
    client i gets about q_i·n samples of every class alike. Small β → very unequal sizes. The
    draw is repeated (with the same generator) until every client holds at least ``min_size``
    samples, as NIID-Bench does (its minimum is 10)."""
    _check(num_samples, num_clients, min_size)
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(num_samples)
    for _ in range(_DRAWS):
        cuts = _cuts(rng.dirichlet(np.full(num_clients, beta)), num_samples)
        if np.diff(cuts, prepend=0, append=num_samples).min() >= min_size:
            return [np.sort(part).astype(np.int64) for part in np.split(perm, cuts)]
    raise ValueError(
        f"no Dirichlet(beta={beta}) split gave every one of {num_clients} clients "
        f"{min_size}+ samples in {_DRAWS} draws; raise beta"
    )


_DRAWS = 1000


def _cuts(p: np.ndarray, n: int) -> np.ndarray:
    """Where to cut ``n`` samples into shares ``p``: ⌊n·(p_1 + … + p_i)⌋, i < N."""
    return (np.cumsum(p)[:-1] * n).astype(int)


def _check(num_samples: int, num_clients: int, min_size: int) -> None:
    if num_clients < 1 or num_clients > num_samples:
        raise ValueError(f"num_clients must be in [1, {num_samples}], got {num_clients}")
    if min_size * num_clients > num_samples:
        raise ValueError(f"min_size={min_size} × num_clients={num_clients} exceeds {num_samples} samples")


@dataclass(frozen=True)
class Partitioner:
    """A ``PARTITIONS`` entry: ``split(first, num_clients, *params, seed, min_size)``, whose
    ``first`` argument is the int labels (``by_label``) or the number of samples, and whose
    ``params`` are read from the ``data`` fields of those names."""

    split: Callable[..., list[np.ndarray]]
    by_label: bool
    params: tuple[str, ...] = ()


PARTITIONS: dict[str, Partitioner] = {
    "iid": Partitioner(iid, by_label=False),
    "dirichlet": Partitioner(dirichlet, by_label=True, params=("alpha",)),
    "pathological": Partitioner(pathological, by_label=True, params=("classes_per_client",)),
    "quantity_skew": Partitioner(quantity_skew, by_label=False, params=("beta",)),
}


def sample(num_samples: int, sizes: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """Disjoint seeded random choices of ``sizes`` samples each (in turn, each cut to what the
    earlier ones left), every one sorted: a whole set when ``sizes[0] ≥ num_samples``."""
    perm = np.random.default_rng(seed).permutation(num_samples)
    out, start = [], 0
    for size in sizes:
        out.append(np.sort(perm[start : start + size]))
        start = min(num_samples, start + size)
    return out
