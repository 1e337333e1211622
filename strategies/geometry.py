"""Row norms and pairwise geometry of an (n, d) batch of updates, shared by the distance- and
cosine-based rules. Everything is computed without an (n, n, d) intermediate and accurately
for d in the millions: float32 dot products over millions of coordinates lose the small
differences between near-identical updates (sybils, duplicates) that these rules must see."""

from __future__ import annotations

import numpy as np
import torch

# Columns per block when accumulating the Gram matrix: bounds the float64 copy to
# n × 2^15 × 8 bytes (13 MB for n = 50) whatever d is. Blocks that fit the caches: MKL's
# float64 product over (50, 3.5M) took 0.38 s in blocks of 2^15 columns against 0.92 s in
# blocks of 2^18 (VM C, bench/aggregators.py).
_BLOCK = 1 << 15


def row_norms(rows: torch.Tensor) -> torch.Tensor:
    """L2 norm of every row, in the rows' dtype.

    Through ``square().sum()`` (cascade summation, relative error ~1e-7 for d = 3.5M in
    float32) rather than ``torch.linalg.vector_norm``, whose float32 result was off by ~1e-4."""
    return rows.square().sum(dim=1).sqrt()


def gram(rows: torch.Tensor, others: torch.Tensor | None = None) -> torch.Tensor:
    """(n, m) float64 inner products ⟨x_i, y_j⟩ between the rows of ``rows`` (n, d) and of
    ``others`` (m, d; ``rows`` itself when None), accumulated over column blocks.

    Each entry is accurate to ~1e-16 · ‖x_i‖ ‖y_j‖ (float32 products are exact in float64),
    so cosines are accurate at any magnitude; differences of entries are not (see
    :func:`centred_gram`)."""
    b_rows = rows if others is None else others
    g = torch.zeros(rows.shape[0], b_rows.shape[0], dtype=torch.float64, device=rows.device)
    for a, b in zip(rows.split(_BLOCK, dim=1), b_rows.split(_BLOCK, dim=1)):
        g += a.to(torch.float64) @ b.to(torch.float64).T
    return g if others is not None else _symmetric(g)


def _symmetric(g: torch.Tensor) -> torch.Tensor:
    # BLAS need not return an exactly symmetric product; exact symmetry makes d(i, j) and
    # d(j, i) equal, so ties that a rule has by construction stay exact ties.
    return (g + g.T) / 2


def _lower_median(block: torch.Tensor) -> torch.Tensor:
    """Per column, the ⌈n/2⌉-th smallest value (the lower median) of an (n, b) block."""
    k = (block.shape[0] - 1) // 2
    # numpy's partition is several times faster than torch's median/kthvalue on CPU.
    return _kth_smallest_numpy(block, k) if block.device.type == "cpu" else _kth_smallest_torch(block, k)


def _kth_smallest_numpy(block: torch.Tensor, k: int) -> torch.Tensor:
    """Per column, the (k+1)-th smallest value of a CPU (n, b) block: partitioned along the
    rows of a transposed copy, where each column's n values are contiguous (2.5–3× faster
    than partitioning the strided columns in place, for n = 50)."""
    return torch.from_numpy(np.partition(np.ascontiguousarray(block.numpy().T), k, axis=1)[:, k])


def _kth_smallest_torch(block: torch.Tensor, k: int) -> torch.Tensor:
    """The same on any device (``kthvalue`` counts from 1)."""
    return block.kthvalue(k + 1, dim=0).values


def centred_gram(rows: torch.Tensor) -> torch.Tensor:
    """(n, n) float64 Gram matrix ⟨x_i − m, x_j − m⟩ of the rows centred on their
    coordinate-wise lower median m (accumulated over column blocks, m taken per block).

    Distances are the same for any common centre, but their Gram expansion
    ‖u‖² + ‖v‖² − 2⟨u, v⟩ cancels catastrophically when the rows sit far from the origin
    relative to their spread: a common offset of 10⁶ on unit-spread float32 rows gave 5 %
    errors uncentred. With more than half the rows honest, m lies inside the honest range of
    every coordinate, so the honest rows' entries stay at the scale of their spread whatever
    the other rows do; the absolute error of an entry is ~1e-16 · ‖x_i − m‖ ‖x_j − m‖."""
    g = torch.zeros(rows.shape[0], rows.shape[0], dtype=torch.float64, device=rows.device)
    for block in rows.split(_BLOCK, dim=1):
        # the median in the rows' own dtype (an exact element, half the bytes to partition)
        block = block.to(torch.float64) - _lower_median(block).to(torch.float64)
        g += block @ block.T
    return _symmetric(g)


# The Gram expansion of a squared distance has an absolute error of ~1e-16 · (G_ii + G_jj);
# entries below this fraction of G_ii + G_jj are recomputed from explicit differences, which
# bounds every entry's relative error by ~1e-10.
_CANCELLATION = 1e-6


def squared_distances(rows: torch.Tensor) -> torch.Tensor:
    """(n, n) float64 squared L2 distances ‖x_i − x_j‖², zero diagonal, accurate relative to
    each entry at any magnitude.

    Mostly G_ii + G_jj − 2 G_ij from the median-centred Gram matrix G (:func:`centred_gram`),
    clamped at 0. Where that expansion cancels — x_i and x_j near each other but far from the
    median relative to their separation: duplicates, or sybils far from the honest updates,
    whose distance Bulyan's last one-neighbour Krum steps compare with the honest ones — the
    entry is recomputed as Σ_k (x_ik − x_jk)² over column blocks, O(d) per such pair."""
    g = centred_gram(rows)
    sq = g.diagonal()
    scale = sq[:, None] + sq[None, :]
    dist = (scale - 2 * g).clamp_min_(0)
    close = torch.triu(dist < _CANCELLATION * scale, diagonal=1)
    for i in torch.nonzero(close.any(dim=1)).flatten().tolist():
        js = torch.nonzero(close[i]).flatten()
        dist[i, js] = dist[js, i] = _direct_squared_distances(rows[js], rows[i])
    return dist.fill_diagonal_(0)


def _direct_squared_distances(rows: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """‖x_j − x‖² for every row x_j of ``rows``, in float64 over column blocks."""
    out = torch.zeros(rows.shape[0], dtype=torch.float64, device=rows.device)
    for a, b in zip(rows.split(_BLOCK, dim=1), row.split(_BLOCK)):
        out += (a.to(torch.float64) - b.to(torch.float64)).square().sum(dim=1)
    return out


def cosine_similarities(g: torch.Tensor) -> torch.Tensor:
    """(n, n) cosine similarities from a Gram matrix ``g``; a zero row has similarity 0."""
    norms = g.diagonal().sqrt()
    inv = torch.where(norms > 0, 1.0 / norms, 0.0)
    return g * inv[:, None] * inv[None, :]
