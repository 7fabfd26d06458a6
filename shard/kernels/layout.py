"""The inverted-list layout of codes: slots grouped by list, as CSR arrays."""

import numpy as np
from numba import njit

from shard.kernels.dot8 import held_query, row_score


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


#: value buckets of the rank range the probe selection counts points in
_PROBE_BUCKETS = 1024


@njit(nogil=True, cache=True, boundscheck=False)
def _rank_sort(key, cand, n, tmp):
    """Sort ``cand[:n]`` by ``key[cand]`` ascending, stably (an LSD radix sort
    over the four bytes: no data-dependent branches, unlike a comparison sort
    of a few hundred random ranks). ``tmp``: scratch of at least n."""
    hist = np.empty(256, np.int64)
    src, dst = cand, tmp
    for shift in range(0, 32, 8):
        hist[:] = 0
        for j in range(n):
            hist[(key[src[j]] >> shift) & 255] += 1
        acc = 0
        for b in range(256):
            c = hist[b]
            hist[b] = acc
            acc += c
        for j in range(n):
            v = src[j]
            d = (key[v] >> shift) & 255
            dst[hist[d]] = v
            hist[d] += 1
        src, dst = dst, src
    # four passes: the sorted order is back in cand


@njit(nogil=True, cache=True)
def probe_scratch(nlist):
    """(rank, key, bucket, bcount, bsize, cand, tmp): ``nearest_row``'s scratch
    for nlist lists, allocated once per kernel call."""
    return (np.empty(nlist, np.float32), np.empty(nlist, np.uint32), np.empty(nlist, np.int32),
            np.empty(_PROBE_BUCKETS, np.int64), np.empty(_PROBE_BUCKETS, np.int64),
            np.empty(nlist, np.int32), np.empty(nlist, np.int32))


@njit(nogil=True, cache=True, boundscheck=False, inline="always")
def nearest_row(qc, half_cnorm, list_sizes, nprobe, min_candidates, scale, rank, key, bucket, bcount, bsize,
                cand, tmp):
    """One query's lists to probe (``nearest_lists``): qc (nlist,) its inner
    products with the centroids. Leaves them in cand[:n], nearest first, and
    returns n. The other arrays are scratch (``probe_scratch``)."""
    nlist = qc.shape[0]
    nprobe = min(nprobe, nlist)
    scaled = scale.shape[0] > 0
    B = _PROBE_BUCKETS
    for l in range(nlist):
        r = qc[l]
        if scaled:
            r = r * scale[l]
        rank[l] = r - half_cnorm[l]
    hi = rank[0]
    lo = rank[0]
    for l in range(1, nlist):
        hi = max(hi, rank[l])
        lo = min(lo, rank[l])
    width = np.float64(hi) - np.float64(lo)
    inv = (B - 1) / width if width > 0 else 0.0
    bcount[:] = 0
    bsize[:] = 0
    for l in range(nlist):
        r = rank[l]
        # monotone in r: a nearer list never lands in a later bucket
        b = int((np.float64(hi) - np.float64(r)) * inv)
        b = min(max(b, 0), B - 1)
        bucket[l] = b
        bcount[b] += 1
        bsize[b] += list_sizes[l]
        # descending float order as ascending uint32 (-0.0 counted as 0.0)
        u = np.float32(r + np.float32(0.0)).view(np.uint32)
        u = ~u if u >> 31 else u | np.uint32(0x80000000)
        key[l] = ~u
    cut = B - 1
    cnt = 0
    total = 0
    for b in range(B):
        cnt += bcount[b]
        total += bsize[b]
        if cnt >= nprobe and total >= min_candidates:
            cut = b
            break
    n = 0
    for l in range(nlist):
        cand[n] = l
        n += bucket[l] <= cut
    _rank_sort(key, cand, n, tmp)
    total = 0
    for j in range(n):
        total += list_sizes[cand[j]]
        if j + 1 >= nprobe and total >= min_candidates:
            return j + 1
    return n


