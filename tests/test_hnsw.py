"""HNSW graph over codes: kernels against numpy, recall on seeded data, and the
engine option (insert, upsert, delete, rebuild, reopen)."""

from __future__ import annotations

import numpy as np
import pytest

from shard.config import CollectionConfig, HnswConfig, IndexConfig, QuantizationConfig
from shard.engine import ShardEngine
from shard.errors import InvalidArgument
from shard.index import hnsw
from shard.index.code_store import CodeStore
from shard.held import byte_rows, int16_rows
from shard.index.hnsw import HnswGraph
from shard.kernels.dot8 import HAS_VNNI, byte_query


def clustered(n, d, seed, k=20, spread=0.35):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)).astype(np.float32)
    x = centres[rng.integers(0, k, n)] + spread * rng.standard_normal((n, d)).astype(np.float32)
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), np.float32)


def recall(found, truth, k=10):
    return float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth)]))


def walk(g, Q, b, off, lists, codes, hsq, use_sqnorm, ef, k, in_bytes=False):
    """Search g through the view (b, off), its offsets held in int16 (or in bytes,
    as the engine holds a product view's). Returns (scores, slots, counts, off as held)."""
    offq, oscale = byte_rows(off) if in_bytes else int16_rows(off)
    out_s = np.empty((len(Q), k), np.float32)
    out_ids = np.empty((len(Q), k), np.uint64)
    out_i = np.empty((len(Q), k), np.int64)
    slot_ids = np.arange(len(codes), dtype=np.uint64)
    counts = g.search(np.ascontiguousarray(Q, np.float32), b, offq, oscale, lists, codes, hsq, use_sqnorm, ef,
                      slot_ids, out_s, out_ids, out_i)
    for qi, c in enumerate(counts):
        np.testing.assert_array_equal(out_ids[qi, :c], out_i[qi, :c])  # ids read from the slots
    held = (offq.astype(np.float32) - 128) if in_bytes else offq.astype(np.float32)
    return out_s, out_i, counts, (held * oscale).astype(np.float32)


def affine_setup(n, d, nlist, seed, dtype):
    """Codes whose affine view ``off[l] + b * code`` is centred (so inner
    products rank about as distances do: the graph is navigable)."""
    rng = np.random.default_rng(seed)
    b = (rng.random(d).astype(np.float32) + 0.5) * 0.01
    lists = rng.integers(0, nlist, n).astype(np.int32)
    if dtype == np.uint8:
        codes = rng.integers(0, 256, (n, d)).astype(np.uint8)
        off = -127.5 * b[None, :] + 0.2 * b[None, :] * rng.standard_normal((nlist, d)).astype(np.float32) * 100
    else:
        codes = rng.standard_normal((n, d)).astype(np.float32)
        off = 0.1 * b[None, :] * rng.standard_normal((nlist, d)).astype(np.float32)
    return np.ascontiguousarray(off, np.float32), b, lists, codes


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("use_sqnorm", [False, True])
def test_graph_search_matches_numpy_reference_when_exhaustive(dtype, use_sqnorm):
    n, d, nlist, k = 400, 24, 5, 10
    off, b, lists, codes = affine_setup(n, d, nlist, 1, dtype)
    X = off[lists] + b * codes.astype(np.float32)
    hsq = (0.5 * np.einsum("ij,ij->i", X, X)).astype(np.float32)
    g = HnswGraph(8, 64, seed=0)
    g.insert(np.arange(n), X, hsq, codes, off, lists, b, hsq, use_sqnorm)
    Q = np.random.default_rng(2).standard_normal((7, d)).astype(np.float32)
    # ef = n: exhaustive; the twin reads the offsets as the walk holds them (int16)
    out_s, out_i, counts, off = walk(g, Q, b, off, lists, codes, hsq, use_sqnorm, n, k)
    pb = Q * b
    base = Q @ off.T
    X = off[lists] + b * codes.astype(np.float32)
    ref = Q @ X.T - (hsq[None, :] if use_sqnorm else 0.0)  # the slow, obviously-correct twin
    if dtype == np.uint8 and HAS_VNNI:
        # the walk holds the query in signed bytes (dot8.py): the twin scores
        # that query, which is within half a step a dimension of the float one
        for qi in range(len(Q)):
            q8 = np.empty(d, np.int8)
            scale = byte_query(pb[qi], q8)
            c64 = codes.astype(np.float64)
            held = base[qi, lists] + scale * (c64 @ q8) - (hsq if use_sqnorm else 0.0)
            assert np.all(np.abs(held - ref[qi]) <= 0.5 * scale * c64.sum(axis=1) * (1 + 1e-3) + 1e-4)
            ref[qi] = held
    assert (counts == k).all()
    for qi in range(len(Q)):
        got = out_i[qi]
        np.testing.assert_allclose(out_s[qi], ref[qi, got], rtol=1e-4, atol=1e-4)
        assert np.all(np.diff(out_s[qi]) <= 1e-6)  # best first
        # a true top k, up to ties within rounding
        assert ref[qi, got].min() >= np.sort(ref[qi])[::-1][k - 1] - 2e-4 * (1 + np.abs(ref[qi]).max())


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_prefetch_row_compiles_and_leaves_the_array_alone(dtype):
    from numba import njit

    from shard.kernels.graph import _prefetch_row

    @njit
    def touch(a):
        for v in range(a.shape[0]):
            _prefetch_row(a, v)
        return a.sum()

    a = np.arange(3 * 100, dtype=np.float64).reshape(3, 100).astype(dtype)
    before = a.copy()
    assert touch(a) == before.sum()
    np.testing.assert_array_equal(a, before)


