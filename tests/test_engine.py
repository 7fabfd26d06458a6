"""The shard engine's contract: writes, reads, search steps, errors, persistence."""

import numpy as np
import pytest

from shard.config import MAX_OVERSAMPLING, CollectionConfig, HnswConfig, IndexConfig, QuantizationConfig
from shard.engine import ShardEngine
from shard.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

from engine_util import QUANT_CONFIGS, clustered, config, exact_topk, recall


@pytest.fixture
def engine(tmp_path):
    eng = ShardEngine.create(str(tmp_path / "s"), config(32, "binary"))
    yield eng
    eng.close()


def test_upsert_retrieve_delete_count(engine):
    x = clustered(200, 32, 0)
    engine.upsert(np.arange(200), x, [{"n": i} for i in range(200)])
    assert engine.count() == 200
    rec = engine.retrieve([5, 7, 10_000], with_payload=True, with_vector=True)
    assert rec.ids.tolist() == [5, 7]
    assert rec.payloads == [{"n": 5}, {"n": 7}]
    np.testing.assert_allclose(rec.vectors[0], x[5] / np.linalg.norm(x[5]), rtol=1e-6)
    assert engine.delete([5, 6, 9999]) == 2
    assert engine.count() == 198
    assert engine.retrieve([5]).ids.tolist() == []
    hits = engine.search(x[5], limit=10, oversampling=4.0)
    assert 5 not in hits.ids.tolist() and 6 not in hits.ids.tolist()


def test_upsert_replaces_vector_and_payload(engine):
    x = clustered(100, 32, 1)
    engine.upsert(np.arange(100), x, [{"v": 1}] * 100)
    engine.upsert([3], x[50:51], [None])
    rec = engine.retrieve([3], with_payload=True, with_vector=True)
    assert rec.payloads == [None]
    np.testing.assert_allclose(rec.vectors[0], x[50] / np.linalg.norm(x[50]), rtol=1e-6)
    hits = engine.search(x[50], limit=2, oversampling=4.0)
    assert set(hits.ids[:2].tolist()) == {3, 50}
    assert engine.count() == 100


def test_duplicate_ids_in_one_batch_last_wins(engine):
    x = clustered(3, 32, 2)
    engine.upsert([7, 8, 7], x, [{"a": 0}, {"a": 1}, {"a": 2}])
    assert engine.count() == 2
    assert engine.retrieve([7]).payloads == [{"a": 2}]


def test_empty_shard_search_returns_nothing(engine):
    hits = engine.search(np.ones(32, np.float32), limit=5, with_payload=True)
    assert len(hits) == 0 and hits.payloads == []


@pytest.mark.parametrize("quant", list(QUANT_CONFIGS))
@pytest.mark.parametrize("distance", ["cosine", "dot", "euclid"])
def test_rescored_scores_are_exact_and_ranked(tmp_path, quant, distance):
    x = clustered(1500, 48, 3)
    q = clustered(5, 48, 4)
    eng = ShardEngine.create(str(tmp_path / "s"), config(48, quant, distance))
    eng.upsert(np.arange(len(x)), x)
    truth_ids, truth_scores = exact_topk(x, q, 1500, distance)
    for qi in range(len(q)):
        hits = eng.search(q[qi], limit=10, oversampling=3.0)
        assert len(hits) == 30
        assert np.all(np.diff(hits.scores) <= 1e-6)
        exact = dict(zip(truth_ids[qi].tolist(), truth_scores[qi].tolist()))
        np.testing.assert_allclose(hits.scores, [exact[i] for i in hits.ids.tolist()], rtol=1e-4, atol=1e-4)
        # exact=True and ignore=True search the originals
        ex = eng.search(q[qi], limit=10, exact=True)
        np.testing.assert_array_equal(ex.ids, truth_ids[qi][:10])
    eng.close()


@pytest.mark.parametrize("quant,tolerance", [("scalar", 0.05), ("binary", 0.55), ("binary2", 0.3),
                                             ("product", 0.3)])
