"""The inverted-list layout of codes: slots grouped by list, as CSR arrays."""

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def build_lists(list_of_slot, nlist):
    """Group slots by list with a counting sort.

    list_of_slot: (cap,) int32, the list of each slot, -1 for a free slot.
    Returns offsets (nlist + 1,) int64 and members (n_live,) int32 so that the
    slots of list l are ``members[offsets[l]:offsets[l + 1]]``, ascending.
    """
    counts = np.zeros(nlist + 1, np.int64)
    for s in range(list_of_slot.shape[0]):
        l = list_of_slot[s]
        if l >= 0:
            counts[l + 1] += 1
    offsets = np.cumsum(counts)
    fill = offsets[:-1].copy()
    members = np.empty(offsets[-1], np.int32)
    for s in range(list_of_slot.shape[0]):
        l = list_of_slot[s]
        if l >= 0:
            members[fill[l]] = s
            fill[l] += 1
    return offsets, members
