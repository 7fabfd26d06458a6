"""Numba kernels for product-quantizer training and encoding."""

import numpy as np
from numba import njit


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def pq_assign(xpad, codebooks):
    """Nearest codeword of each subvector.

    xpad: (n, M * dsub) float32; codebooks: (M, K, dsub) float32.
    Returns codes (n, M) uint8.
    """
    n = xpad.shape[0]
    M, K, dsub = codebooks.shape
    codes = np.empty((n, M), np.uint8)
    for i in range(n):
        for m in range(M):
            off = m * dsub
            best = np.inf
            arg = 0
            for c in range(K):
                dist = np.float32(0.0)
                for j in range(dsub):
                    t = xpad[i, off + j] - codebooks[m, c, j]
                    dist += t * t
                if dist < best:
                    best = dist
                    arg = c
            codes[i, m] = arg
    return codes


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def pq_update(xpad, codes, codebooks):
    """Move each codeword to the mean of the subvectors assigned to it, in place.

    Codewords left empty keep their position. Returns the number of empty ones.
    """
    n = xpad.shape[0]
    M, K, dsub = codebooks.shape
    sums = np.zeros((M, K, dsub), np.float64)
    counts = np.zeros((M, K), np.int64)
    for i in range(n):
        for m in range(M):
            c = codes[i, m]
            counts[m, c] += 1
            off = m * dsub
            for j in range(dsub):
                sums[m, c, j] += xpad[i, off + j]
    empty = 0
    for m in range(M):
        for c in range(K):
            if counts[m, c] > 0:
                for j in range(dsub):
                    codebooks[m, c, j] = sums[m, c, j] / counts[m, c]
            else:
                empty += 1
    return empty


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
def assign_among(x, centroids, half_cnorm, prev, cand):
    """Nearest centroid of each point among the candidates of its previous cluster.

    x: (n, d) float32; centroids: (k, d) float32; half_cnorm: (k,) float32,
    0.5 ||c||^2; prev: (n,) int32, each point's cluster before the centroids
    moved; cand: (k, m) int32, the clusters to compare for a point of each
    cluster (the cluster itself among them), m a multiple of 4. Returns (n,) int32.
    """
    n, d = x.shape
    m = cand.shape[1]
    out = np.empty(n, np.int32)
    for i in range(n):
        p = prev[i]
        best = -np.inf
        arg = p
        # four candidates at a time: four independent sums share each load of x
        for t in range(0, m, 4):
            j0 = cand[p, t]
            j1 = cand[p, t + 1]
            j2 = cand[p, t + 2]
            j3 = cand[p, t + 3]
            s0 = np.float32(0.0)
            s1 = np.float32(0.0)
            s2 = np.float32(0.0)
            s3 = np.float32(0.0)
            for u in range(d):
                xu = x[i, u]
                s0 += xu * centroids[j0, u]
                s1 += xu * centroids[j1, u]
                s2 += xu * centroids[j2, u]
                s3 += xu * centroids[j3, u]
            s0 -= half_cnorm[j0]
            s1 -= half_cnorm[j1]
            s2 -= half_cnorm[j2]
            s3 -= half_cnorm[j3]
            if s0 > best:
                best = s0
                arg = j0
            if s1 > best:
                best = s1
                arg = j1
            if s2 > best:
                best = s2
                arg = j2
            if s3 > best:
                best = s3
                arg = j3
        out[i] = arg
    return out
