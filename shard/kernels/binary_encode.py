"""Encoding kernels for binary codes (see ``shard/quantization/binary.py``).

Encoding a batch is: unit residuals u = r / ||r|| (``unit_rows``), their
rotation P u (one BLAS product, outside), then each rotated coordinate's level
and the two factors (``binary_codes``). The numpy encoder these replace spent
~5 us a point in a dozen elementwise passes and temporaries around the ~3 us
product; these kernels make one pass over a row each.
"""

import numpy as np
from numba import njit


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def unit_rows(r, c, u, norm, rc):
    """Per row of residuals r (n, d) and their centroids c (n, d), float32:
    u (n, d) = r / ||r|| (zeros where r = 0), norm (n,) = ||r||, rc (n,) = <r, c>.
    Sums in float64."""
    n, d = r.shape
    for i in range(n):
        s = 0.0
        t = 0.0
        for j in range(d):
            v = np.float64(r[i, j])
            s += v * v
            t += v * c[i, j]
        nr = np.sqrt(s)
        norm[i] = nr
        rc[i] = t
        inv = np.float32(1.0 / nr) if nr > 0 else np.float32(0.0)
        for j in range(d):
            u[i, j] = r[i, j] * inv


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def binary_codes(up, crot, lists, norm, rc, plane_w, w0, step, codes, factors):
    """Bit planes and factors of rotated unit residuals.

    up: (n, D) float32, P u per point; crot: (nlist, D) float32, the rotated
    centroids, row ``lists[i]`` for point i; norm, rc: (n,) from ``unit_rows``;
    plane_w: (n_planes,) float32 and w0: the levels, ``xbar = w0 + sum_p
    plane_w[p] * bit_p``; step: 0 for the sign (one plane), else the width of
    the four uniform two-bit levels (level index ``clip(floor(up / step) + 2,
    0, 3)``). Fills codes (n, n_planes * W) uint64, plane p in words p*W ..
    p*W+W-1, and factors (n, 2) float32: ``<r, c> - f <xbar, P c>`` and
    ``f = ||r|| / <xbar, P u>`` (0 where either is not positive).
    """
    n, D = up.shape
    W = D // 64
    n_planes = plane_w.shape[0]
    two = step > 0
    inv_step = np.float32(1.0 / step) if two else np.float32(0.0)
    for i in range(n):
        l = lists[i]
        ip = 0.0
        xc = 0.0
        for w in range(W):
            lo_word = np.uint64(0)
            hi_word = np.uint64(0)
            for b in range(64):
                j = w * 64 + b
                v = up[i, j]
                if two:
                    k = int(np.floor(v * inv_step)) + 2
                    k = min(max(k, 0), 3)
                else:
                    k = 1 if v > 0 else 0
                xbar = w0
                if k & 1:
                    xbar += plane_w[0]
                    lo_word |= np.uint64(1) << np.uint64(b)
                if k & 2:
                    xbar += plane_w[1]
                    hi_word |= np.uint64(1) << np.uint64(b)
                ip += np.float64(xbar) * v
                xc += np.float64(xbar) * crot[l, j]
            codes[i, w] = lo_word
            if n_planes > 1:
                codes[i, W + w] = hi_word
        f = 0.0
        if norm[i] > 0 and ip > 1e-12:
            f = norm[i] / ip
        factors[i, 0] = rc[i] - f * xc
        factors[i, 1] = f
