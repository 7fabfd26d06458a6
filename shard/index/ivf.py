"""Inverted-file coarse quantizer: k-means lists and probe selection.

Chosen over HNSW by measurement (see README, "Why IVF"): with residual codes
the list centroids double as the centring the binary estimator needs, upserts
and deletes are O(1) per point with no graph repair, and a probe of a few
percent of the lists keeps recall@10 above 0.97 on docs384.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from shard.kernels.kmeans import assign_among, assigned_sq_dists, cluster_means_update
from shard.kernels.layout import nearest_lists
from shard.parallel import map_row_blocks

#: k-means from random points: this many Lloyd iterations comparing every centroid (BLAS) ...
KMEANS_ITERATIONS = 3
#: ... then this many comparing each point with the ``NEIGHBOURS`` centroids nearest to its
#: cluster's (a fifth of the cost each). On docs384 (20k points, 1,024 lists) 3 + 9 reach a
#: mean squared error of 0.5665 in 0.75 s, 6 + 6 0.5642 in 1.33 s, 8 full ones 0.5646 in
#: 1.32 s; recall@10 of an engine built over 100k points is the same either way (the
#: retraining at 80k starts from these centroids and moves them on).
NEAR_ITERATIONS = 9
#: From a previous index's centroids (a retraining): one full iteration, then these near ones;
#: on docs384 at 80k points their error is 0.604 where 8 from random points reach 0.610.
WARM_NEAR_ITERATIONS = 5
NEIGHBOURS = 64
#: the neighbour lists are recomputed every this many iterations (the centroids move little by then)
NEIGHBOURS_EVERY = 3
_CHUNK = 4096


def auto_nlist(n: int) -> int:
    """Lists for n points when the config leaves it to us: about 2 sqrt(n)."""
    return int(min(4096, max(64, round(2 * math.sqrt(n)))))


def auto_nprobe(nlist: int) -> int:
    return int(max(1, min(nlist, max(8, nlist // 16))))


def assign(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest centroid (euclidean) of each row of x (n, d) -> (n,) int32; row
    blocks in threads (numpy's matmul releases the GIL; BLAS itself is held to
    one thread, for searches)."""
    half = (0.5 * np.einsum("ij,ij->i", centroids, centroids)).astype(np.float32)
    out = np.empty(len(x), np.int32)

    def run(lo: int, hi: int) -> None:
        _assign_rows(x[lo:hi], centroids, half, out[lo:hi])

    map_row_blocks(run, len(x), _CHUNK)
    return out


def _assign_rows(x: np.ndarray, centroids: np.ndarray, half: np.ndarray, out: np.ndarray) -> None:
    # one block of scores reused by every chunk, written by the GEMM and shifted in
    # place: a fresh (chunk, k) temporary per step (two, with the shift) cost a third
    # of the time (0.99 s -> 0.67 s for 80k x 1024 lists, one thread)
    sims = np.empty((min(_CHUNK, len(x)), len(centroids)), np.result_type(x, centroids))
    for s in range(0, len(x), _CHUNK):
        block = sims[: min(_CHUNK, len(x) - s)]
        np.matmul(x[s:s + _CHUNK], centroids.T, out=block)
        block -= half
        out[s:s + _CHUNK] = np.argmax(block, axis=1)