def test_unrescored_scores_estimate_exact_scale(tmp_path, quant, tolerance):
    """rescore=False scores estimate the exact ones (unbiased, on the same
    scale), so the coordinator can merge shards' approximate scores."""
    x = clustered(2000, 256, 5)
    q = clustered(10, 256, 6)
    eng = ShardEngine.create(str(tmp_path / "s"), config(256, quant, "dot", full_scan_threshold=500))
    eng.upsert(np.arange(len(x)), x)
    for v in q:
        h = eng.search(v, limit=2000, rescore=False)
        exact = x[h.ids.astype(np.int64)] @ v
        err = h.scores - exact
        assert abs(err.mean()) < 0.05 * exact.std(), quant  # no bias
        assert np.abs(err).mean() < tolerance * exact.std(), quant
        assert np.corrcoef(h.scores, exact)[0, 1] > 0.8
    eng.close()


def test_batch_search_equals_single(tmp_path):
    x = clustered(3000, 40, 7)
    q = clustered(8, 40, 8)
    eng = ShardEngine.create(str(tmp_path / "s"), config(40, "binary", full_scan_threshold=1000))
    eng.upsert(np.arange(len(x)), x)
    assert eng.stats()["lists"] > 1
    batch = eng.search_batch(q, limit=10, oversampling=2.0, with_payload=True)
    for v, b in zip(q, batch):
        s = eng.search(v, limit=10, oversampling=2.0, with_payload=True)
        np.testing.assert_array_equal(s.ids, b.ids)
        np.testing.assert_allclose(s.scores, b.scores)
    eng.close()


def test_score_threshold_and_payload_vector(engine):
    x = clustered(300, 32, 9)
    engine.upsert(np.arange(300), x, [{"i": i} for i in range(300)])
    h = engine.search(x[0], limit=10, oversampling=2.0, score_threshold=0.9, with_payload=True, with_vector=True)
    assert (h.scores >= 0.9).all() and h.ids[0] == 0
    assert h.payloads[0] == {"i": 0}
    assert h.vectors.shape == (len(h), 32)


def test_reopen_scores_identically(tmp_path):
    path = str(tmp_path / "s")
    x = clustered(5000, 64, 10)
    q = clustered(10, 64, 11)
    eng = ShardEngine.create(path, config(64, "binary", full_scan_threshold=2000))
    for s in range(0, 5000, 500):
        eng.upsert(np.arange(s, s + 500), x[s:s + 500], [{"s": int(s)}] * 500)
    eng.delete(np.arange(0, 100))
    before = [eng.search(v, 10, 2.0, rescore=False) for v in q]
    stats = eng.stats()
    eng.close()
    eng = ShardEngine.open(path)
    assert eng.count() == 4900 and eng.stats()["lists"] == stats["lists"]
    for v, b in zip(q, before):
        a = eng.search(v, 10, 2.0, rescore=False)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)
    eng.close()


@pytest.mark.parametrize("hnsw", [None, HnswConfig(m=8, ef_construct=64)], ids=["ivf", "hnsw"])
def test_reopen_rotated_product_codes_scores_identically(tmp_path, hnsw):
    """x32 product codes at a width that is not a multiple of 8 (60, padded to
    64 and rotated): the reopened shard reads back the same rotation."""
    path = str(tmp_path / "s")
    x, q = clustered(3000, 60, 12), clustered(10, 60, 13)
    cfg = CollectionConfig(dim=60, distance="cosine", hnsw=hnsw,
                           quantization=QuantizationConfig(kind="product", compression="x32"),
                           index=IndexConfig(full_scan_threshold=500, nlist=16))
    eng = ShardEngine.create(path, cfg)
    for s in range(0, 3000, 1000):
        eng.upsert(np.arange(s, s + 1000), x[s:s + 1000])
    before = [eng.search(v, 10, 2.0, rescore=False) for v in q]
    # ~0.7 measured (x32 codes of isotropic noise); queries left unrotated find ~nothing
    assert recall([eng.search(v, 10, 4.0).ids for v in q], exact_topk(x, q, 10, "cosine")[0]) >= 0.6
    eng.close()
    eng = ShardEngine.open(path)
    for v, b in zip(q, before):
        a = eng.search(v, 10, 2.0, rescore=False)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)
    eng.close()


