"""Numba kernels for k-means, residuals to centroids, and product-quantizer training and encoding."""

import numpy as np
from numba import njit

from shard.kernels.dot8 import address
from shard.kernels.nearest import (BLOCK, GROUPS, LANES, nearest1, nearest2, nearest4, nearest8,
                                   nearest16)


def pq_assign(xpad, codebooks):
    """Nearest codeword of each subvector (the first of equals).

    xpad: (n, M * dsub) float32; codebooks: (M, K, dsub) float32, dsub one of
    1, 2, 4, 8, 16 (``nearest.GROUPS``). Returns codes (n, M) uint8.
    """
    dsub = codebooks.shape[2]
    if dsub not in GROUPS:
        raise ValueError(f"subspaces of {dsub} dimensions; the kernels take {sorted(GROUPS)}")
    return _pq_assign(np.ascontiguousarray(xpad, np.float32), np.ascontiguousarray(codebooks, np.float32),
                      LANES * GROUPS[dsub])


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def _pq_assign(xpad, codebooks, span):
    """``pq_assign``'s kernel; span: points a ``nearest`` call scores (16 x its groups).

    Scores ``<x, c> - ||c||^2 / 2`` (the same argmax as the least distance).
    64 points at a time are transposed into a block, each subspace's
    coordinates one row of 64, and the IR kernels of ``nearest`` score 16 of
    them a register. On docs384 (one thread) 2.6-8 us a point against 8-24 us
    for the numba loop over 64 lanes before (dsub 16 .. 1), the same codes.
    """
    n = xpad.shape[0]
    M, K, dsub = codebooks.shape
    half = np.zeros((M, K), np.float32)
    for m in range(M):
        for c in range(K):
            for j in range(dsub):
                v = codebooks[m, c, j]
                half[m, c] += v * v
    half *= np.float32(0.5)
    codes = np.empty((n, M), np.uint8)
    xt = np.zeros((M, dsub, BLOCK), np.float32)  # lanes past a short last block: scored, not read
    best = np.empty(BLOCK, np.int32)
    stride = 4 * BLOCK
    for i0 in range(0, n, BLOCK):
        b = min(BLOCK, n - i0)
        for t in range(b):
            for m in range(M):
                for j in range(dsub):
                    xt[m, j, t] = xpad[i0 + t, m * dsub + j]
        # addresses taken where the arrays are used (numba frees an array after the
        # last use of its name: taken before the loop, they pointed at freed memory)
        pxt, pcb, ph, po = address(xt), address(codebooks), address(half), address(best)
        for m in range(M):
            pc = pcb + 4 * m * K * dsub
            pm = ph + 4 * m * K
            for t0 in range(0, BLOCK, span):
                px = pxt + 4 * (m * dsub * BLOCK + t0)
                if dsub == 1:
                    nearest1(px, stride, pc, pm, K, po + 4 * t0)
                elif dsub == 2:
                    nearest2(px, stride, pc, pm, K, po + 4 * t0)
                elif dsub == 4:
                    nearest4(px, stride, pc, pm, K, po + 4 * t0)
                elif dsub == 8:
                    nearest8(px, stride, pc, pm, K, po + 4 * t0)
                else:
                    nearest16(px, stride, pc, pm, K, po + 4 * t0)
            for t in range(b):
                codes[i0 + t, m] = best[t]
    return codes


