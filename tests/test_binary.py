"""The binary quantizer's estimator and scan kernel, beyond the shared kernel tests.

- The factors are held to RaBitQ's error law: on every (query, point) pair the
  estimate minus the exact inner product, divided by the predicted standard
  deviation, has mean 0 and standard deviation 1. A wrong factor (a missing
  centroid term, a biased scale) moves one of the two.
- The scan kernel reuses per-call scratch across lists and queries, so it is
  held to the reference on lists of very uneven sizes (empty, one point, many)
  and several queries per call.
- On docs384, scoring every code (no probe) keeps recall@10 at oversampling 3
  near 0.97: the 1-bit estimator is not what limits the engine's recall there.
- The engine's one-call IVF search (``search_lists``) returns exactly what its
  separate steps return.
"""

import os

import numpy as np
import pytest

from engine_util import clustered, config
from shard.engine import ShardEngine
from shard.index import ivf
from shard.index.code_store import CodeStore
from shard.quantization.binary import BinaryQuantizer


def anisotropic(n, d, seed, centers=16):
    """Clustered points with a decaying spectrum, normalised (cosine data)."""
    rng = np.random.default_rng(seed)
    scale = (1.0 / np.sqrt(1 + np.arange(d))).astype(np.float32)
    c = rng.standard_normal((centers, d)).astype(np.float32) * scale * 3
    x = c[rng.integers(0, centers, n)] + rng.standard_normal((n, d)).astype(np.float32) * scale
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def unpack_signs(quant, codes):
    """xbar (n, D) in {-1, +1} of one-bit codes (n, W) uint64."""
    bits = np.unpackbits(codes.view(np.uint8), axis=1, bitorder="little")[:, :quant.D]
    return 2.0 * bits.astype(np.float64) - 1.0


@pytest.mark.parametrize("dim", [64, 128, 384])
def test_estimator_follows_rabitq_error_law(dim):
    x = anisotropic(4000, dim, seed=dim)
    q = anisotropic(40, dim, seed=dim + 1)
    centroids = ivf.kmeans(x, 16, seed=0)
    lists = ivf.assign(x, centroids)
    c = centroids[lists].astype(np.float64)
    quant = BinaryQuantizer(dim, "one_bit", "scalar8bits", seed=3)
    quant.fit(x - centroids[lists])
    codes, factors = quant.encode(x - centroids[lists], centroids[lists])
    xbar = unpack_signs(quant, codes)
    P = quant.rotation.astype(np.float64)
    # the estimate with an unquantized query: only the code's error remains
    est = (q @ c.T) + factors[:, 0][None, :] + factors[:, 1][None, :] * ((q @ P.T) @ xbar.T)
    exact = q.astype(np.float64) @ x.T.astype(np.float64)

    r = x - c
    rn = np.linalg.norm(r, axis=1)
    u = r / rn[:, None]
    alpha = np.einsum("ij,ij->i", xbar, u @ P.T) / np.sqrt(quant.D)
    # the part of q - c orthogonal to the residual is what the code cannot see
    v = q[:, None, :] - c[None, :, :]  # (m, n, d)
    along = np.einsum("mnd,nd->mn", v, u)
    perp = np.sqrt(np.maximum(np.einsum("mnd,mnd->mn", v, v) - along ** 2, 1e-12))
    sd = rn[None, :] * perp * np.sqrt((1 - alpha ** 2) / (alpha ** 2 * (quant.D - 1)))[None, :]
    z = (est - exact) / sd
    assert abs(z.mean()) < 0.05, z.mean()
    assert 0.9 < z.std() < 1.1, z.std()