def test_open_checks_the_format(tmp_path):
    """A shard of an unknown (newer) format is refused, not misread; one of
    format 1 opens, and its next index write records the current format."""
    from shard.engine import FORMAT_VERSION
    from shard.storage.lmdb_store import LmdbVectorStore

    def set_format(path, fmt):
        store = LmdbVectorStore(path, 1)
        store.put_meta({"format": fmt})
        store.close()

    def get_format(path):
        store = LmdbVectorStore(path, 1)
        try:
            return store.get_meta("format")
        finally:
            store.close()

    path = str(tmp_path / "s")
    x = clustered(1500, 16, 3)
    eng = ShardEngine.create(path, config(16, "product", full_scan_threshold=100))
    eng.upsert(np.arange(300), x[:300])
    eng.close()
    set_format(path, b"99")
    with pytest.raises(FailedPrecondition, match="format b'99'"):
        ShardEngine.open(path)
    set_format(path, b"1")
    eng = ShardEngine.open(path)
    assert eng.count() == 300
    eng.upsert(np.arange(300, 1500), x[300:])  # grows the shard 5x: a retrain writes the index
    eng.close()
    assert get_format(path) == FORMAT_VERSION


def test_create_and_open_errors(tmp_path):
    path = str(tmp_path / "s")
    ShardEngine.create(path, config(8)).close()
    with pytest.raises(AlreadyExists):
        ShardEngine.create(path, config(8))
    with pytest.raises(NotFound):
        ShardEngine.open(str(tmp_path / "nothing"))


@pytest.mark.parametrize("kwargs,match", [
    ({"limit": 0}, "limit must be >= 1"),
    ({"limit": 10**9}, "limit must be <="),
    ({"oversampling": 0.5}, "oversampling must be in"),
    ({"oversampling": MAX_OVERSAMPLING * 2}, "oversampling must be in"),
    ({"oversampling": float("nan")}, "oversampling must be in"),
    ({"effort": 0}, "effort"),
    ({"score_threshold": float("inf")}, "score_threshold"),
])
def test_search_rejects_bad_parameters(engine, kwargs, match):
    engine.upsert([1], np.ones((1, 32)))
    args = {"limit": 5, **kwargs}
    with pytest.raises(InvalidArgument, match=match):
        engine.search(np.ones(32, np.float32), **args)


@pytest.mark.parametrize("vectors,ids,payloads,match", [
    (np.ones((2, 31)), [1, 2], None, "dimension is 31"),
    (np.array([[np.nan] * 32, [1.0] * 32]), [1, 2], None, "NaN or Inf"),
    (np.array([[1.0] * 32, [np.inf] * 32]), [1, 2], None, "NaN or Inf"),
    (np.zeros((2, 32)), [1, 2], None, "all zeros"),
    (np.ones((2, 32)), [1], None, "ids"),
    (np.ones((2, 32)), [1, -2], None, "negative"),
    (np.ones((2, 32)), ["a", "b"], None, "unsigned"),
    (np.ones((2, 32)), [1, 2], [{"a": 1}, [1, 2]], "JSON object"),
    (np.ones((2, 32)), [1, 2], [{"a": 1}, {"b": float("nan")}], "not valid JSON"),
    (np.ones((2, 32)), [1, 2], [{"a": 1}], "payloads for 2 points"),
])
def test_rejected_batch_writes_nothing(engine, vectors, ids, payloads, match):
    engine.upsert([100], np.ones((1, 32)), [{"keep": True}])
    with pytest.raises(InvalidArgument, match=match):
        engine.upsert(ids, vectors, payloads)
    assert engine.count() == 1
    assert engine.retrieve([1, 2]).ids.tolist() == []
    assert engine.retrieve([100]).payloads == [{"keep": True}]


@pytest.mark.parametrize("bad", [
    {"distance": "manhattan"},
    {"quantization": {"kind": "ternary"}},
    {"quantization": {"kind": "binary", "encoding": "three_bits"}},
    {"quantization": {"kind": "product", "compression": "x3"}},
    {"quantization": {"kind": "scalar", "quantile": 0.1}},
    {"dim": 0},
    {"dim": 8192, "quantization": {"kind": "binary"}},
])
def test_config_rejects_unknown_options(bad):
    d = {"dim": 8, **bad}
    with pytest.raises(InvalidArgument):
        CollectionConfig.from_dict(d)


