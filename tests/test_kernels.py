"""Every numba kernel held to a plain numpy reference."""

import numpy as np
import pytest

from shard.index import ivf
from shard.index.code_store import CodeStore
from shard.kernels.dot8 import HAS_VNNI, byte_query
from shard.kernels.exact import (ROW_NOT_FINITE, ROW_ZERO, ROWS_OK, checked_rows, dot_rows, dot_rows_indexed,
                                 half_sqnorms, ranked_rows)
from shard.kernels.kmeans import assign_among, residual_rows
from shard.kernels.layout import build_lists
from shard.kernels.topk import heap_push, heap_sorted
from shard.quantization.binary import BinaryQuantizer
from shard.quantization.product import ProductQuantizer
from shard.kernels.scalar import order_statistics
from shard.quantization.scalar import ScalarQuantizer, column_quantiles
from numba import njit

QUANTIZERS = [
    ("scalar", lambda d: ScalarQuantizer(d, 0.99)),
    ("scalar-q1", lambda d: ScalarQuantizer(d, 1.0)),
    *[(f"binary-{e}-{q}", (lambda e, q: lambda d: BinaryQuantizer(d, e, q, seed=1))(e, q))
      for e in ("one_bit", "one_and_half_bits", "two_bits")
      for q in ("binary", "scalar4bits", "scalar8bits")],
    *[(f"product-{c}", (lambda c: lambda d: ProductQuantizer(d, c, seed=1))(c))
      for c in ("x4", "x8", "x16", "x32", "x64")],
]
DIMS = [64, 100, 128, 37]


def clustered(n, d, seed, centers=8):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, d)).astype(np.float32) * 2
    return (c[rng.integers(0, centers, n)] + rng.standard_normal((n, d))).astype(np.float32)


@pytest.mark.parametrize("name,make", QUANTIZERS, ids=[q[0] for q in QUANTIZERS])
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("use_sqnorm", [False, True], ids=["ip", "euclid"])
@pytest.mark.parametrize("compacted", [False, True], ids=["scattered", "runs"])
def test_scan_kernel_matches_reference(name, make, dim, use_sqnorm, compacted):
    """Kernels see lists both as scattered slots (fresh writes) and as runs of
    consecutive slots (after the store compacts)."""
    x = clustered(600, dim, seed=dim)
    q = clustered(3, dim, seed=dim + 1)
    centroids = ivf.kmeans(x, 4, seed=0)
    lists = ivf.assign(x, centroids)
    quant = make(dim)
    quant.fit(x - centroids[lists])
    codes, factors = quant.encode(x - centroids[lists], centroids[lists])
    store = CodeStore(quant.code_width, quant.code_dtype, quant.n_factors, len(centroids),
                      blocked=getattr(quant, "blocked", False))
    hsq = 0.5 * (x * x).sum(1)
    order = np.random.default_rng(dim).permutation(len(x))  # slots not grouped by list
    store.upsert(np.arange(len(x), dtype=np.uint64)[order], lists[order], codes[order], factors[order],
                 hsq.astype(np.float32)[order])
    if compacted:
        store.compact()
    offsets, members, _ = store.layout()

    ref = quant.reference_scores(q, lists, centroids, codes, factors)
    if use_sqnorm:
        ref = ref - hsq[None, :]
    prepared, const = quant.prepare(q)
    base = np.ascontiguousarray(q @ centroids.T + const[:, None], np.float32)
    probes = np.tile(np.arange(len(centroids), dtype=np.int32), (len(q), 1))
    k = 25
    out_s = np.full((len(q), k), -np.inf, np.float32)
    out_i = np.full((len(q), k), -1, np.int64)
    counts = quant.scan(prepared, base, probes, offsets, members, store.codes, store.factors,
                        store.half_sqnorm, use_sqnorm, out_s, out_i)
    assert (counts == k).all()
    scale = np.abs(ref).max()
    for qi in range(len(q)):
        slots = out_i[qi]
        ids = store.slot_ids[slots].astype(np.int64)
        tol = 2e-3 * scale
        if name.startswith("product"):  # the table is summed in bytes: each entry within half a step
            tol += prepared.shape[1] * 0.5 * np.ptp(prepared[qi], axis=1).max() / 255
        want = ref[qi]
        if name.startswith("scalar") and HAS_VNNI:
            # the kernel holds the query in signed bytes (dot8.py): the twin scores that query
            q8 = np.empty(dim, np.int8)
            step = byte_query(prepared[qi], q8)
            c64 = codes.astype(np.float64)
            want = want - c64 @ prepared[qi] + step * (c64 @ q8)
            tol = 2e-6 * scale  # exact integer sums: float rounding only (~5e-7), under one unit (~1e-5)
        # the kernel's score of each returned point equals the reference's
        np.testing.assert_allclose(out_s[qi], want[ids], rtol=0, atol=tol)
        # and it returned a true top-k of the reference scores (up to ties within tolerance)
        kth = np.sort(want)[::-1][k - 1]
        assert want[ids].min() >= kth - 2 * tol
        assert np.all(np.diff(out_s[qi]) <= 0)


