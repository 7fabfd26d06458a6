"""Scan kernels for binary codes (1, 1.5 and 2 bits per dimension).

A code is ``n_planes`` bit planes of D bits (D a multiple of 64), stored as
``n_planes * W`` uint64 words (W = D / 64), word w of a plane holding
dimensions 64w .. 64w+63, least significant bit first. Level of dimension j:
``xbar_j = w0 + sum_p plane_w[p] * bit_p(j)``.

The rotated query ``v = P q`` is held at ``qbits`` bits once per query:
``v_j ~ lo + delta * qq_j``. With bit planes of qq,
``sum_j bit_p(j) * qq_j = sum_b 2^b popcount(plane_p & qplane_b)``, so the
estimate needs only AND and POPCNT:

    <xbar, v> = w0 * sum_j v_j + sum_p plane_w[p] * (lo * |plane_p| + delta * sum_j bit_p(j) qq_j)
    est<o, q> = base[l] + factors[o, 0] + factors[o, 1] * <xbar, v>

where base[l] = <c_l, q>, factors[o, 1] = ||r_o|| / <xbar_o, P u_o> (the
RaBitQ-style unbiasing factor) and factors[o, 0] = <r_o, c_l> -
factors[o, 1] * <xbar_o, P c_l>, which folds the list centroid out of the
query side: the estimate equals the one against the query residual q - c_l,
but the query planes are built once per query rather than once per list.
"""

import numpy as np
from numba import njit