def test_recall_synthetic_through_retraining(tmp_path):
    """Seeded clustered data grown past the full-scan threshold into IVF lists.

    Isotropic noise inside clusters is the hardest case for 1-bit codes (no
    structure for the signs to catch), hence the higher oversampling; the
    docs384 test holds the real-data targets.
    """
    x = clustered(12_000, 128, 12, centers=60)
    q = clustered(100, 128, 13, centers=60)
    truth, _ = exact_topk(x, q, 10, "cosine")
    for quant, floor in [("binary", 0.8), ("binary1.5", 0.85), ("binary2", 0.93), ("scalar", 0.97),
                         ("product", 0.97), ("none", 0.97)]:
        eng = ShardEngine.create(str(tmp_path / quant), config(128, quant, full_scan_threshold=4000))
        for s in range(0, len(x), 3000):
            eng.upsert(np.arange(s, s + 3000), x[s:s + 3000])
        assert eng.stats()["lists"] > 1
        found = [h.ids for h in eng.search_batch(q, limit=10, oversampling=10.0, effort=32)]
        r = recall(found, truth)
        assert r >= floor, (quant, r)
        eng.close()


def test_warm_retrain_assigns_points_among_near_lists(tmp_path):
    """A retrain that keeps the list count starts from the old centroids and assigns
    each point among the lists nearest its old one: nearly every point lands in its
    truly nearest list, and none is lost or left in a far one."""
    from shard.index import ivf

    x = clustered(9_000, 32, 21, centers=200)
    eng = ShardEngine.create(str(tmp_path / "s"), config(32, "scalar", full_scan_threshold=2000, nlist=80,
                                                         retrain_growth=4))
    for s in range(0, len(x), 1000):
        eng.upsert(np.arange(s, s + 1000), x[s:s + 1000])
    assert eng._index.trained_n >= 8000  # retrained at 2,000 (cold) and 8,000 (warm)
    ids = np.arange(len(x), dtype=np.uint64)
    lists = eng._codes.lists_of(ids)
    assert (lists >= 0).all()
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)  # cosine: stored normalised
    c = eng._index.centroids
    best = ivf.assign(xn, c)
    assert (lists == best).mean() > 0.9
    d_got = ((xn - c[lists]) ** 2).sum(1)
    d_best = ((xn - c[best]) ** 2).sum(1)
    assert (d_got <= d_best * 1.5 + 1e-6).all()
    np.testing.assert_array_equal(eng._codes.lists_of(np.array([10**9], np.uint64)), [-1])
    eng.close()


def _until_located(eng, q, limit_s=10.0):
    """Search until the engine holds a node table for the current snapshot (its
    build runs in a thread that a search starts); bounded in time."""
    import time

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        eng.search(q, limit=5)
        held = eng._codes.row_nodes
        with eng.store.read_txn() as txn:
            if held is not None and held[0] == txn.id():
                return
        time.sleep(0.005)
    raise AssertionError("no node table within the time limit")


