"""Exact scoring of gathered originals (the rescoring step)."""

import numpy as np
from numba import njit


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def dot_rows(xb, q):
    """Inner products of each row of xb (n, d) float32 with q (d,) float32 -> (n,) float32."""
    n, d = xb.shape
    out = np.empty(n, np.float32)
    for i in range(n):
        acc = np.float32(0.0)
        for j in range(d):
            acc += xb[i, j] * q[j]
        out[i] = acc
    return out


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def dot_rows_indexed(xb, rows, q):
    """Inner products of rows ``xb[rows[i]]`` with q -> (len(rows),) float32.

    Lets a batch of queries share one gathered block of originals.
    """
    n = rows.shape[0]
    d = xb.shape[1]
    out = np.empty(n, np.float32)
    for i in range(n):
        r = rows[i]
        acc = np.float32(0.0)
        for j in range(d):
            acc += xb[r, j] * q[j]
        out[i] = acc
    return out


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def half_sqnorms(xb):
    """0.5 * ||x||^2 of each row of xb (n, d) float32 -> (n,) float32."""
    n, d = xb.shape
    out = np.empty(n, np.float32)
    for i in range(n):
        acc = np.float32(0.0)
        for j in range(d):
            acc += xb[i, j] * xb[i, j]
        out[i] = 0.5 * acc
    return out


@njit(nogil=True, cache=True, boundscheck=False)
def ranked_rows(xb, rows, q, hsq):
    """Exact ranks of rows ``xb[rows[i]]`` for q, best first, in one call.

    rank = <x, q>, minus ``hsq[rows[i]]`` (0.5 ||x||^2, euclid) when hsq (len(xb),)
    float32 is not empty. Returns (order (n,) int64 into rows, ranks (n,) float32
    in that order); equal ranks keep their order in rows (a stable sort).
    """
    r = dot_rows_indexed(xb, rows, q)
    if hsq.shape[0] > 0:
        for i in range(rows.shape[0]):
            r[i] -= hsq[rows[i]]
    order = np.argsort(-r, kind="mergesort")
    return order, r[order]