def pq_assign_reference(xpad, codebooks):
    """``pq_assign`` in plain numpy: the least squared distance per subspace."""
    M, K, dsub = codebooks.shape
    sub = xpad.reshape(len(xpad), M, 1, dsub)
    return np.argmin(((sub - codebooks[None]) ** 2).sum(-1), axis=2).astype(np.uint8)


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def pq_update(xpad, codes, codebooks):
    """Move each codeword to the mean of the subvectors assigned to it, in place.

    Codewords left empty keep their position. Returns the number of empty ones.
    The sums run in a loop specialised for each subspace width (a literal
    trip count the compiler unrolls into vector adds): docs384, 20k points,
    x8 30 -> 17 ms, x16 28 -> 15 ms a call, the same codebooks.
    """
    M, K, dsub = codebooks.shape
    sums = np.zeros((M, K, dsub), np.float64)
    counts = np.zeros((M, K), np.int64)
    if dsub == 2:
        _subspace_sums(xpad, codes, sums, counts, 2)
    elif dsub == 4:
        _subspace_sums(xpad, codes, sums, counts, 4)
    elif dsub == 8:
        _subspace_sums(xpad, codes, sums, counts, 8)
    elif dsub == 16:
        _subspace_sums(xpad, codes, sums, counts, 16)
    else:
        _subspace_sums(xpad, codes, sums, counts, dsub)
    empty = 0
    for m in range(M):
        for c in range(K):
            if counts[m, c] > 0:
                for j in range(dsub):
                    codebooks[m, c, j] = sums[m, c, j] / counts[m, c]
            else:
                empty += 1
    return empty


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False, inline="always")
def _subspace_sums(xpad, codes, sums, counts, dsub):
    """sums[m, c] += each subvector m coded c, counts[m, c] += 1 (pq_update's pass)."""
    n = xpad.shape[0]
    M = sums.shape[0]
    for i in range(n):
        for m in range(M):
            c = codes[i, m]
            counts[m, c] += 1
            off = m * dsub
            for j in range(dsub):
                sums[m, c, j] += xpad[i, off + j]


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def lloyd_1d(cols, codebook, iterations):
    """k-means in one dimension for each row: ``iterations`` Lloyd steps moving
    codebook (M, K) float32 in place, each row's codewords over the values of
    cols (M, n) float32, each row sorted ascending (numpy's sort is vectorised).

    On sorted values a codeword's points are the run between the midpoints to
    its neighbours (a binary search each) and their mean comes from prefix sums,
    so a step costs K log n a row instead of n K (``pq_assign`` + ``pq_update``):
    x4 product codes have 384 one-dimensional subspaces. The split at midpoints
    is exact where ``pq_assign``'s ``<x, c> - c^2 / 2`` in float32 rounds near-ties
    either way (~1 value in 2,000 on normal data). A codeword left without
    points keeps its place; of equal codewords the lower index takes the values
    below, the next the values from there up (so equal codewords can part)."""
    M, n = cols.shape
    K = codebook.shape[1]
    prefix = np.empty(n + 1, np.float64)
    moved = np.empty(K, np.float32)
    for m in range(M):
        col = cols[m]
        prefix[0] = 0.0
        for i in range(n):
            prefix[i + 1] = prefix[i] + col[i]
        c = codebook[m]
        for _ in range(iterations):
            order = np.argsort(c, kind="mergesort")  # stable: equal codewords by index
            lo = 0
            for r in range(K):
                k = order[r]
                hi = n
                if r + 1 < K:
                    hi = np.searchsorted(col, np.float32(0.5) * (c[k] + c[order[r + 1]]))
                    hi = max(hi, lo)
                moved[k] = c[k] if hi == lo else np.float32((prefix[hi] - prefix[lo]) / (hi - lo))
                lo = hi
            for k in range(K):
                c[k] = moved[k]


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def cluster_means_update(x, assign, centroids):
    """Move each centroid (k, d) to the mean of its points x (n, d), in place.

    assign: (n,) int32 cluster of each point. Empty clusters keep their place.
    Returns counts (k,) int64.
    """
    k, d = centroids.shape
    sums = np.zeros((k, d), np.float64)
    counts = np.zeros(k, np.int64)
    for i in range(x.shape[0]):
        c = assign[i]
        counts[c] += 1
        for j in range(d):
            sums[c, j] += x[i, j]
    for c in range(k):
        if counts[c] > 0:
            for j in range(d):
                centroids[c, j] = sums[c, j] / counts[c]
    return counts


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def assigned_sq_dists(x, assign, centroids):
    """||x[i] - centroids[assign[i]]||^2 (n,) float32 for x (n, d): one pass,
    where numpy's ``x - c[a]`` made two (n, d) temporaries (a k-means step with
    an empty cluster, docs384 25k points: ~0.19 s, mostly fresh pages)."""
    n, d = x.shape
    out = np.empty(n, np.float32)
    for i in range(n):
        c = assign[i]
        s = np.float32(0.0)
        for j in range(d):
            t = x[i, j] - centroids[c, j]
            s += t * t
        out[i] = s
    return out


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def assign_among(x, centroids, half_cnorm, prev, cand):
    """Nearest centroid of each point among the candidates of its previous cluster.

    x: (n, d) float32; centroids: (k, d) float32; half_cnorm: (k,) float32,
    0.5 ||c||^2; prev: (n,) int32, each point's cluster before the centroids
    moved; cand: (k, m) int32, the clusters to compare for a point of each
    cluster (the cluster itself among them), m a multiple of 4. Returns (n,) int32;
    of equal scores the candidate first in ``cand``'s row.

    The points are taken by previous cluster (a counting sort), so the points
    sharing a candidate list go four at a time against four candidates: 16
    sums share each load of a coordinate, and a candidate row read from cache
    serves four points. On docs384 (80k points, 1,024 lists, 64 candidates,
    one thread) 98 ms against 203 ms one point at a time, the same lists.
    """
    n, d = x.shape
    k, m = cand.shape
    start = np.zeros(k + 1, np.int64)
    for i in range(n):
        start[prev[i] + 1] += 1
    for p in range(k):
        start[p + 1] += start[p]
    order = np.empty(n, np.int64)
    fill = start[:k].copy()
    for i in range(n):
        p = prev[i]
        order[fill[p]] = i
        fill[p] += 1
    out = np.empty(n, np.int32)
    best = np.empty(4, np.float32)
    arg = np.empty(4, np.int32)
    for p in range(k):
        lo = start[p]
        hi = start[p + 1]
        for g in range(lo, hi, 4):
            # a short last group repeats its last point (scored twice, stored once)
            i0 = order[g]
            i1 = order[min(g + 1, hi - 1)]
            i2 = order[min(g + 2, hi - 1)]
            i3 = order[min(g + 3, hi - 1)]
            for r in range(4):
                best[r] = -np.inf
                arg[r] = p
            for t in range(0, m, 4):
                j0 = cand[p, t]
                j1 = cand[p, t + 1]
                j2 = cand[p, t + 2]
                j3 = cand[p, t + 3]
                s00 = s01 = s02 = s03 = np.float32(0.0)
                s10 = s11 = s12 = s13 = np.float32(0.0)
                s20 = s21 = s22 = s23 = np.float32(0.0)
                s30 = s31 = s32 = s33 = np.float32(0.0)
                for u in range(d):
                    c0 = centroids[j0, u]
                    c1 = centroids[j1, u]
                    c2 = centroids[j2, u]
                    c3 = centroids[j3, u]
                    x0 = x[i0, u]
                    x1 = x[i1, u]
                    x2 = x[i2, u]
                    x3 = x[i3, u]
                    s00 += x0 * c0
                    s01 += x0 * c1
                    s02 += x0 * c2
                    s03 += x0 * c3
                    s10 += x1 * c0
                    s11 += x1 * c1
                    s12 += x1 * c2
                    s13 += x1 * c3
                    s20 += x2 * c0
                    s21 += x2 * c1
                    s22 += x2 * c2
                    s23 += x2 * c3
                    s30 += x3 * c0
                    s31 += x3 * c1
                    s32 += x3 * c2
                    s33 += x3 * c3
                h0 = half_cnorm[j0]
                h1 = half_cnorm[j1]
                h2 = half_cnorm[j2]
                h3 = half_cnorm[j3]
                _keep_best(best, arg, 0, s00 - h0, s01 - h1, s02 - h2, s03 - h3, j0, j1, j2, j3)
                _keep_best(best, arg, 1, s10 - h0, s11 - h1, s12 - h2, s13 - h3, j0, j1, j2, j3)
                _keep_best(best, arg, 2, s20 - h0, s21 - h1, s22 - h2, s23 - h3, j0, j1, j2, j3)
                _keep_best(best, arg, 3, s30 - h0, s31 - h1, s32 - h2, s33 - h3, j0, j1, j2, j3)
            out[i0] = arg[0]
            out[i1] = arg[1]
            out[i2] = arg[2]
            out[i3] = arg[3]
    return out


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False, inline="always")
def _keep_best(best, arg, r, s0, s1, s2, s3, j0, j1, j2, j3):
    """Point r's best score and centroid so far, after four candidates' scores (in order)."""
    if s0 > best[r]:
        best[r] = s0
        arg[r] = j0
    if s1 > best[r]:
        best[r] = s1
        arg[r] = j1
    if s2 > best[r]:
        best[r] = s2
        arg[r] = j2
    if s3 > best[r]:
        best[r] = s3
        arg[r] = j3


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def residual_rows(x, rows, centroids, lists, out):
    """out[i] = x[rows[i]] - centroids[lists[i]] (rows empty: x[i]); x (n, d),
    centroids (k, d), out (m, d) float32. One pass, where numpy's gathers and
    subtraction made two (m, d) temporaries (~1.1 us a 384-d row)."""
    m, d = out.shape
    pick = rows.shape[0] > 0
    for i in range(m):
        src = rows[i] if pick else i
        l = lists[i]
        for j in range(d):
            out[i, j] = x[src, j] - centroids[l, j]
