"""Scan kernel for int8 scalar codes of list residuals.

A code is d uint8 values, ``r_j ~ lo_j + step_j * code_j`` for the residual r of
a point to its list centroid. For query q, ``<q, r> ~ <q, lo> + sum_j qs_j code_j``
with ``qs = q * step``; the constant ``<q, lo>`` and ``<c_l, q>`` are folded
into ``base``. On CPUs with AVX-512 VNNI the scan holds qs in signed bytes and
sums each code with ``vpdpbusd`` (``dot8.py``, as the HNSW walk does): docs384,
IVF over 1,024 lists, 1.28-1.48x the engine's q/s at oversampling 1-4 (the scan
kernel alone 2.9x), recall@10 0.9047 against 0.9054 at oversampling 1 and equal
at 2-4.
"""

import numpy as np
from numba import njit

from shard.kernels.dot8 import held_query, row_score
from shard.kernels.topk import heap_push, heap_sorted


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def scalar_scan(qs, base, probes, offsets, members, codes, half_sqnorm, use_sqnorm,
                out_scores, out_slots):
    """Top-k slots by estimated score for m queries.

    qs: (m, d) float32, the query times each dimension's step; base: (m, nlist)
    float32; codes: (cap, d) uint8; other arguments as in ``binary_scan``.
    Returns counts (m,) int64.
    """
    m, d = qs.shape
    counts = np.zeros(m, np.int64)
    q8 = np.empty(d, np.int8)
    for qi in range(m):
        held = held_query(qs[qi], q8, codes)  # in signed bytes on VNNI hosts (dot8.py)
        hs = out_scores[qi]
        hi = out_slots[qi]
        size = 0
        for pi in range(probes.shape[1]):
            l = probes[qi, pi]
            if l < 0:
                break
            b0 = base[qi, l]
            for t in range(offsets[l], offsets[l + 1]):
                s = members[t]
                est = b0 + row_score(held, codes, s)
                if use_sqnorm:
                    est -= half_sqnorm[s]
                size = heap_push(hs, hi, size, est, s)
        heap_sorted(hs, hi, size)
        counts[qi] = size
    return counts
