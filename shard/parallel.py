"""Row blocks of a large array worked on in threads.

numpy's matmul and ufunc loops and our numba kernels (``nogil=True``) release
the GIL, so a write batch's assignment and encoding can use every core while
BLAS itself stays on one thread (for searches, see ``quiver/blas_threads.py``).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

import numpy as np

T = TypeVar("T")

#: threads for one batch's row blocks
WORKERS = max(1, min(4, os.cpu_count() or 1))


def map_row_blocks(fn: Callable[[int, int], T], n: int, min_rows: int) -> list[T]:
    """``fn(lo, hi)`` over contiguous ranges covering rows 0..n, each at least
    ``min_rows`` long (up to ``WORKERS`` of them, in threads); results in row order."""
    blocks = min(WORKERS, n // max(1, min_rows))
    if blocks <= 1:
        return [fn(0, n)]
    bounds = np.linspace(0, n, blocks + 1).astype(np.int64).tolist()
    with ThreadPoolExecutor(blocks) as pool:
        return list(pool.map(fn, bounds[:-1], bounds[1:]))


def matmul_rows(a: np.ndarray, b: np.ndarray, min_rows: int = 4096) -> np.ndarray:
    """a (n, k) @ b (k, m) -> (n, m) float32, row blocks of a in threads: BLAS
    is held to one thread (for searches), and a training's 20k x 384 x 384
    rotation is worth both cores."""
    out = np.empty((a.shape[0], b.shape[1]), np.float32)
    map_row_blocks(lambda lo, hi: np.matmul(a[lo:hi], b, out=out[lo:hi]), a.shape[0], min_rows)
    return out