def kmeans(x: np.ndarray, k: int, seed: int = 0,
           progress: Callable[[str, int, int], None] | None = None,
           init: np.ndarray | None = None, labels: np.ndarray | None = None) -> np.ndarray:
    """Lloyd's k-means. x (n, d) float32 -> (k, d) float32.

    Starts from ``init`` (k, d) when given (a retraining starts from the index
    it replaces), else from k random points. ``labels`` (n,) with ``init``: the
    points' nearest centroids among ``init`` (a shard's lists, as written),
    taken for the first assignment instead of computing it. Full iterations
    assign by BLAS; later ones compare each point only with the centroids
    nearest to its cluster's (``assign_among``). Empty clusters are re-seeded
    from the points farthest from their centroid.
    """
    n = len(x)
    x = np.ascontiguousarray(x, np.float32)
    a = cand = None
    if init is not None and len(init) <= n:
        c = np.array(init, np.float32, order="C")
        plan = [True] + [False] * WARM_NEAR_ITERATIONS
        if labels is not None:
            a = np.array(labels, np.int32)  # a copy: re-seeding writes into it
            plan[0] = False
    else:
        k = min(k, n)
        rng = np.random.default_rng(seed + 15485863)
        c = x[rng.choice(n, k, replace=False)].copy()
        plan = [True] * KMEANS_ITERATIONS + [False] * NEAR_ITERATIONS
    for it, full in enumerate(plan):
        if it == 0 and a is not None:
            pass  # the given labels are this assignment
        elif full or a is None or len(c) <= NEIGHBOURS:
            a = assign(x, c)
        else:
            if cand is None or it % NEIGHBOURS_EVERY == 0:
                cand, _ = centroid_neighbours(c, NEIGHBOURS)
            a = near_assign(x, c, a, cand)
        counts = cluster_means_update(x, a, c)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            err = assigned_sq_dists(x, a, c)
            far = np.argsort(-err)[: len(empty)]
            c[empty] = x[far]
            a[far] = empty  # each sits on its new centroid: the next near iteration sees it
        if progress:
            progress("kmeans", it + 1, len(plan))
    return np.ascontiguousarray(c, np.float32)


def near_assign(x: np.ndarray, c: np.ndarray, prev: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """``assign_among`` over row blocks of x (n, d) in threads (the kernel
    releases the GIL): the nearest of each point's candidates ``cand[prev]``."""
    half = (0.5 * np.einsum("ij,ij->i", c, c)).astype(np.float32)
    out = np.empty(len(x), np.int32)

    def run(lo: int, hi: int) -> None:
        out[lo:hi] = assign_among(x[lo:hi], c, half, prev[lo:hi], cand)

    map_row_blocks(run, len(x), 4096)
    return out


def centroid_neighbours(c: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The m nearest centroids (euclidean, itself included) of each centroid of
    c (k, d) float32, as (k, m) int32, and 0.5 ||c||^2 (k,) float32."""
    half = (0.5 * np.einsum("ij,ij->i", c, c)).astype(np.float32)
    near = np.argpartition(half[None, :] - c @ c.T, m - 1, axis=1)[:, :m]
    return np.ascontiguousarray(near, np.int32), half


#: ``select_probes`` without a scale: the kernel takes an empty array for none
_NO_SCALE = np.zeros(0, np.float32)


def select_probes(qc: np.ndarray, half_cnorm: np.ndarray, list_sizes: np.ndarray,
                  nprobe: int, min_candidates: int, scale: np.ndarray | None = None) -> np.ndarray:
    """Lists to probe per query, nearest first.

    qc: (m, nlist) inner products of queries with centroids; half_cnorm:
    (nlist,) 0.5 ||c||^2; list_sizes: (nlist,) live points per list; scale:
    (nlist,) factors the lists rank by ``qc * scale - half_cnorm`` (cosine:
    1 / ||c||), None for ``qc - half_cnorm``.
    At least ``nprobe`` lists are probed, more when those hold fewer than
    ``min_candidates`` points, so a search can always fill its candidates.
    Returns (m, p) int32, -1 padded.
    """
    m, nlist = qc.shape
    if nlist == 1:
        return np.zeros((m, 1), np.int32)
    scale = _NO_SCALE if scale is None else np.ascontiguousarray(scale, np.float32)
    return nearest_lists(np.ascontiguousarray(qc, np.float32), np.ascontiguousarray(half_cnorm, np.float32),
                         np.ascontiguousarray(list_sizes, np.int64), int(nprobe), int(min_candidates), scale)

