"""Keep the shard's anonymous memory close to what its arrays hold.

glibc raises its mmap threshold as large blocks are freed, after which a
batch's temporaries (encodings, key lists) come from the heap and stay
resident when freed: a 1M-vector shard showed 575 MB RssAnon against 165 MB
of codes. Pinning the thresholds makes large temporaries mmap'd (returned on
free) and lets free() trim the heap top; ``release_free_memory`` trims the
rest after a retrain or a large batch.
"""

from __future__ import annotations

import ctypes
import threading
from contextlib import contextmanager

import numpy as np

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Outside write batches, blocks from this size up are mmap'd (returned to the system
#: on free), and free() gives the heap top back above the trim threshold.
MMAP_THRESHOLD = 256 << 10
TRIM_THRESHOLD = 4 << 20
#: While a large write batch runs, temporaries below 16 MB (a 10k-row block of the
#: batch) come from the heap instead, where each reuses the pages of the one before: as
#: fresh mmaps their pages faulted in one by one (~300k faults per 100k-vector docs384
#: ingest; ~190k with these settings). The batch ends with the thresholds back and the
#: heap trimmed. Larger settings fault less but keep more: 64 MB toggled like this left
#: a 1M-vector shard at 410 MB RssAnon after ingest, 64 MB kept on at 472 MB, these 347 MB
#: (256 KiB throughout: 337 MB).
BATCH_MMAP_THRESHOLD = 16 << 20
BATCH_TRIM_THRESHOLD = 32 << 20

try:
    _libc = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc: nothing to tune
    _libc = None


def _set_thresholds(mmap_threshold: int, trim_threshold: int) -> None:
    if _libc is not None and hasattr(_libc, "mallopt"):
        _libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
        _libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)


def tune_malloc() -> None:
    _set_thresholds(MMAP_THRESHOLD, TRIM_THRESHOLD)


def release_free_memory() -> None:
    if _libc is not None and hasattr(_libc, "malloc_trim"):
        _libc.malloc_trim(0)


_batches = 0
_batches_lock = threading.Lock()


@contextmanager
def batch_allocations():
    """Around a large write batch (see ``BATCH_MMAP_THRESHOLD``); nests, and any
    number of shards' batches may overlap: the last one out restores and trims."""
    global _batches
    with _batches_lock:
        _batches += 1
        if _batches == 1:
            _set_thresholds(BATCH_MMAP_THRESHOLD, BATCH_TRIM_THRESHOLD)
    try:
        yield
    finally:
        with _batches_lock:
            _batches -= 1
            last = _batches == 0
            if last:
                _set_thresholds(MMAP_THRESHOLD, TRIM_THRESHOLD)
        if last:
            release_free_memory()


#: bytes in a cache line (x86-64 and arm64 servers)
CACHE_LINE = 64


def aligned_full(shape, fill, dtype, align: int = CACHE_LINE) -> np.ndarray:
    """``np.full(shape, fill, dtype)`` starting on a cache line.

    numpy's large arrays start 16 bytes into one (malloc's chunk header), so a
    384-byte code row spans 7 lines instead of 6, a 128-byte link row 3 instead
    of 2, and a prefetch of a row's lines misses its last one: the HNSW walk,
    which reads rows at random, measured 5-9 % slower on docs384 (int8 / PQ x16).
    """
    dtype = np.dtype(dtype)
    shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    # zeros come from calloc, whose fresh pages stay untouched (out of RSS) until
    # written, as np.zeros' do: a store's spare capacity costs no memory
    buf = np.zeros(nbytes + align, np.uint8)
    start = -buf.ctypes.data % align
    out = buf[start:start + nbytes].view(dtype).reshape(shape)
    if fill != 0:
        out[...] = fill
    return out


def aligned_copy(a: np.ndarray, dtype=None, align: int = CACHE_LINE) -> np.ndarray:
    """A C-contiguous copy of ``a`` (as ``dtype``) starting on a cache line."""
    a = np.asarray(a)
    out = aligned_full(a.shape, 0, a.dtype if dtype is None else dtype, align)
    out[...] = a
    return out