@pytest.mark.parametrize("encoding", ["one_bit", "one_and_half_bits", "two_bits"])
@pytest.mark.parametrize("query_encoding", ["binary", "scalar4bits", "scalar8bits"])
@pytest.mark.parametrize("compacted", [False, True], ids=["scattered", "runs"])
def test_scan_uneven_lists_many_queries(encoding, query_encoding, compacted):
    dim, nlist = 96, 7
    sizes = [0, 1, 3, 400, 64, 65, 2]  # empty, single, runs shorter and longer than a vector
    x = anisotropic(sum(sizes), dim, seed=5)
    q = anisotropic(6, dim, seed=6)
    lists = np.repeat(np.arange(nlist, dtype=np.int32), sizes)
    centroids = np.stack([x[lists == l].mean(0) if s else np.zeros(dim, np.float32)
                          for l, s in enumerate(sizes)]).astype(np.float32)
    quant = BinaryQuantizer(dim, encoding, query_encoding, seed=2)
    quant.fit(x - centroids[lists])
    codes, factors = quant.encode(x - centroids[lists], centroids[lists])
    store = CodeStore(quant.code_width, quant.code_dtype, quant.n_factors, nlist, blocked=True)
    order = np.random.default_rng(1).permutation(len(x))
    hsq = (0.5 * (x * x).sum(1)).astype(np.float32)
    store.upsert(np.arange(len(x), dtype=np.uint64)[order], lists[order], codes[order], factors[order], hsq[order])
    if compacted:
        store.compact()
    offsets, members, _ = store.layout()
    ref = quant.reference_scores(q, lists, centroids, codes, factors)
    prepared, const = quant.prepare(q)
    base = np.ascontiguousarray(q @ centroids.T + const[:, None], np.float32)
    # each query probes a different subset, big list first or last
    probes = np.full((len(q), nlist), -1, np.int32)
    rng = np.random.default_rng(2)
    for i in range(len(q)):
        pick = rng.permutation(nlist)[: 3 + i % 4]
        probes[i, : len(pick)] = pick
    k = 20
    out_s = np.full((len(q), k), -np.inf, np.float32)
    out_i = np.full((len(q), k), -1, np.int64)
    counts = quant.scan(prepared, base, probes, offsets, members, store.codes, store.factors,
                        store.half_sqnorm, False, out_s, out_i)
    scale = np.abs(ref).max()
    for i in range(len(q)):
        probed = probes[i][probes[i] >= 0]
        inside = np.flatnonzero(np.isin(lists, probed))
        assert counts[i] == min(k, len(inside))
        ids = store.slot_ids[out_i[i, :counts[i]]].astype(np.int64)
        assert np.isin(ids, inside).all()
        np.testing.assert_allclose(out_s[i, :counts[i]], ref[i, ids], rtol=0, atol=2e-3 * scale)
        kth = np.sort(ref[i, inside])[::-1][counts[i] - 1]
        assert ref[i, ids].min() >= kth - 2e-3 * scale
        assert (out_i[i, counts[i]:] == -1).all()


