"""Kernels for product-quantized codes of list residuals: lookup tables and scan.

A code is M bytes, one centroid index per subspace. For query q the lookup
table holds ``lut[m, c] = <q_m, codebook[m, c]>`` so ``<q, r> ~ sum_m lut[m, code_m]``;
searches sum it in bytes (``byte_table``), each entry within half a step.
The tables are built from the codebooks transposed, (M, dsub, K).
"""

import numpy as np
from numba import njit

from shard.kernels.topk import heap_push, heap_sorted


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def product_lut(x, books_t, out):
    """out (M, K) = the lookup table of one vector x: ``out[j, k] = <x_j, codeword k of subspace j>``.

    x: (d,) float32, d <= M * dsub (dimensions past d count as the zero padding
    the codebooks were trained with); books_t: (M, dsub, K) float32, the
    codebooks with each subspace's dimensions as rows, so a table row is dsub
    passes over K contiguous floats (vectorised: 5x the (M, K, dsub) loop).
    """
    M, dsub, K = books_t.shape
    d = x.shape[0]
    for sm in range(M):
        off = sm * dsub
        row = out[sm]
        for c in range(K):
            row[c] = 0.0
        for j in range(min(dsub, d - off)):
            xj = x[off + j]
            for c in range(K):
                row[c] += xj * books_t[sm, j, c]


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def byte_table(lut, out, mins):
    """A lookup table (M, K) float32 in bytes: ``lut[j, c] ~ mins[j] + scale *
    out[j, c]``, one scale for all rows (so byte sums add up), each entry within
    scale / 2. Writes out (M, K) uint8 and mins (M,) float32; returns (scale,
    sum of mins). A constant table gets scale 1 and all-zero bytes."""
    M, K = lut.shape
    span = np.float32(0.0)
    bias = np.float32(0.0)
    for j in range(M):
        lo = lut[j, 0]
        hi = lut[j, 0]
        for c in range(1, K):
            lo = min(lo, lut[j, c])
            hi = max(hi, lut[j, c])
        mins[j] = lo
        bias += lo
        span = max(span, hi - lo)
    scale = span / np.float32(255.0) if span > 0 else np.float32(1.0)
    inv = np.float32(1.0) / scale
    for j in range(M):
        lo = mins[j]
        for c in range(K):
            out[j, c] = np.uint8(min(np.float32(255.0), (lut[j, c] - lo) * inv + np.float32(0.5)))
    return scale, bias


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def product_luts(qpad, books_t):
    """Lookup tables for m queries.

    qpad: (m, M * dsub) float32, queries zero-padded to the subspaces;
    books_t: (M, dsub, K) float32 (see ``product_lut``). Returns (m, M, K) float32.
    """
    M, _, K = books_t.shape
    lut = np.empty((qpad.shape[0], M, K), np.float32)
    for qi in range(qpad.shape[0]):
        product_lut(qpad[qi], books_t, lut[qi])
    return lut


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def product_scan(lut, base, probes, offsets, members, codes, half_sqnorm, use_sqnorm,
                 out_scores, out_slots):
    """Top-k slots by estimated score for m queries.

    lut: (m, M, K) float32; codes: (cap, M) uint8; other arguments as in
    ``binary_scan``. Returns counts (m,) int64. Each query's table is summed in
    bytes (``byte_table``): 1.19x faster at x16 (24 KB stays in L1), equal recall.
    """
    m = lut.shape[0]
    M = lut.shape[1]
    counts = np.zeros(m, np.int64)
    table = np.empty((M, lut.shape[2]), np.uint8)
    mins = np.empty(M, np.float32)
    for qi in range(m):
        hs = out_scores[qi]
        hi = out_slots[qi]
        scale, bias = byte_table(lut[qi], table, mins)
        size = 0
        for pi in range(probes.shape[1]):
            l = probes[qi, pi]
            if l < 0:
                break
            b0 = base[qi, l] + bias
            for t in range(offsets[l], offsets[l + 1]):
                s = members[t]
                acc = np.int32(0)
                for sm in range(M):
                    acc += np.int32(table[sm, codes[s, sm]])
                est = b0 + scale * np.float32(acc)
                if use_sqnorm:
                    est -= half_sqnorm[s]
                size = heap_push(hs, hi, size, est, s)
        heap_sorted(hs, hi, size)
        counts[qi] = size
    return counts
