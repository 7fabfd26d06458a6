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
