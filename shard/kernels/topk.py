"""A bounded min-heap over parallel arrays, for top-k selection inside kernels.

``scores`` (float32, size k) and ``idx`` (int64, size k) hold the k best seen so
far; the root ``scores[0]`` is the worst of them, so a candidate enters only if
it beats the root. Sentinels: score -inf, index -1.
"""

import numpy as np
from numba import njit


@njit(nogil=True, cache=True, inline="always")
def heap_push(scores, idx, size, s, i):
    """Offer (s, i) to a heap holding ``size`` items; return the new size."""
    k = scores.shape[0]
    if size < k:
        pos = size
        size += 1
    elif s > scores[0]:
        pos = 0
        # sift down from the root, leaving a hole for (s, i)
        while True:
            left = 2 * pos + 1
            if left >= k:
                break
            child = left
            right = left + 1
            if right < k and scores[right] < scores[left]:
                child = right
            if scores[child] >= s:
                break
            scores[pos] = scores[child]
            idx[pos] = idx[child]
            pos = child
        scores[pos] = s
        idx[pos] = i
        return size
    else:
        return size
    # sift up
    while pos > 0:
        parent = (pos - 1) // 2
        if scores[parent] <= s:
            break
        scores[pos] = scores[parent]
        idx[pos] = idx[parent]
        pos = parent
    scores[pos] = s
    idx[pos] = i
    return size


@njit(nogil=True, cache=True)
def heap_sorted(scores, idx, size):
    """Sort the first ``size`` heap items by score, best first, in place.

    Unused tail entries are reset to the sentinels (-inf, -1).
    """
    order = np.argsort(-scores[:size], kind="mergesort")
    s2 = scores[:size][order].copy()
    i2 = idx[:size][order].copy()
    scores[:size] = s2
    idx[:size] = i2
    for j in range(size, scores.shape[0]):
        scores[j] = -np.inf
        idx[j] = -1