@njit(nogil=True, cache=True, boundscheck=False)
def nearest_lists(qc, half_cnorm, list_sizes, nprobe, min_candidates, scale):
    """Lists to probe per query, nearest first.

    qc: (m, nlist) float32 inner products of queries and centroids;
    half_cnorm: (nlist,) float32, subtracted from the rank; list_sizes: (nlist,)
    int64; scale: (nlist,) float32 multiplying qc before that (cosine: 1 / ||c||),
    or empty for none. The rank of list l is ``qc[l] * scale[l] - half_cnorm[l]``
    (higher is nearer; equal ranks: the lower list number first).
    Takes the ``nprobe`` nearest lists, and more while they hold fewer than
    ``min_candidates`` points. Returns (m, width) int32, -1 padded.

    Per query, without sorting every list: the rank range is cut into value
    buckets, counting lists and points per bucket; the first bucket (from the
    top) at which the lists so far are enough holds the cut, so only the lists
    up to it are sorted (a radix sort of their ranks) and the exact cut taken.
    """
    m, nlist = qc.shape
    rank, key, bucket, bcount, bsize, cand, tmp = probe_scratch(nlist)
    need = np.zeros(m, np.int64)
    cap = min(nlist, 2 * nprobe)
    flat = np.empty(m * cap, np.int32)
    for qi in range(m):
        cnt = nearest_row(qc[qi], half_cnorm, list_sizes, nprobe, min_candidates, scale, rank, key, bucket,
                          bcount, bsize, cand, tmp)
        need[qi] = cnt
        if cnt > cap:
            grown = np.empty(m * cnt, np.int32)
            for a in range(qi):
                for j in range(need[a]):
                    grown[a * cnt + j] = flat[a * cap + j]
            flat = grown
            cap = cnt
        for j in range(cnt):
            flat[qi * cap + j] = cand[j]
    width_out = need.max()
    out = np.full((m, width_out), -1, np.int32)
    for qi in range(m):
        for j in range(need[qi]):
            out[qi, j] = flat[qi * cap + j]
    return out


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False, inline="always")
def list_base_row(cq, qs, c0, out):
    """out (nlist,) = c0 + cq @ qs: one query's ``list_base``."""
    for l in range(cq.shape[0]):
        acc = np.float32(0.0)
        for j in range(qs.shape[0]):
            acc += qs[j] * np.float32(cq[l, j])
        out[l] = c0 + acc


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def list_base(cq, qs, const, out):
    """out (m, nlist) = const[:, None] + qs @ cq.T: the per-list term of every
    score, from centroids held as int16 (cq (nlist, d), each dimension scaled
    by the caller into qs = q * scale). The centroids are read once a query
    and mostly from DRAM (a scan or a graph walk evicts them): half the bytes
    of float32 make this about twice as fast as BLAS on the float32
    centroids, at a rounding error ~1e-5 of a score, far below any code's own."""
    for i in range(qs.shape[0]):
        list_base_row(cq, qs[i], const[i], out[i])


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False, inline="always")
def list_base8_row(cu, qs, c0, out, q8, ones):
    """out (nlist,) = c0 + (cu - 128) @ qs: one query's ``list_base8``.
    q8 (d,) int8 scratch; ones (1, d) uint8 filled with 128."""
    held = held_query(qs, q8, cu)
    shift = row_score(held, ones, 0)  # the offset's share: <qs, 128>, as held
    for l in range(cu.shape[0]):
        out[l] = c0 + row_score(held, cu, l) - shift


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def list_base8(cu, qs, const, out):
    """out (m, nlist) = const[:, None] + qs @ (cu - 128).T: ``list_base`` from
    centroids held in one byte a dimension (cu (nlist, d) uint8, offset by 128;
    each dimension scaled by the caller into qs = q * scale). Each query row is
    held in signed bytes (``dot8.held_query``) and a centroid row scores in one
    ``vpdpbusd`` a 64 dimensions on VNNI hosts: a quarter of the bytes of the
    float32 centroids and an eighth of the instructions of ``list_base``, at a
    rounding error ~1e-3 of a score."""
    d = qs.shape[1]
    q8 = np.empty(d, np.int8)
    ones = np.full((1, d), 128, np.uint8)
    for i in range(qs.shape[0]):
        list_base8_row(cu, qs[i], const[i], out[i], q8, ones)
