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


#: ``checked_rows`` verdicts
ROWS_OK, ROW_NOT_FINITE, ROW_ZERO = 0, 1, 2


@njit(nogil=True, cache=True, boundscheck=False)  # no fastmath: it would assume away NaN and Inf
def checked_rows(x, normalise, out):
    """Copy x (n, d) float32 into out (n, d), each row divided by its L2 norm
    when ``normalise``, checking every value on the way: one pass instead of
    numpy's isfinite, all, norm and divide (~15 us a query of fixed costs).

    Returns (verdict, row): (ROWS_OK, -1), or the first row that holds a NaN or
    an Inf (ROW_NOT_FINITE) or, when normalising, is all zeros (ROW_ZERO).
    """
    n, d = x.shape
    for i in range(n):
        acc = 0.0
        for j in range(d):
            v = x[i, j]
            if not np.isfinite(v):
                return ROW_NOT_FINITE, i
            acc += np.float64(v) * np.float64(v)
        if normalise:
            if acc == 0.0:
                return ROW_ZERO, i
            # in float64: the sum of float32 squares cannot overflow there, as it can in float32
            inv = 1.0 / np.sqrt(acc)
            for j in range(d):
                out[i, j] = np.float32(x[i, j] * inv)
        else:
            for j in range(d):
                out[i, j] = x[i, j]
    return ROWS_OK, -1