from shard.kernels.bits import gather_columns, plane_sums
from shard.kernels.dot8 import address
from shard.kernels.layout import list_base8_row, list_base_row, nearest_row, probe_scratch
from shard.kernels.topk import heap_push, heap_sorted


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def quantize_query_planes(v, qbits, qplanes):
    """Hold the rotated residual v (D,) float32 at ``qbits`` bits as bit planes.

    qplanes: (qbits, W) uint64, filled. ``qbits == 1`` is the symmetric
    (Hamming) encoding: the sign of v, each at magnitude mean|v|.
    Returns (lo, delta, sum of the held values).
    """
    D = v.shape[0]
    W = D // 64
    if qbits == 1:
        qplanes[:, :] = 0
        a = np.float32(0.0)
        for j in range(D):
            a += abs(v[j])
        a = a / D
        lo = -a
        delta = 2 * a
        total = np.float32(0.0)
        for j in range(D):
            if v[j] > 0:
                qplanes[0, j >> 6] |= np.uint64(1) << np.uint64(j & 63)
                total += a
            else:
                total -= a
        return lo, delta, total
    vmin = v[0]
    vmax = v[0]
    for j in range(1, D):
        if v[j] < vmin:
            vmin = v[j]
        if v[j] > vmax:
            vmax = v[j]
    levels = (1 << qbits) - 1
    delta = (vmax - vmin) / levels
    if delta <= 0:
        delta = np.float32(1.0)
    inv = 1.0 / delta
    qq = np.empty(D, np.int64)
    qsum = 0
    for j in range(D):
        t = int((v[j] - vmin) * inv + 0.5)
        if t > levels:
            t = levels
        qq[j] = t
        qsum += t
    # one register per (plane, word): 64 shifts and ORs, no read-modify-write of memory
    for b in range(qbits):
        for w in range(W):
            word = np.uint64(0)
            for j in range(64):
                word |= np.uint64((qq[w * 64 + j] >> b) & 1) << np.uint64(j)
            qplanes[b, w] = word
    total = vmin * D + delta * qsum
    return vmin, delta, total


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False, inline="always")
def _block_dots(pc, stride, bstride, nblk, W, P, pq, qbits, plane_w, lo, delta, c0, dots, cnt, acc):
    """<xbar, v> of ``nblk`` blocks of 8 codes -> dots[:8 * nblk] float32.

    Word w of plane p of code i of block j is the uint64 at ``pc + j * bstride +
    (p * W + w) * stride + 8 * i`` (the blocked code array, or the gathering
    buffer); the query planes are at ``pq``. cnt and acc are int32 scratch of
    the same length.
    """
    n = 8 * nblk
    for i in range(n):
        dots[i] = c0
    for p in range(P):
        plane_sums(pc + p * W * stride, stride, bstride, W, nblk, pq, qbits, address(cnt), address(acc))
        wp = plane_w[p]
        for i in range(n):
            dots[i] += wp * (lo * np.float32(cnt[i]) + delta * np.float32(acc[i]))


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False, inline="always")
def _offer(hs, hi, size, dots, first, n, b0, factors, half_sqnorm, use_sqnorm, slot0, slots, bases):
    """Offer the estimates ``dots[first:first + n]`` of n codes to the heap: slot
    ``slot0 + i`` with list term b0 when slot0 >= 0, else slot ``slots[i]`` with
    term ``bases[i]``.
    Only an estimate above the heap's worst calls ``heap_push``; returns the
    heap's size."""
    k = hs.shape[0]
    thr = hs[0] if size == k else -np.inf
    for i in range(n):
        if slot0 >= 0:
            s = slot0 + i
            est = b0
        else:
            s = slots[i]
            est = bases[i]
        est += factors[s, 0] + factors[s, 1] * dots[first + i]
        if use_sqnorm:
            est -= half_sqnorm[s]
        if est > thr:
            size = heap_push(hs, hi, size, est, s)
            if size == k:
                thr = hs[0]
    return size


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False, inline="always")
def _gathered(hs, hi, size, waiting, picked, bases, pcodes, stride, bstride, PW, pbuf, W, P, pq, qbits, plane_w, lo,
              delta, c0, dots, cnt, acc, factors, half_sqnorm, use_sqnorm):
    """Score the ``waiting`` (1..8) gathered codes and offer them to the heap."""
    for j in range(waiting, 8):  # a short block repeats its first code
        picked[j] = picked[0]
    gather_columns(pcodes, stride, bstride, PW, address(picked), pbuf)
    _block_dots(pbuf, 64, 64 * PW, 1, W, P, pq, qbits, plane_w, lo, delta, c0, dots, cnt, acc)
    return _offer(hs, hi, size, dots, 0, waiting, np.float32(0.0), factors, half_sqnorm, use_sqnorm, -1, picked,
                  bases)


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def binary_scan(qrot, base, probes, offsets, members, codes, factors,
                half_sqnorm, use_sqnorm, plane_w, w0, qbits, out_scores, out_slots):
    """Top-k slots by estimated score over the probed lists, for m queries.

    qrot: (m, D) float32 rotated queries; base: (m, nlist) float32, <c_l, q>;
    probes: (m, nprobe) int32, -1 padded; offsets/members: the list layout;
    codes: (cap / 8, P * W, 8) uint64, blocked (word w of slot s at
    ``codes[s >> 3, w, s & 7]``: 8 slots' words side by side, a block of 8 slots
    contiguous); factors: (cap, 2) float32;
    half_sqnorm: (cap,) float32, 0.5 ||o||^2, subtracted when ``use_sqnorm``
    (euclid); plane_w: (P,) float32; qbits: 1, 4 or 8.
    out_scores (m, k) float32, out_slots (m, k) int64: filled best first.
    Returns counts (m,) int64, the number of valid entries per query.

    A run of 8 or more consecutive slots (a whole list, after compaction) is
    scored in place, a block of eight codes a vector (``bits.plane_sums``), the
    lanes of its first and last blocks that belong to other lists ignored; a
    run's memory is one contiguous range, which the hardware prefetcher follows
    as one stream (a layout of one row per word made six per list). Shorter
    runs (slots written since compaction) are gathered eight at a time across
    lists, each with its list's term, and scored from a small buffer.
    """
    m = qrot.shape[0]
    counts = np.zeros(m, np.int64)
    scratch = scan_scratch(offsets, qrot.shape[1], plane_w.shape[0], qbits)
    for qi in range(m):
        n = 0
        while n < probes.shape[1] and probes[qi, n] >= 0:
            n += 1
        counts[qi] = scan_one(qrot[qi], base[qi], probes[qi], n, offsets, members, codes, factors, half_sqnorm,
                              use_sqnorm, plane_w, w0, qbits, out_scores[qi], out_slots[qi], scratch)
    return counts