@pytest.mark.parametrize("kind,distance", [("ivf", "cosine"), ("hnsw", "cosine"), ("hnsw", "euclid")])
def test_located_rescoring_follows_writes_and_deletes(tmp_path, kind, distance):
    """Rescoring by the node table (no B-tree descents) gives exact scores of the
    current originals: a write or delete makes the table stale at once (searches
    read by descent), and the next table serves the new values."""
    from shard.config import HnswConfig
    from shard.engine import LOCATE_MIN_POINTS

    d, n = 24, LOCATE_MIN_POINTS + 1000
    x = clustered(n, d, 11)
    base = config(d, "scalar", distance, full_scan_threshold=1000)
    cfg = base if kind == "ivf" else CollectionConfig(dim=d, distance=distance, quantization=base.quantization,
                                                      hnsw=HnswConfig(m=8, ef_construct=40, ef=64))
    eng = ShardEngine.create(str(tmp_path / "s"), cfg)
    eng.upsert(np.arange(n), x)
    q = clustered(4, d, 12)
    pages = eng.store.pages

    def check(model_ids, model_x):
        for v in q:
            hits = eng.search(v, limit=10, oversampling=2.0)
            assert set(hits.ids.tolist()) <= set(model_ids.tolist())
            pos = np.searchsorted(model_ids, hits.ids)
            _, want = exact_topk(model_x[pos], v[None], len(pos), distance)
            np.testing.assert_allclose(hits.scores, want[0], rtol=1e-5, atol=1e-6)

    _until_located(eng, q[0])
    before = pages.located_reads
    check(np.arange(n), x)
    assert pages.located_reads >= before + len(q)
    before = pages.located_reads
    batch = eng.search_batch(q, limit=10, oversampling=2.0)  # the union read at its nodes
    assert pages.located_reads == before + 1
    for v, b in zip(q, batch):
        one = eng.search(v, limit=10, oversampling=2.0)
        np.testing.assert_array_equal(b.ids, one.ids)
        np.testing.assert_allclose(b.scores, one.scores, rtol=1e-6)

    # the first 40 points become the queries themselves: the top of every search
    moved = np.arange(40)
    x2 = x.copy()
    x2[moved] = np.repeat(q, 10, axis=0)
    eng.upsert(moved, x2[moved])
    check(np.arange(n), x2)  # the stale table is not used
    _until_located(eng, q[0])
    before = pages.located_reads
    check(np.arange(n), x2)
    assert pages.located_reads >= before + len(q)
    assert eng.search(q[1], limit=1).ids[0] in moved[10:20]

    eng.delete(moved)
    keep = np.arange(40, n)
    check(keep, x2[40:])
    _until_located(eng, q[0])
    check(keep, x2[40:])
    assert pages.fallbacks == 0 and eng.node_tables_built >= 3
    eng.close()
    assert eng._locator is None


def test_located_rescoring_under_concurrent_writes(tmp_path):
    """Searches in threads while a writer keeps replacing vectors: every hit's exact
    score is the score of the vector returned with it (read by descent in the same
    snapshot), whether its rescoring read by node table or by descent; each vector
    is one some write stored whole. Bounded in count and time."""
    import threading
    import time

    from shard.engine import LOCATE_MIN_POINTS

    d, n = 16, LOCATE_MIN_POINTS + 500
    rng = np.random.default_rng(5)
    basis = rng.standard_normal((n, d)).astype(np.float32)

    def rows(ids, version):
        out = basis[ids].copy()
        out[:, 0] = version + 1.0  # the version is readable from the vector
        return out

    eng = ShardEngine.create(str(tmp_path / "s"), config(d, "scalar", distance="dot", full_scan_threshold=1000))
    ids = np.arange(n)
    eng.upsert(ids, rows(ids, 0))
    errors, stop = [], threading.Event()
    queries = rng.standard_normal((8, d)).astype(np.float32)

    def searcher(seed):
        try:
            for it in range(400):
                if stop.is_set():
                    return
                q = queries[(seed + it) % len(queries)]
                hits = eng.search(q, limit=10, oversampling=2.0, with_vector=True)
                version = hits.vectors[:, 0] - 1.0
                assert np.array_equal(version, np.round(version)) and (version >= 0).all()
                np.testing.assert_allclose(hits.vectors, rows(hits.ids.astype(np.int64), version),
                                           rtol=0, atol=0)
                np.testing.assert_allclose(hits.scores, hits.vectors @ q, rtol=1e-5, atol=1e-4)
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=searcher, args=(s,)) for s in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 8
    for version in range(1, 60):
        if time.monotonic() > deadline or errors:
            break
        batch = np.unique(rng.choice(ids, 300))
        eng.upsert(batch, rows(batch, version))
        time.sleep(0.01)  # room for a node table between writes
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors[0]
    assert eng.node_tables_built >= 1 and eng.store.pages.located_reads >= 1
    assert eng.store.pages.fallbacks == 0
    eng.close()
