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

#: bins of the histogram through which ``order_statistics`` narrows each row
_BINS = 2048
#: columns ``order_statistics`` copies out of the rows at a time
_COLUMN_BLOCK = 16


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


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def order_statistics(x, ranks, out):
    """The ``ranks[i]``-th smallest value (0-based) of each column of x, exactly.

    x: (n, d) float32; ranks: (m,) int64 in 0..n-1; out: (d, m) float32.
    Columns are copied out 16 at a time (a cache line of each row); a histogram
    of each narrows every rank to one bin, whose few values are then sorted.
    numpy's ``quantile`` partitions every column instead (~40 ns a value over a
    scalar quantizer's 40k x 384 fitting sample, the strided copy included).
    """
    n, d = x.shape
    hist = np.empty(_BINS, np.int64)
    cols = np.empty((_COLUMN_BLOCK, n), np.float32)
    bins = np.empty(n, np.int16)
    buf = np.empty(n, np.float32)
    for j0 in range(0, d, _COLUMN_BLOCK):
        w = min(_COLUMN_BLOCK, d - j0)
        for t0 in range(0, n, 64):
            for c in range(w):
                for t in range(t0, min(t0 + 64, n)):
                    cols[c, t] = x[t, j0 + c]
        for c in range(w):
            row = cols[c]
            j = j0 + c
            mn = row[0]
            mx = row[0]
            for t in range(n):
                v = row[t]
                mn = min(mn, v)
                mx = max(mx, v)
            if mx == mn:
                for i in range(ranks.shape[0]):
                    out[j, i] = mn
                continue
            scale = np.float32(_BINS / (np.float64(mx) - np.float64(mn)))
            hist[:] = 0
            for t in range(n):
                b = min(np.int32((row[t] - mn) * scale), _BINS - 1)
                bins[t] = b
                hist[b] += 1
            held = -1  # the bin whose values ``part`` holds, sorted
            part = buf[:0].copy()
            for i in range(ranks.shape[0]):
                k = ranks[i]
                below = 0
                b = 0
                while below + hist[b] <= k:
                    below += hist[b]
                    b += 1
                if b != held:
                    size = 0
                    for t in range(n):
                        if bins[t] == b:
                            buf[size] = row[t]
                            size += 1
                    part = np.sort(buf[:size])
                    held = b
                out[j, i] = part[k - below]


@njit(nogil=True, cache=True, boundscheck=False)
def scalar_codes(r, lo, inv_step, out):
    """out (n, d) uint8 = clip(rint((r - lo) * inv_step), 0, 255) for residuals r (n, d)
    float32 and each dimension's lo, inv_step (d,) float32, in one vectorized pass
    (numpy's four, with a division, took ~2.8 us a point; this ~0.15 us). Rounds half
    to even as ``np.rint``: adding and taking away 2^23 leaves the float32 rounded."""
    n, d = r.shape
    magic = np.float32(8388608.0)
    for i in range(n):
        for j in range(d):
            v = (r[i, j] - lo[j]) * inv_step[j]
            v = v if v > np.float32(0.0) else np.float32(0.0)
            v = v if v < np.float32(255.0) else np.float32(255.0)
            out[i, j] = np.uint8(np.int32((v + magic) - magic))
