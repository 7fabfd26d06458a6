"""The inverted-list layout of codes: slots grouped by list, as CSR arrays."""

import numpy as np
from numba import njit

from shard.kernels.topk import heap_push, heap_sorted


@njit(nogil=True, cache=True)
def build_lists(list_of_slot, nlist):
    """Group slots by list with a counting sort.

    list_of_slot: (cap,) int32, the list of each slot, -1 for a free slot.
    Returns offsets (nlist + 1,) int64 and members (n_live,) int32 so that the
    slots of list l are ``members[offsets[l]:offsets[l + 1]]``, ascending.
    """
    counts = np.zeros(nlist + 1, np.int64)
    for s in range(list_of_slot.shape[0]):
        l = list_of_slot[s]
        if l >= 0:
            counts[l + 1] += 1
    offsets = np.cumsum(counts)
    fill = offsets[:-1].copy()
    members = np.empty(offsets[-1], np.int32)
    for s in range(list_of_slot.shape[0]):
        l = list_of_slot[s]
        if l >= 0:
            members[fill[l]] = s
            fill[l] += 1
    return offsets, members


@njit(nogil=True, cache=True)
def _nearest_sorted(rank, t):
    """Indices of the t largest entries of rank, largest first (heap select)."""
    hs = np.full(t, -np.inf, np.float32)
    hi = np.full(t, -1, np.int64)
    size = 0
    for l in range(rank.shape[0]):
        size = heap_push(hs, hi, size, rank[l], l)
    heap_sorted(hs, hi, size)
    return hi[:size]


@njit(nogil=True, cache=True)
def nearest_lists(qc, half_cnorm, list_sizes, nprobe, min_candidates):
    """Lists to probe per query, nearest (euclidean) first.

    qc: (m, nlist) float32 inner products of queries and centroids;
    half_cnorm: (nlist,) 0.5 ||c||^2; list_sizes: (nlist,) int64.
    Takes the ``nprobe`` nearest lists, and more while they hold fewer than
    ``min_candidates`` points. Returns (m, width) int32, -1 padded.
    """
    m, nlist = qc.shape
    nprobe = min(nprobe, nlist)
    mean_size = max(1.0, list_sizes.sum() / nlist)
    guess = min(nlist, max(nprobe, int(2 * min_candidates / mean_size) + 1))
    order = np.empty((m, nlist), np.int32)
    need = np.zeros(m, np.int64)
    rank = np.empty(nlist, np.float32)
    for qi in range(m):
        for l in range(nlist):
            rank[l] = qc[qi, l] - half_cnorm[l]
        t = guess
        while True:
            idx = _nearest_sorted(rank, t)
            total = 0
            cnt = 0
            for j in range(t):
                order[qi, j] = idx[j]
                total += list_sizes[idx[j]]
                cnt = j + 1
                if cnt >= nprobe and total >= min_candidates:
                    break
            if (cnt >= nprobe and total >= min_candidates) or t == nlist:
                break
            t = min(nlist, 2 * t)
        need[qi] = cnt
    width = need.max()
    out = np.full((m, width), -1, np.int32)
    for qi in range(m):
        for j in range(need[qi]):
            out[qi, j] = order[qi, j]
    return out