def pq_setup(n, d, nlist, M, K, seed):
    """Product codes of residuals: codebooks (M, K, dsub) over d padded to M * dsub
    (the graph's view takes them transposed, (M, dsub, K))."""
    rng = np.random.default_rng(seed)
    dsub = -(-d // M)
    books = (0.3 * rng.standard_normal((M, K, dsub))).astype(np.float32)
    books[-1, :, d - (M - 1) * dsub:] = 0.0  # padding dimensions hold zeros, as trained
    off = (0.5 * rng.standard_normal((nlist, d))).astype(np.float32)
    lists = rng.integers(0, nlist, n).astype(np.int32)
    codes = rng.integers(0, K, (n, M)).astype(np.uint8)
    return off, books, lists, codes


@pytest.mark.parametrize("in_bytes", [False, True], ids=["int16", "bytes"])
@pytest.mark.parametrize("use_sqnorm", [False, True])
def test_graph_over_product_codes_matches_numpy_reference(use_sqnorm, in_bytes):
    """Built and searched through the product view: every score the walk returns is
    <q, c_l> + sum_j lut[j, code_j] (lut from the codebooks) [- hsq], and an
    exhaustive beam finds the true top k; the kernels' decode agrees with numpy's."""
    n, d, nlist, M, K, k = 400, 18, 5, 5, 16, 10  # d not a multiple of M: padded last subspace
    rng = np.random.default_rng(3)
    off, books, lists, codes = pq_setup(n, d, nlist, M, K, 3)
    store = hnsw.GraphCodeStore(M, np.uint8, 0, nlist)
    store.codes, store.list_of_slot = codes, lists  # the view reads only these
    books_t = np.ascontiguousarray(books.transpose(0, 2, 1))
    X = hnsw.decode(store, np.arange(n), off, books_t)
    recon = off[lists] + books[np.arange(M)[None, :], codes].reshape(n, -1)[:, :d]
    np.testing.assert_allclose(X, recon, rtol=1e-6, atol=1e-6)
    hsq = (0.5 * (X * X).sum(1)).astype(np.float32)
    g = HnswGraph(6, 40)
    g.insert(np.arange(n), X, hsq, codes, off, lists, books_t, hsq, use_sqnorm)
    Q = rng.standard_normal((3, d)).astype(np.float32)
    pad = np.zeros((3, M * books.shape[2]), np.float32)
    pad[:, :d] = Q
    lut = np.einsum("mjt,jkt->mjk", pad.reshape(3, M, -1), books).astype(np.float32)
    out_s, out_i, _, off_held = walk(g, Q, books_t, off, lists, codes, hsq, use_sqnorm, n, k, in_bytes)
    Xh = off_held[lists] + (X - off[lists])  # the walk reads the offsets as held
    for qi in range(3):
        ref = Q[qi] @ Xh.T - (hsq if use_sqnorm else 0.0)
        # the walk sums the table in bytes: each entry within half a step, one step
        # being the widest row's range / 255
        tol = M * 0.5 * np.ptp(lut[qi], axis=1).max() / 255 + 1e-4
        if in_bytes:  # offsets in bytes are scored against the query in bytes (on VNNI hosts)
            qs = Q[qi] * byte_rows(off)[1]
            tol += 0.5 * np.abs(qs).max() / 127 * np.abs(off_held / byte_rows(off)[1]).sum(axis=1).max()
        np.testing.assert_allclose(out_s[qi], ref[out_i[qi]], rtol=0, atol=tol)
        if use_sqnorm:  # a metric: the exhaustive beam reaches every node
            assert ref[out_i[qi]].min() >= np.sort(ref)[::-1][k - 1] - 2 * tol
    # the same graph as one built on the decoded vectors as float rows (off = 0, b = 1), whose
    # search finds the same nodes (inner products of any norm: neither need reach them all)
    zeros = np.zeros(n, np.int32)
    gf = HnswGraph(6, 40)
    gf.insert(np.arange(n), X, hsq, X, np.zeros((1, d), np.float32), zeros, np.ones(d, np.float32), hsq, use_sqnorm)
    assert (gf.links0 == g.links0).mean() >= 0.99
    _, fi, _, _ = walk(gf, Q, np.ones(d, np.float32), np.zeros((1, d), np.float32), zeros, X, hsq, use_sqnorm,
                       n, k)
    for qi in range(3):
        assert len(set(fi[qi].tolist()) & set(out_i[qi].tolist())) >= k - 1


@pytest.mark.parametrize("K", [16, 256])
def test_byte_table_is_within_half_a_step(K):
    """A lookup table in bytes: every entry within scale / 2 of the float one,
    one scale for all rows (the byte sums add up), the rows' minima summed into
    the bias; a constant table is all zeros with scale 1."""
    from shard.kernels.product import byte_table
    rng = np.random.default_rng(K)
    lut = (rng.standard_normal((7, K)) * rng.uniform(0.01, 3.0, (7, 1))).astype(np.float32)
    out, mins = np.empty(lut.shape, np.uint8), np.empty(7, np.float32)
    scale, bias = byte_table(lut, out, mins)
    np.testing.assert_allclose(scale, np.ptp(lut, axis=1).max() / 255, rtol=1e-5)
    np.testing.assert_allclose(mins, lut.min(axis=1), rtol=0, atol=0)
    np.testing.assert_allclose(bias, lut.min(axis=1).sum(), rtol=1e-5)
    err = np.abs(mins[:, None] + scale * out.astype(np.float32) - lut)
    assert err.max() <= 0.5 * scale * (1 + 1e-4)
    assert out.max() == 255 and (out.min(axis=1) == 0).all()
    const = np.full((3, K), 0.25, np.float32)
    out3, mins3 = np.empty(const.shape, np.uint8), np.empty(3, np.float32)
    scale3, bias3 = byte_table(const, out3, mins3)
    assert scale3 == 1.0 and not out3.any() and bias3 == pytest.approx(0.75)


@pytest.mark.parametrize("store_kind", ["ivf", "graph"])
@pytest.mark.parametrize("m", [1, 3, CodeStore.INT16_BASE_MAX_QUERIES + 1])  # held centroids and BLAS
@pytest.mark.parametrize("in_bytes", [False, True], ids=["int16", "bytes"])
def test_query_base_matches_float_centroids_and_follows_a_retrain(store_kind, m, in_bytes):
    rng = np.random.default_rng(4)
    d, nlist = 48, 37
    store = (hnsw.GraphCodeStore if store_kind == "graph" else CodeStore)(d, np.uint8, 0, nlist)
    Q = rng.standard_normal((m, d)).astype(np.float32)
    const = rng.standard_normal(m).astype(np.float32)
    held = in_bytes and m <= CodeStore.INT16_BASE_MAX_QUERIES
    for scale in (0.05, 3.0):  # a second centroid array (a retrain) replaces the held copy
        C = (scale * rng.standard_normal((nlist, d))).astype(np.float32)
        C[:, 5] = 0.0  # an all-zero dimension
        ref = Q.astype(np.float64) @ C.T.astype(np.float64)  # the slow, obviously-correct twin
        got = store.query_base(C, Q, const, in_bytes=in_bytes)
        assert got.shape == (m, nlist) and got.dtype == np.float32
        # bytes: each centroid entry within half its dimension's step, each query entry within half of its own
        cu, cs = byte_rows(C)
        tol16 = 2e-4 * scale * np.sqrt(d)
        tol8 = ((0.5 * np.abs(Q) @ cs)[:, None] + 0.5 * np.abs(Q * cs).max(1, keepdims=True) / 127
                * np.abs(cu.astype(np.float64) - 128).sum(1)[None, :] + tol16)
        assert np.all(np.abs(got - (ref + const[:, None])) <= (tol8 if held else tol16))
        if held:  # and exactly the integer sum of the held rows, up to float rounding
            qs = (Q * cs).astype(np.float32)
            if HAS_VNNI:
                top = np.abs(qs).max(1, keepdims=True)
                step = np.where(top > 0, top / np.float32(127.0), np.float32(1.0)).astype(np.float32)
                q8 = np.clip(np.floor(qs * (np.float32(1.0) / step) + np.float32(0.5)), -127, 127)
                twin = step * (q8.astype(np.float64) @ (cu.astype(np.float64) - 128).T)
            else:
                twin = qs.astype(np.float64) @ (cu.astype(np.float64) - 128).T
            np.testing.assert_allclose(got, twin + const[:, None], rtol=0, atol=1e-5 * (np.abs(twin).max() + 1))
        np.testing.assert_array_equal(store.query_base(C, Q, const, in_bytes=in_bytes), got)  # cached: same answer
        # the other form replaces the held copy
        other = store.query_base(C, Q, const, in_bytes=not in_bytes)
        other_held = not in_bytes and m <= CodeStore.INT16_BASE_MAX_QUERIES
        assert np.all(np.abs(other - (ref + const[:, None])) <= (tol8 if other_held else tol16))
        np.testing.assert_array_equal(store.query_base(C, Q, const, in_bytes=in_bytes), got)


def test_graph_recall_on_seeded_data_and_deleted_nodes_never_returned():
    n, d = 4000, 32
    x = clustered(n, d, 5)
    q = clustered(100, d, 6)
    zeros = np.zeros(n, np.float32)
    off, b, lists = np.zeros((1, d), np.float32), np.ones(d, np.float32), np.zeros(n, np.int32)
    g = HnswGraph(16, 100)
    for s in range(0, n, 1000):  # incremental: four batches
        sl = np.arange(s, s + 1000)
        g.insert(sl, x[sl], zeros[sl], x, off, lists, b, zeros, False)
    truth = np.argsort(-(q @ x.T), axis=1)[:, :10]
    _, out_i, _, _ = walk(g, q, b, off, lists, x, zeros, False, 128, 10)
    assert recall(out_i, truth) >= 0.95
    gone = np.unique(truth[:, 0])
    g.mark_deleted(gone)
    _, out_i, _, _ = walk(g, q, b, off, lists, x, zeros, False, 128, 10)
    assert not np.isin(out_i, gone).any()
    alive = np.ones(n, bool)
    alive[gone] = False
    sims = np.where(alive[None, :], q @ x.T, -np.inf)
    assert recall(out_i, np.argsort(-sims, axis=1)[:, :10]) >= 0.9
    # a whole neighbourhood deleted (each query's 60 nearest: more than a beam of 32
    # holds): the walk passes through it, and still returns k live points, the right ones
    gone = np.unique(np.argsort(-(q @ x.T), axis=1)[:, :60])
    g.mark_deleted(gone)
    alive[gone] = False
    _, out_i, counts, _ = walk(g, q, b, off, lists, x, zeros, False, 32, 10)
    assert (counts == 10).all() and not np.isin(out_i, gone).any()
    sims = np.where(alive[None, :], q @ x.T, -np.inf)
    assert recall(out_i, np.argsort(-sims, axis=1)[:, :10]) >= 0.8


def hnsw_config(dim, distance="cosine", kind="scalar", **hc):
    q = QuantizationConfig(kind=kind, compression="x8") if kind == "product" else QuantizationConfig(kind=kind)
    return CollectionConfig(dim=dim, distance=distance, quantization=q,
                            index=IndexConfig(full_scan_threshold=500, nlist=16, train_sample=2000),
                            hnsw=HnswConfig(**hc))


KINDS = ["scalar", "product"]


def test_config_round_trip_and_validation():
    cfg = hnsw_config(8, m=8, ef=40)
    assert CollectionConfig.from_dict(cfg.to_dict()) == cfg
    ivf_cfg = CollectionConfig(dim=8)
    assert "hnsw" not in ivf_cfg.to_dict() and CollectionConfig.from_dict(ivf_cfg.to_dict()) == ivf_cfg
    with pytest.raises(InvalidArgument, match="scalar"):
        CollectionConfig(dim=8, quantization=QuantizationConfig(kind="binary"), hnsw=HnswConfig())
    with pytest.raises(InvalidArgument, match="m must"):
        HnswConfig(m=1)


def exact_top(x, ids, q, k, distance):
    if distance == "euclid":
        s = -((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    else:
        s = q @ x.T
    return ids[np.argsort(-s, axis=1)[:, :k]]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("distance", ["cosine", "euclid"])
def test_engine_hnsw_insert_delete_reopen(tmp_path, distance, kind):
    n, d = 3000, 32
    x = clustered(n, d, 7)
    if distance == "euclid":
        x = x * np.random.default_rng(1).uniform(0.5, 2.0, (n, 1)).astype(np.float32)
    q = clustered(60, d, 8)
    ids = np.arange(n, dtype=np.uint64) * 3 + 1
    path = str(tmp_path / "s")
    eng = ShardEngine.create(path, hnsw_config(d, distance, kind))
    for s in range(0, n, 700):  # crosses the full-scan threshold: a retrain rebuilds the graph
        eng.upsert(ids[s:s + 700], x[s:s + 700])
    assert eng.count() == n

    def found(e, **kw):
        return np.stack([np.pad(h.ids[:10].astype(np.int64), (0, 10 - len(h.ids[:10])), constant_values=-1)
                         for h in e.search_batch(q, 10, 2.0, **kw)])

    truth = exact_top(x, ids.astype(np.int64), q, 10, distance)
    assert recall(found(eng), truth) >= 0.95
    assert recall(found(eng, effort=200), truth) >= recall(found(eng, effort=10), truth) - 0.02
    # upsert moves points: the graph relinks them
    moved = ids[:200]
    newx = clustered(n + 200, d, 7)[-200:]  # same clusters: codes trained on them still fit
    eng.upsert(moved, newx)
    x2 = x.copy()
    x2[:200] = newx
    truth2 = exact_top(x2, ids.astype(np.int64), q, 10, distance)
    assert recall(found(eng), truth2) >= 0.93
    # deletes: never returned, and past the fraction the graph is rebuilt
    gone = ids[200:1200]
    graph_before = eng._codes.graph
    assert eng.delete(gone) == len(gone)
    assert eng._codes.graph is not graph_before  # 1000 of 3000 > 25%: rebuilt
    keep = ~np.isin(ids, gone)
    r = found(eng)
    assert not np.isin(r, gone.astype(np.int64)).any()
    truth3 = exact_top(x2[keep], ids[keep].astype(np.int64), q, 10, distance)
    assert recall(r, truth3) >= 0.93
    # reuse of freed slots
    back = gone[:300]
    eng.upsert(back, x[200:500])
    keep2 = keep | np.isin(ids, back)
    truth4 = exact_top(x2[keep2], ids[keep2].astype(np.int64), q, 10, distance)
    before = found(eng)
    assert recall(before, truth4) >= 0.93
    eng.close()
    # reopen: the saved graph is restored (dead nodes included), so searches are identical
    e2 = ShardEngine.open(path)
    np.testing.assert_array_equal(found(e2), before)
    blob = hnsw.save_graph(e2._codes)
    e2.upsert(ids[-5:], x[:5])
    assert not hnsw.load_graph(e2._codes, blob)  # stale: the codes changed
    after = found(e2)
    e2.close()
    e3 = ShardEngine.open(path)
    np.testing.assert_array_equal(found(e3), after)
    # a graph that does not match the codes is rebuilt from them
    e3.store.put_meta({"graph": blob})
    e3.store.close()
    e4 = ShardEngine.open(path)
    assert recall(found(e4), after) >= 0.95
    e4.close()


@pytest.mark.parametrize("kind", KINDS)
def test_engine_hnsw_rescore_off_and_ignore(tmp_path, kind):
    n, d = 1200, 16
    x = clustered(n, d, 11)
    q = clustered(20, d, 12)
    eng = ShardEngine.create(str(tmp_path / "s"), hnsw_config(d, kind=kind))
    eng.upsert(np.arange(n), x)
    truth = exact_top(x, np.arange(n), q, 5, "cosine")
    for kw in ({"rescore": False}, {"ignore": True}, {}):
        hits = eng.search_batch(q, 5, 1.0, **kw)
        # at oversampling 1 the codes pick the 5 candidates; product codes (x8 of 16 dims, trained
        # on 1,200 points) rank coarser than int8; ignore rescores the whole beam
        floor = 0.8 if kind == "product" and "ignore" not in kw else 0.9
        assert recall([h.ids.astype(np.int64) for h in hits], truth, 5) >= floor
        for h in hits:
            assert np.all(np.diff(h.scores) <= 1e-6)
    eng.close()


@pytest.mark.parametrize("kind", KINDS)
def test_engine_hnsw_retrain_carries_the_graph_over(tmp_path, kind):
    n, d = 2000, 32
    x = clustered(n, d, 13)
    q = clustered(n + 50, d, 13)[-50:]  # queries from the same clusters
    ids = np.arange(n, dtype=np.uint64) + 100
    eng = ShardEngine.create(str(tmp_path / "s"), hnsw_config(d, kind=kind))
    eng.upsert(ids, x)
    g = eng._codes.graph
    entry_id = eng._codes.slot_ids[g.state[0]]
    gone = np.unique(np.concatenate([[entry_id], ids[::10]]))  # the entry point and 10% more
    eng.delete(gone)
    old_links = int(eng._codes.graph.deg0.sum())
    eng._retrain()
    ng = eng._codes.graph
    assert ng is not g and ng.n_deleted == 0 and ng.state[0] >= 0
    assert int(ng.deg0.sum()) <= old_links  # carried over (links to deleted nodes dropped), not rebuilt
    keep = ~np.isin(ids, gone)
    truth = exact_top(x[keep], ids[keep].astype(np.int64), q, 10, "cosine")
    hits = eng.search_batch(q, 10, 2.0)
    found = [h.ids[:10].astype(np.int64) for h in hits]
    assert not np.isin(np.concatenate(found), gone.astype(np.int64)).any()
    assert recall(found, truth) >= 0.95
    eng.close()


@pytest.mark.parametrize("kind", KINDS)
def test_engine_hnsw_tiny_shards(tmp_path, kind):
    eng = ShardEngine.create(str(tmp_path / "s"), hnsw_config(4, kind=kind))
    assert len(eng.search([1, 0, 0, 0], 3)) == 0
    eng.upsert([7], [[1, 0, 0, 0]])
    assert eng.search([1, 0, 0, 0], 3).ids.tolist() == [7]
    eng.upsert([7], [[0, 1, 0, 0]])  # the entry point itself moves
    eng.upsert([8, 9], [[1, 0, 0, 0], [0, 0, 1, 0]])
    assert eng.search([0, 1, 0, 0], 1).ids.tolist() == [7]
    assert sorted(eng.search([1, 0, 0, 0], 5).ids.tolist()) == [7, 8, 9]
    eng.delete([7, 8, 9])
    assert len(eng.search([1, 0, 0, 0], 3)) == 0
    eng.upsert([10], [[0, 0, 0, 1]])
    assert eng.search([0, 0, 0, 1], 3).ids.tolist() == [10]
    eng.close()
    e2 = ShardEngine.open(str(tmp_path / "s"))
    assert e2.search([0, 0, 0, 1], 3).ids.tolist() == [10]
    e2.close()


def test_visited_stamps_wrap_in_their_own_dtype():
    """A uint8 visited set wraps every 255 searches (cleared, restarted at 1)
    and finds what a uint32 one finds."""
    from shard.kernels.graph import graph_search
    n, d, nlist, k = 300, 16, 3, 5
    off, b, lists, codes = affine_setup(n, d, nlist, 7, np.uint8)
    X = off[lists] + b * codes.astype(np.float32)
    hsq = (0.5 * np.einsum("ij,ij->i", X, X)).astype(np.float32)
    g = HnswGraph(6, 40)
    g.insert(np.arange(n), X, hsq, codes, off, lists, b, hsq, False)
    Q = np.random.default_rng(8).standard_normal((1, d)).astype(np.float32)
    view = (Q, b, *int16_rows(off), lists, codes, hsq, False, g.links0, g.deg0, g.up, g.updeg, g.up_row, g.state,
            g.deleted, 32)
    slot_ids = np.arange(g.capacity, dtype=np.uint64)
    want_s, want_ids, want_i = np.empty((1, k), np.float32), np.empty((1, k), np.uint64), np.empty((1, k), np.int64)
    graph_search(*view, np.zeros(g.capacity, np.uint32), np.zeros(1, np.uint32), slot_ids, want_s, want_ids, want_i)
    visited, gen = np.zeros(g.capacity, np.uint8), np.zeros(1, np.uint8)
    out_s, out_ids, out_i = np.empty((1, k), np.float32), np.empty((1, k), np.uint64), np.empty((1, k), np.int64)
    for _ in range(600):
        graph_search(*view, visited, gen, slot_ids, out_s, out_ids, out_i)
        np.testing.assert_array_equal(out_i, want_i)
    assert gen[0] == 600 % 255


def test_reorder_keeps_results_and_bookkeeping(tmp_path, monkeypatch):
    """Renumbering the slots into walk order (upper levels first, then by list)
    changes no search result; the id map, free list and graph stay consistent
    through later writes, deletes and a reopen."""
    rng = np.random.default_rng(21)
    d, n = 16, 3000
    x = rng.standard_normal((n, d)).astype(np.float32)
    path = str(tmp_path / "s")
    eng = ShardEngine.create(path, hnsw_config(d, m=8, ef_construct=40, ef=48))
    reorder = hnsw.GraphCodeStore.reorder
    monkeypatch.setattr(hnsw.GraphCodeStore, "reorder", lambda self: None)  # insertion order first
    eng.upsert(np.arange(n), x)
    eng.delete(np.arange(0, n, 10))
    qs = rng.standard_normal((6, d)).astype(np.float32)
    before = [eng.search(q, limit=10, oversampling=2.0) for q in qs]
    codes = eng._codes
    ids = np.sort(codes.live_ids())
    slots_before = codes.slots_of(ids)
    monkeypatch.setattr(hnsw.GraphCodeStore, "reorder", reorder)
    with eng._rw.exclusive():
        codes.reorder()
        codes.refresh()
    assert (codes.slots_of(ids) != slots_before).mean() > 0.5  # most points moved
    high = codes.high
    levels = codes.graph.levels[:high]
    assert (np.diff(levels.astype(np.int64)) <= 0).all()  # upper levels first
    live = codes.live_ids()
    np.testing.assert_array_equal(codes.slot_ids[codes.slots_of(live)], live)
    assert not np.isin(codes.free, codes.slots_of(live)).any()
    for q, b in zip(qs, before):
        a = eng.search(q, limit=10, oversampling=2.0)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)
    # writes after it: fresh ids, reused free slots, replacements, deletes
    new = np.arange(n, n + 150)
    eng.upsert(new, rng.standard_normal((150, d)).astype(np.float32))
    eng.upsert(np.arange(1, 40, 2), qs[np.arange(20) % len(qs)] * 3.0)
    eng.delete(np.arange(5, 60, 10))
    assert eng.count() == n - n // 10 + 150 - 6
    hit = eng.search(qs[0], limit=1)
    assert hit.ids[0] in np.arange(1, 40, 2)[np.arange(20) % len(qs) == 0]
    want = [eng.search(q, limit=10, oversampling=2.0) for q in qs]
    eng.close()
    eng = ShardEngine.open(path)  # the graph saved by id comes back, in walk order again
    for q, b in zip(qs, want):
        a = eng.search(q, limit=10, oversampling=2.0)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
    assert (np.diff(eng._codes.graph.levels[:eng._codes.high].astype(np.int64)) <= 0).all()
    eng.close()