def test_exact_kernels_match_numpy():
    rng = np.random.default_rng(0)
    for d in (1, 7, 64, 384):
        xb = rng.standard_normal((50, d)).astype(np.float32)
        q = rng.standard_normal(d).astype(np.float32)
        np.testing.assert_allclose(dot_rows(xb, q), xb @ q, rtol=1e-4, atol=1e-4)
        rows = rng.integers(0, 50, 20)
        np.testing.assert_allclose(dot_rows_indexed(xb, rows, q), xb[rows] @ q, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(half_sqnorms(xb), 0.5 * (xb * xb).sum(1), rtol=1e-4)


@pytest.mark.parametrize("d", [1, 7, 64, 384])
def test_checked_rows_matches_numpy(d):
    """Copies or normalises like numpy, and names the first bad row as numpy's
    isfinite / norm would find it."""
    rng = np.random.default_rng(d)
    x = (rng.standard_normal((40, d)) * 10.0 ** rng.integers(-3, 4, (40, 1))).astype(np.float32)
    out = np.empty_like(x)
    assert checked_rows(x, False, out) == (ROWS_OK, -1)
    np.testing.assert_array_equal(out, x)
    assert checked_rows(x, True, out) == (ROWS_OK, -1)
    np.testing.assert_allclose(out, x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True), rtol=1e-6,
                               atol=1e-7)
    big = np.full((1, d), 3e38, np.float32)  # squares overflow float32: still a unit vector
    checked_rows(big, True, out[:1])
    np.testing.assert_allclose(np.linalg.norm(out[0].astype(np.float64)), 1.0, rtol=1e-6)
    for bad, want in ((np.nan, ROW_NOT_FINITE), (np.inf, ROW_NOT_FINITE), (-np.inf, ROW_NOT_FINITE)):
        y = x.copy()
        y[17, d // 2] = bad
        y[30, 0] = bad
        assert checked_rows(y, True, out) == (want, 17)
        assert checked_rows(y, False, out) == (want, 17)
    y = x.copy()
    y[5] = 0.0
    assert checked_rows(y, True, out) == (ROW_ZERO, 5)
    assert checked_rows(y, False, out) == (ROWS_OK, -1)  # zero rows are fine unless normalising


@pytest.mark.parametrize("euclid", [False, True], ids=["ip", "euclid"])
def test_ranked_rows_matches_argsort(euclid):
    rng = np.random.default_rng(3)
    xb = rng.standard_normal((200, 37)).astype(np.float32)
    xb[50] = xb[7]  # an exact tie: keeps its order in rows
    q = rng.standard_normal(37).astype(np.float32)
    hsq = half_sqnorms(xb) if euclid else np.zeros(0, np.float32)
    for rows in (np.arange(200), rng.permutation(200)[:60], np.array([50, 3, 7]), np.zeros(0, np.int64)):
        order, r = ranked_rows(xb, rows, q, hsq)
        ref = dot_rows_indexed(xb, rows, q)
        if euclid:
            ref = ref - hsq[rows]
        want = np.argsort(-ref, kind="stable")
        np.testing.assert_array_equal(order, want)
        np.testing.assert_array_equal(r, ref[want])


def test_build_lists_matches_argsort():
    rng = np.random.default_rng(1)
    lists = rng.integers(-1, 9, 1000).astype(np.int32)
    offsets, members = build_lists(lists, 9)
    for l in range(9):
        np.testing.assert_array_equal(members[offsets[l]:offsets[l + 1]], np.flatnonzero(lists == l))
    assert offsets[-1] == (lists >= 0).sum()


@njit(cache=True)
def _heap_topk(values, k):
    s = np.full(k, -np.inf, np.float32)
    i = np.full(k, -1, np.int64)
    size = 0
    for j in range(values.shape[0]):
        size = heap_push(s, i, size, values[j], j)
    heap_sorted(s, i, size)
    return s, i, size


def _probes_reference(rank, sizes, nprobe, min_candidates):
    """Lists by rank, highest first (ties: lower list first), cut at the first
    prefix of at least nprobe lists holding min_candidates points."""
    order = np.lexsort((np.arange(len(rank)), -rank.astype(np.float64)))
    total = np.cumsum(sizes[order])
    ok = np.flatnonzero((np.arange(1, len(rank) + 1) >= nprobe) & (total >= min_candidates))
    return order[: ok[0] + 1 if len(ok) else len(rank)]


@pytest.mark.parametrize("nlist", [2, 7, 64, 1024, 3000])
@pytest.mark.parametrize("scaled", [False, True], ids=["plain", "scaled"])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_select_probes_matches_sort(nlist, scaled, ties):
    rng = np.random.default_rng(nlist)
    m = 5
    qc = rng.standard_normal((m, nlist)).astype(np.float32)
    if ties:  # many equal ranks, and -0.0 beside 0.0
        qc = np.round(qc, 1).astype(np.float32)
        qc[0, : nlist // 2] = -0.0
    half = (rng.random(nlist) * 0.5).astype(np.float32) * (not ties)
    scale = (rng.random(nlist) + 0.5).astype(np.float32) if scaled else None
    sizes = rng.integers(0, 40, nlist)
    sizes[rng.random(nlist) < 0.2] = 0
    for nprobe, want in [(1, 0), (4, 50), (8, 20 * nlist), (3, 10 ** 9), (nlist + 5, 1)]:
        got = ivf.select_probes(qc, half, sizes, nprobe, want, scale)
        rank = (qc if scale is None else qc * scale) - half
        refs = [_probes_reference(rank[i], sizes, nprobe, want) for i in range(m)]
        assert got.shape == (m, max(len(r) for r in refs))
        for i, ref in enumerate(refs):
            np.testing.assert_array_equal(got[i, : len(ref)], ref)
            assert (got[i, len(ref):] == -1).all()


@pytest.mark.parametrize("n,k", [(0, 5), (3, 5), (100, 1), (1000, 37)])
def test_heap_topk_matches_sort(n, k):
    v = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    s, i, size = _heap_topk(v, k)
    assert size == min(n, k)
    np.testing.assert_array_equal(s[:size], np.sort(v)[::-1][:size])
    np.testing.assert_array_equal(v[i[:size]], s[:size])


@pytest.mark.parametrize("n,d", [(1, 3), (2, 16), (9, 17), (1000, 33), (5000, 384)])
def test_order_statistics_match_sort(n, d):
    rng = np.random.default_rng(n + d)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[:, 0] = 2.5  # a constant column
    x[:, 1] = np.round(x[:, 1] * 2)  # a few values, many ties: a bin of equal values
    if d > 2:
        x[:, 2] *= 1e6  # wide range
        x[: n // 2, 2] = 0.0
    ranks = np.unique(np.array([0, n - 1, n // 2, n // 3, max(0, n - 2), n // 200], np.int64))
    out = np.empty((d, len(ranks)), np.float32)
    order_statistics(x, ranks, out)
    assert np.array_equal(out, np.sort(x, axis=0)[ranks].T)
    qs = [0.0, 0.005, 0.5, 0.995, 1.0]
    assert np.allclose(column_quantiles(x, qs), np.quantile(x, qs, axis=0), rtol=1e-6, atol=1e-6)


def test_residual_rows_match_numpy():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 37)).astype(np.float32)
    c = rng.standard_normal((6, 37)).astype(np.float32)
    lists = rng.integers(0, 6, 50).astype(np.int32)
    out = np.empty_like(x)
    residual_rows(x, np.zeros(0, np.int64), c, lists, out)
    assert np.array_equal(out, x - c[lists])
    rows = np.array([4, 4, 0, 49], np.int64)
    some = np.empty((4, 37), np.float32)
    residual_rows(x, rows, c, lists[rows], some)
    assert np.array_equal(some, x[rows] - c[lists[rows]])


@pytest.mark.parametrize("d", [1, 7, 64, 100, 384])
def test_scalar_encode_kernel_matches_numpy(d):
    rng = np.random.default_rng(d)
    x = rng.standard_normal((3000, d)).astype(np.float32)
    q = ScalarQuantizer(d)
    q.fit(x[:1000])
    x[0] = 1e6  # clipped high
    x[1] = -1e6  # clipped low
    x[2] = q.lo + q.step * np.float32(3.5)  # half-way between codes: rounds to even
    x[3] = q.lo + q.step * np.float32(254.5)
    codes, _ = q.encode(x, None)
    ref, _ = q.reference_encode(x, None)
    assert np.array_equal(codes, ref)
    assert (codes[0] == 255).all() and (codes[1] == 0).all()


@pytest.mark.parametrize("dim", [37, 64])
@pytest.mark.parametrize("n", [500, 7])
def test_assign_among_matches_reference(dim, n):
    """The near assignment is the nearest centroid among each point's candidates
    (500 points: lists of ~12, groups of four with short tails; 7: most lists empty)."""
    x = clustered(n, dim, seed=dim)
    c = clustered(40, dim, seed=dim + 1)
    cand, half = ivf.centroid_neighbours(c, 8)
    prev = np.random.default_rng(dim).integers(0, 40, len(x)).astype(np.int32)
    got = assign_among(x, c, half, prev, cand)
    d2 = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    want = np.array([cand[p][np.argmin(d2[i, cand[p]])] for i, p in enumerate(prev)])
    np.testing.assert_array_equal(got, want)
    # every centroid is among its own neighbours
    assert all(l in cand[l] for l in range(len(c)))


def test_assigned_sq_dists_matches_numpy():
    from shard.kernels.kmeans import assigned_sq_dists

    x = clustered(300, 37, seed=7)
    c = clustered(20, 37, seed=8)
    a = np.random.default_rng(7).integers(0, 20, len(x)).astype(np.int32)
    np.testing.assert_allclose(assigned_sq_dists(x, a, c), ((x - c[a]) ** 2).sum(1), rtol=1e-5)


def test_assign_matches_brute_force():
    x = clustered(9000, 24, seed=3)  # more than one chunk
    c = clustered(50, 24, seed=4)
    want = np.argmin(((x[:, None, :] - c[None, :, :]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(ivf.assign(x, c), want)


def test_kmeans_warm_start_does_not_lose_ground():
    """From a previous run's centroids, the (shorter) warm run ends no worse than them."""
    x = clustered(4000, 32, seed=5, centers=40)

    def err(c):
        return float(((x - c[ivf.assign(x, c)]) ** 2).sum())

    cold = ivf.kmeans(x[:1500], 128, seed=0)
    warm = ivf.kmeans(x, 128, seed=0, init=cold)
    assert warm.shape == cold.shape and warm.dtype == np.float32
    assert err(warm) <= err(cold)


def test_kmeans_warm_start_takes_the_lists_it_is_given():
    """A warm start given each point's nearest initial centroid (a shard's lists) skips
    computing that assignment and ends where computing it would have."""
    x = clustered(4000, 32, seed=6, centers=40)
    cold = ivf.kmeans(x[:1500], 128, seed=0)
    held = ivf.assign(x, cold)
    given = held.copy()
    c = ivf.kmeans(x, 128, seed=0, init=cold, labels=given)
    np.testing.assert_array_equal(c, ivf.kmeans(x, 128, seed=0, init=cold))
    np.testing.assert_array_equal(given, held)  # not written into
    # and the lists are taken, not recomputed: other lists, another start
    other = ivf.kmeans(x, 128, seed=0, init=cold, labels=((held + 1) % 128).astype(np.int32))
    assert not np.array_equal(other, c)


@pytest.mark.parametrize("n", [1, 17, 500])
@pytest.mark.parametrize("dsub", [1, 2, 4, 8, 16])
def test_pq_assign_matches_reference(dsub, n):
    """Each subvector gets a codeword at the least distance (ties aside: the kernel
    ranks by <x, c> - |c|^2 / 2, the reference by the distance itself), for blocks
    of 64 points that are full, partial, and nearly empty."""
    from shard.kernels.kmeans import pq_assign, pq_assign_reference

    rng = np.random.default_rng(dsub)
    M = 48 // dsub
    x = rng.standard_normal((n, M * dsub)).astype(np.float32)
    cb = rng.standard_normal((M, 256, dsub)).astype(np.float32)
    got, ref = pq_assign(x, cb).astype(np.int64), pq_assign_reference(x, cb).astype(np.int64)
    sub = x.reshape(len(x), M, dsub)
    m = np.arange(M)[None, :]
    d_got = ((sub - cb[m, got]) ** 2).sum(-1)
    d_ref = ((sub - cb[m, ref]) ** 2).sum(-1)
    np.testing.assert_allclose(d_got, d_ref, rtol=1e-4, atol=1e-4)
    assert (got == ref).mean() > 0.99


@pytest.mark.parametrize("dsub", [1, 2, 3, 4, 8, 16])
def test_pq_update_moves_codewords_to_their_means(dsub):
    """Each codeword moves to the mean of its subvectors (the widths with a
    specialised loop and one without); a codeword with none stays put."""
    from shard.kernels.kmeans import pq_update

    rng = np.random.default_rng(dsub)
    M, K, n = 5, 256, 3000
    x = rng.standard_normal((n, M * dsub)).astype(np.float32)
    codes = rng.integers(0, 200, (n, M)).astype(np.uint8)  # codewords 200..255 left empty
    cb = rng.standard_normal((M, K, dsub)).astype(np.float32)
    want = cb.copy()
    for m in range(M):
        for c in np.unique(codes[:, m]):
            want[m, c] = x[codes[:, m] == c, m * dsub:(m + 1) * dsub].astype(np.float64).mean(0)
    empty = pq_update(x, codes, cb)
    assert empty == int(sum(K - len(np.unique(codes[:, m])) for m in range(M)))
    np.testing.assert_allclose(cb, want, rtol=1e-6, atol=1e-6)


def test_pq_assign_takes_views_and_refuses_other_widths():
    """Strided inputs are copied to the contiguous layout the kernel addresses;
    a subspace width without a kernel is an error, not a wrong answer."""
    from shard.kernels.kmeans import pq_assign, pq_assign_reference

    rng = np.random.default_rng(5)
    x = rng.standard_normal((90, 64)).astype(np.float32)
    cb = rng.standard_normal((8, 256, 8)).astype(np.float32)
    view = x[::2, :]  # rows not adjacent
    books = np.ascontiguousarray(cb.transpose(1, 0, 2)).transpose(1, 0, 2)  # (M, K, dsub), not C-ordered
    assert not view.flags.c_contiguous and not books.flags.c_contiguous
    got = pq_assign(view, books)
    assert (got == pq_assign_reference(view, cb)).mean() > 0.99
    with pytest.raises(ValueError, match="dimensions"):
        pq_assign(rng.standard_normal((4, 12)).astype(np.float32), rng.standard_normal((4, 256, 3)).astype(np.float32))


@pytest.mark.parametrize("dsub,d", [(1, 37), (2, 64), (3, 7), (4, 384), (4, 382), (5, 23), (8, 100), (16, 384)])
def test_product_lut_matches_einsum(dsub, d):
    """Tables four dimensions a pass, a tail of fewer, padding past d counted as zero."""
    from shard.kernels.product import product_lut
    rng = np.random.default_rng(dsub * 1000 + d)
    M = -(-d // dsub)
    books = rng.standard_normal((M, dsub, 256)).astype(np.float32)
    x = rng.standard_normal(d).astype(np.float32)
    out = np.full((M, 256), np.nan, np.float32)
    product_lut(x, books, out)
    xp = np.zeros(M * dsub, np.float32)
    xp[:d] = x
    np.testing.assert_allclose(out, np.einsum("mj,mjk->mk", xp.reshape(M, dsub), books), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("K", [1, 5, 256])
def test_row_ranges_match_numpy(K):
    """Integer-ordered min/max over float bits: negatives, zeros of both signs, subnormals."""
    from shard.kernels.product import row_ranges
    rng = np.random.default_rng(K)
    lut = (rng.standard_normal((9, K)) * rng.uniform(1e-3, 1e3, (9, 1))).astype(np.float32)
    lut[0] = -np.abs(lut[0])
    lut[1] = np.abs(lut[1])
    lut[2, :] = -0.0
    lut[3, 0] = 0.0
    lut[4, -1] = np.float32(1e-42)  # subnormal
    lut[5, 0] = -np.float32(1e-42)
    lo_hi = np.empty((9, 2), np.float32)
    row_ranges(lut, lo_hi)
    np.testing.assert_array_equal(lo_hi[:, 0], lut.min(axis=1))
    np.testing.assert_array_equal(lo_hi[:, 1], lut.max(axis=1))


@pytest.mark.parametrize("M", [1, 3, 4, 96, 97])
def test_byte_sum_matches_the_plain_sum(M):
    from shard.kernels.product import byte_sum

    @njit
    def sums(table, codes):
        flat = table.reshape(table.size)
        out = np.empty(codes.shape[0], np.uint32)
        for v in range(codes.shape[0]):
            out[v] = byte_sum(flat, np.uint64(table.shape[1]), codes, v)
        return out

    rng = np.random.default_rng(M)
    table = rng.integers(0, 256, (M, 256), dtype=np.uint8)
    codes = rng.integers(0, 256, (50, M), dtype=np.uint8)
    ref = table[np.arange(M)[None, :], codes].astype(np.int64).sum(axis=1)
    np.testing.assert_array_equal(sums(table, codes), ref)


@pytest.mark.parametrize("d", [8, 63, 64, 100, 384, 1024])
def test_byte_query_and_vnni_dot_match_the_plain_loop(d):
    """A query in signed bytes is within half a step of the float one; the VNNI
    sum of a code row equals the plain loop's exactly (int32), for rows that are
    and are not multiples of 64 bytes."""
    from numba import njit

    from shard.kernels.dot8 import HAS_VNNI, address, byte_query, row_dot, vnni_dot
    rng = np.random.default_rng(d)
    p = (rng.standard_normal(d) * rng.uniform(0.01, 2.0, d)).astype(np.float32)
    q = np.empty(d, np.int8)
    scale = byte_query(p, q)
    np.testing.assert_allclose(scale, np.abs(p).max() / 127, rtol=1e-6)
    assert np.abs(q.astype(np.int64)).max() == 127
    assert np.abs(scale * q - p).max() <= (0.5 + 1e-4) * scale  # float32 rounding of p / scale
    codes = rng.integers(0, 256, (5, d), dtype=np.uint8)
    want = codes.astype(np.int64) @ q
    np.testing.assert_array_equal([row_dot(codes, v, q) for v in range(5)], want)
    if not HAS_VNNI:
        pytest.skip("this CPU has no AVX-512 VNNI: the walk scores int8 codes in float32 here")

    @njit
    def dot(codes, v, q):
        return vnni_dot(address(codes) + v * codes.strides[0], address(q), q.shape[0])

    np.testing.assert_array_equal([dot(codes, v, q) for v in range(5)], want)
    extreme = np.full((1, d), 255, np.uint8)  # the largest sum a row can reach
    np.testing.assert_array_equal(dot(extreme, 0, np.full(d, -127, np.int8)), -255 * 127 * d)
    assert byte_query(np.zeros(d, np.float32), q) == 1.0 and not q.any()


def test_kernel_cache_is_keyed_by_every_kernel_source(tmp_path):
    """numba keys a cached kernel by its own file: the package points the cache at a
    directory named after all its sources, so a change to a helper in another file
    (dot8.py inlined into the scans) cannot load stale machine code."""
    import shutil
    from pathlib import Path

    from numba.core import config

    import shard.kernels
    from shard.kernels.scalar import scalar_scan
    here = Path(shard.kernels.__file__).parent
    assert config.CACHE_DIR.endswith("quiver-" + shard.kernels.sources_digest())
    assert scalar_scan._cache._cache_path.startswith(config.CACHE_DIR)
    copy = tmp_path / "kernels"
    shutil.copytree(here, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert shard.kernels.sources_digest(copy) == shard.kernels.sources_digest()
    (copy / "dot8.py").write_text((here / "dot8.py").read_text() + "\n# a helper changed\n")
    assert shard.kernels.sources_digest(copy) != shard.kernels.sources_digest()


@pytest.mark.parametrize("blocked", [False, True], ids=["rows", "blocked"])
def test_code_store_keeps_every_code_through_writes_growth_and_compaction(blocked):
    """Each live id's code, factors, list and norm stay where its slot says, in
    both layouts, through replacing writes, deletes, growth and compaction (a
    dict of what was last written is the model)."""
    rng = np.random.default_rng(7)
    width = 6
    store = CodeStore(width, np.uint64, 2, 5, capacity=16, blocked=blocked)
    model = {}

    def check():
        offsets, members, sizes = store.layout()
        assert store.n == len(model) == sizes.sum()
        for key, (code, fac, lst, hsq) in model.items():
            s = int(store.slots_of(np.array([key], np.uint64))[0])
            got = store.codes[s >> 3, :, s & 7] if blocked else store.codes[s]
            np.testing.assert_array_equal(got, code)
            np.testing.assert_array_equal(store.factors[s], fac)
            assert store.list_of_slot[s] == lst and store.half_sqnorm[s] == hsq
            assert s in members[offsets[lst]:offsets[lst + 1]]

    for step in range(12):
        ids = rng.choice(300, size=int(rng.integers(1, 60)), replace=False).astype(np.uint64)
        codes = rng.integers(0, 2 ** 63, (len(ids), width), dtype=np.uint64)
        fac = rng.standard_normal((len(ids), 2)).astype(np.float32)
        lists = rng.integers(0, 5, len(ids)).astype(np.int32)
        hsq = rng.standard_normal(len(ids)).astype(np.float32)
        store.upsert(ids, lists, codes, fac, hsq)
        for i, key in enumerate(ids):
            model[int(key)] = (codes[i], fac[i], lists[i], hsq[i])
        gone = rng.choice(300, size=20, replace=False).astype(np.uint64)
        found = store.delete(gone)
        for key, f in zip(gone, found):
            assert f == (int(key) in model)
            model.pop(int(key), None)
        check()
        if step % 3 == 2:
            store.compact()
            check()
    assert len(store.slot_ids) > 16  # it grew


def _lloyd_reference(x, codebook, iterations):
    """Lloyd steps in float64 on one dimension: each value to its nearest codeword
    (the lowest index of equals), each codeword to its values' mean (kept if none)."""
    c = codebook.astype(np.float64).copy()
    for _ in range(iterations):
        a = np.argmin(np.abs(x[:, None].astype(np.float64) - c[None, :]), axis=1)
        for k in range(len(c)):
            if (a == k).any():
                c[k] = x[a == k].astype(np.float64).mean()
    return c


@pytest.mark.parametrize("n,K,iterations", [(3000, 256, 1), (3000, 256, 6), (500, 16, 4), (7, 4, 3)])
def test_lloyd_1d_matches_plain_lloyd(n, K, iterations):
    """The one-dimensional k-means (x4 product codes) moves each row's codewords
    as plain Lloyd steps in float64 do."""
    from shard.kernels.kmeans import lloyd_1d

    rng = np.random.default_rng(n + K)
    x = rng.standard_normal((3, n)).astype(np.float32)
    books = np.stack([np.sort(rng.choice(row, K, replace=False)) for row in x]).astype(np.float32)
    books = books[:, rng.permutation(K)].copy()  # the kernel must not rely on the codewords' order
    got = books.copy()
    lloyd_1d(np.sort(x, axis=1), got, iterations)
    for m in range(3):
        np.testing.assert_allclose(got[m], _lloyd_reference(x[m], books[m], iterations), rtol=1e-5, atol=1e-6)