@njit(nogil=True, cache=True)
def scan_scratch(offsets, D, P, qbits):
    """``scan_one``'s scratch, allocated once per kernel call: (query planes,
    dots, cnt, acc, gathering buffer, picked slots, their list terms)."""
    nmax = 16  # a run of n slots spans at most n + 14 block lanes
    for l in range(offsets.shape[0] - 1):
        nmax = max(nmax, offsets[l + 1] - offsets[l] + 16)
    # plane rows padded to a multiple of 4 (the layout the query planes are written in)
    return (np.zeros((max(4, (qbits + 3) // 4 * 4), D // 64), np.uint64), np.empty(nmax, np.float32),
            np.empty(nmax, np.int32), np.empty(nmax, np.int32), np.empty((P * (D // 64), 8), np.uint64),
            np.empty(8, np.int64), np.empty(8, np.float32))


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False, inline="always")
def scan_one(v, base, lists, n_lists, offsets, members, codes, factors, half_sqnorm, use_sqnorm, plane_w, w0, qbits,
             hs, hi, scratch):
    """One query's top-k over lists[:n_lists] (``binary_scan``): v (D,) its
    rotated form, base (nlist,) its list terms; fills hs/hi (k,) best first and
    returns how many are valid."""
    qplanes, dots, cnt, acc, buf, picked, bases = scratch
    W = v.shape[0] // 64
    P = plane_w.shape[0]
    PW = P * W
    pcodes = address(codes)
    bstride = codes.strides[0]
    stride = codes.strides[1]
    pq = address(qplanes)
    pbuf = address(buf)
    size = 0
    waiting = 0
    lo, delta, total = quantize_query_planes(v, qbits, qplanes)
    c0 = w0 * total
    for pi in range(n_lists):
        l = lists[pi]
        b0 = base[l]
        t = offsets[l]
        end = offsets[l + 1]
        while t < end:
            a = members[t]
            e = end  # the run of consecutive slots from t: the whole list after compaction
            if members[end - 1] - a != end - 1 - t:
                e = t + 1
                while e < end and members[e] == members[e - 1] + 1:
                    e += 1
            n = e - t
            if n >= 8:
                first = a >> 3
                _block_dots(pcodes + first * bstride, stride, bstride, ((a + n - 1) >> 3) - first + 1, W, P, pq,
                            qbits, plane_w, lo, delta, c0, dots, cnt, acc)
                size = _offer(hs, hi, size, dots, a & 7, n, b0, factors, half_sqnorm, use_sqnorm, a, picked, bases)
            else:
                for j in range(t, e):
                    picked[waiting] = members[j]
                    bases[waiting] = b0
                    waiting += 1
                    if waiting == 8:
                        size = _gathered(hs, hi, size, waiting, picked, bases, pcodes, stride, bstride, PW, pbuf,
                                         W, P, pq, qbits, plane_w, lo, delta, c0, dots, cnt, acc, factors,
                                         half_sqnorm, use_sqnorm)
                        waiting = 0
            t = e
    if waiting:
        size = _gathered(hs, hi, size, waiting, picked, bases, pcodes, stride, bstride, PW, pbuf, W, P, pq, qbits,
                         plane_w, lo, delta, c0, dots, cnt, acc, factors, half_sqnorm, use_sqnorm)
    heap_sorted(hs, hi, size)
    return size


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def binary_ivf_search(Q, rot, rscale, cent, cscale, probe_half, probe_scale, list_sizes, nprobe, min_candidates,
                      offsets, members, codes, factors, half_sqnorm, use_sqnorm, plane_w, w0, qbits,
                      out_scores, out_slots):
    """A whole IVF candidate search of m queries in one call: per query, the
    rotation (rot (D, d) int16, ``layout.list_base_row``), the list terms
    (cent (nlist, d) uint8, ``layout.list_base8_row``), the lists to probe
    (``layout.nearest_row``) and their scan (``scan_one``), with rscale and
    cscale the held arrays' per-dimension scales. The same arithmetic as the
    engine's separate calls (``CodeStore.query_base``, ``select_probes``,
    ``BinaryQuantizer.prepare``, ``binary_scan``) and the same result, without
    their ~20 us a query of Python and temporaries. Returns counts (m,)."""
    m, d = Q.shape
    D = rot.shape[0]
    nlist = cent.shape[0]
    v = np.empty(D, np.float32)
    base = np.empty(nlist, np.float32)
    qs = np.empty(d, np.float32)
    q8 = np.empty(d, np.int8)
    ones = np.full((1, d), 128, np.uint8)
    rank, key, bucket, bcount, bsize, cand, tmp = probe_scratch(nlist)
    scratch = scan_scratch(offsets, D, plane_w.shape[0], qbits)
    counts = np.zeros(m, np.int64)
    for qi in range(m):
        for j in range(d):
            qs[j] = Q[qi, j] * rscale[j]
        list_base_row(rot, qs, np.float32(0.0), v)
        for j in range(d):
            qs[j] = Q[qi, j] * cscale[j]
        list_base8_row(cent, qs, np.float32(0.0), base, q8, ones)
        n = nearest_row(base, probe_half, list_sizes, nprobe, min_candidates, probe_scale, rank, key, bucket,
                        bcount, bsize, cand, tmp)
        counts[qi] = scan_one(v, base, cand, n, offsets, members, codes, factors, half_sqnorm, use_sqnorm, plane_w,
                              w0, qbits, out_scores[qi], out_slots[qi], scratch)
    return counts