ROOT = os.environ.get("QUIVER_DATASETS", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets"))
DOCS = os.path.join(ROOT, "docs384")


@pytest.mark.dataset
@pytest.mark.skipif(not os.path.exists(os.path.join(DOCS, "base.f16.npy")),
                    reason=f"docs384 dataset not found at {DOCS} (set QUIVER_DATASETS)")
def test_docs384_full_scan_recall_of_one_bit_codes():
    """Every code scored, the top 30 rescored exactly: what the estimator alone
    gives up: 0.969 here (256 lists on a 10% sample). The engine's default probe
    of ~12% of the points loses more: with 1024 lists its recall@10 at
    oversampling 3 is 0.949 probed, 0.976 with every list scanned."""
    nq = 300
    xb = np.load(os.path.join(DOCS, "base.f16.npy")).astype(np.float32)
    xq = np.load(os.path.join(DOCS, "queries.f16.npy")).astype(np.float32)[:nq]
    gt = np.load(os.path.join(DOCS, "gt_ids.npy"))[:nq, :10]
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    centroids = ivf.kmeans(xb[::10], 256, seed=0)
    lists = ivf.assign(xb, centroids)
    quant = BinaryQuantizer(384, "one_bit", "scalar4bits", seed=0)
    quant.fit(xb - centroids[lists])
    codes, factors = quant.encode(xb - centroids[lists], centroids[lists])
    store = CodeStore(quant.code_width, quant.code_dtype, quant.n_factors, len(centroids), blocked=True)
    store.upsert(np.arange(len(xb), dtype=np.uint64), lists, codes, factors, np.zeros(len(xb), np.float32))
    store.compact()
    offsets, members, _ = store.layout()
    prepared, const = quant.prepare(xq)
    base = np.ascontiguousarray(xq @ centroids.T + const[:, None], np.float32)
    probes = np.tile(np.arange(len(centroids), dtype=np.int32), (nq, 1))
    k = 30
    out_s = np.full((nq, k), -np.inf, np.float32)
    out_i = np.full((nq, k), -1, np.int64)
    quant.scan(prepared, base, probes, offsets, members, store.codes, store.factors,
               store.half_sqnorm, False, out_s, out_i)
    hits = 0
    for i in range(nq):
        cand = store.slot_ids[out_i[i]].astype(np.int64)
        top = cand[np.argsort(-(xb[cand] @ xq[i]))[:10]]
        hits += len(np.intersect1d(top, gt[i]))
    r = hits / gt.size
    print(f"docs384 one-bit full scan, oversampling 3: recall@10 {r:.4f}")
    assert r >= 0.96, r  # 0.969 measured


@pytest.mark.parametrize("encoding", ["one_bit", "one_and_half_bits", "two_bits"])
def test_encoding_with_the_bound_centroid_table_matches_per_row_rotation(encoding):
    """The engine binds the centroid table and passes each row's list; encoding must
    give the codes and factors it gives from the rows' centroids alone."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((600, 72)).astype(np.float32)
    table = rng.standard_normal((9, 72)).astype(np.float32)
    lists = rng.integers(0, 9, len(x)).astype(np.int32)
    q = BinaryQuantizer(72, encoding)
    q.fit(x - table[lists])
    plain_codes, plain_factors = q.encode(x - table[lists], table[lists])
    q.bind(table)
    codes, factors = q.encode(x - table[lists], table[lists], lists)
    np.testing.assert_array_equal(codes, plain_codes)
    np.testing.assert_allclose(factors, plain_factors, rtol=1e-4, atol=1e-4)  # float32 matmul order


@pytest.mark.parametrize("quant", ["binary", "binary1.5", "binary2"])
@pytest.mark.parametrize("distance", ["cosine", "dot", "euclid"])
def test_one_call_search_equals_the_separate_steps(tmp_path, quant, distance):
    """``search_lists`` (list terms, probe choice and scan in one kernel call)
    gives exactly the candidates of the engine's separate steps, on compacted
    lists and on lists with slots written since."""
    d = 96
    x = clustered(3000, d, seed=3)
    q = clustered(5, d, seed=4)
    eng = ShardEngine.create(str(tmp_path / "s"), config(d, quant, distance, full_scan_threshold=500, nlist=16,
                                                           nprobe=3))
    with eng:
        eng.upsert(np.arange(2900), x[:2900])
        for scattered in (False, True):
            if scattered:  # new points and replaced ones land in free slots, out of list order
                eng.upsert(np.arange(2850, 3000), x[2850:3000][::-1].copy())
            else:
                eng.search(q[0], 5)  # a search refreshes (and here compacts) the layout first
            index, codes = eng._index, eng._codes
            assert index is not None and index.nlist == 16
            offsets, members, _ = codes.layout()
            runs = all(members[offsets[l + 1] - 1] - members[offsets[l]] == offsets[l + 1] - offsets[l] - 1
                       for l in range(16) if offsets[l + 1] > offsets[l])
            assert runs != scattered
            Q = eng._vectors(q)
            assert eng._one_call(index, codes, Q) and not eng._one_call(index, codes, np.repeat(Q, 2, axis=0))
            for k in (7, 40):
                for effort in (None, 1, 5):
                    one = eng._listed_candidates(index, codes, Q, k, effort)
                    steps = eng._candidates(index, codes, Q, eng._probes(index, codes, Q, k, effort), k)
                    for a, b in zip(one, steps):
                        for row_a, row_b in zip(a, b):
                            np.testing.assert_array_equal(row_a, row_b)
                    assert all(len(r) == k for r in one[0])


@pytest.mark.parametrize("encoding", ["one_bit", "one_and_half_bits", "two_bits"])
@pytest.mark.parametrize("dim", [37, 64, 100, 384])
@pytest.mark.parametrize("bound", [False, True], ids=["rows", "table"])
def test_encode_kernels_match_numpy_reference(encoding, dim, bound):
    rng = np.random.default_rng(dim)
    x = rng.standard_normal((500, dim)).astype(np.float32)
    table = rng.standard_normal((7, dim)).astype(np.float32)
    lists = rng.integers(0, 7, len(x)).astype(np.int32)
    x[3] = table[lists[3]]  # a point on its centroid: zero residual, no direction
    q = BinaryQuantizer(dim, encoding)
    q.fit(np.zeros((0, dim), np.float32))
    if bound:
        q.bind(table)
    r, c = x - table[lists], table[lists]
    codes, factors = q.encode(r, c, lists if bound else None)
    ref_codes, ref_factors = q.reference_encode(r, c, lists if bound else None)
    # a coordinate on a level boundary may round either way in the two float32 products
    up = (r / np.maximum(np.linalg.norm(r, axis=1), 1e-30)[:, None]) @ q.rotation.T
    step = 0.9957 / np.sqrt(q.D) if encoding == "two_bits" else 1.0
    edge = np.abs(up / step - np.round(up / step)) < 1e-5 if encoding == "two_bits" else np.abs(up) < 1e-6
    differ = np.unpackbits((codes ^ ref_codes).view(np.uint8), axis=1, bitorder="little")
    differ = differ.reshape(len(x), q.n_planes, q.D).any(axis=1)
    assert not (differ & ~edge).any()
    assert np.array_equal(codes[3], ref_codes[3]) and factors[3, 1] == ref_factors[3, 1] == 0
    # the kernel sums in float64, the reference's einsum in float32 (terms up to |r| |c| ~ d here)
    np.testing.assert_allclose(factors, ref_factors, rtol=1e-4, atol=1e-6 * dim)
