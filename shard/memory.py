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

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

try:
    _libc = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc: nothing to tune
    _libc = None


def tune_malloc() -> None:
    if _libc is not None and hasattr(_libc, "mallopt"):
        _libc.mallopt(_M_MMAP_THRESHOLD, 256 * 1024)
        _libc.mallopt(_M_TRIM_THRESHOLD, 4 * 1024 * 1024)


def release_free_memory() -> None:
    if _libc is not None and hasattr(_libc, "malloc_trim"):
        _libc.malloc_trim(0)
