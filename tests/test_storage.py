"""LmdbVectorStore writes: key order, append mode and overwrites give what a plain dict would."""

import numpy as np
import pytest

from shard.storage.lmdb_store import LmdbVectorStore

DIM = 8
REC = np.dtype([("list", "<i4"), ("half_sqnorm", "<f4")])


def records(ids):
    rec = np.zeros(len(ids), REC)
    rec["list"] = ids % 7
    rec["half_sqnorm"] = ids * 0.5
    return rec


def vectors(ids):
    return (ids[:, None] * 10 + np.arange(DIM)[None, :]).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_put_points_in_any_order_matches_a_dict(tmp_path, seed):
    """Batches in id order (appended), shuffled, overlapping earlier ones and below them,
    with payloads set, replaced and removed: the store holds the last write of each id."""
    rng = np.random.default_rng(seed)
    store = LmdbVectorStore(str(tmp_path / "s"), DIM)
    want_vec, want_pay, want_rec = {}, {}, {}
    batches = [np.arange(0, 100), np.arange(100, 200)[::-1], rng.permutation(300)[:120],
               np.arange(500, 520), rng.permutation(np.arange(50, 600))[:200]]
    for b, ids in enumerate(batches):
        ids = ids.astype(np.uint64)
        pays = None if b % 2 else [None if i % 3 == 0 else f'{{"b":{b},"i":{i}}}'.encode() for i in ids]
        vec, rec = vectors(ids) + b, records(ids)
        store.put_points(ids, vec, pays, rec)
        for j, i in enumerate(ids.tolist()):
            want_vec[i], want_rec[i] = vec[j], rec[j].tobytes()
            p = None if pays is None else pays[j]
            if p is None:
                want_pay.pop(i, None)
            else:
                want_pay[i] = p
    ids = np.array(sorted(want_vec), np.uint64)
    with store.read_txn() as txn:
        found, got = store.get_vectors(txn, ids)
        assert found.all()
        np.testing.assert_array_equal(got, np.stack([want_vec[i] for i in ids.tolist()]))
        assert store.get_payloads(txn, ids) == [want_pay.get(i) for i in ids.tolist()]
    rid, recs = store.all_code_records(REC.itemsize)
    np.testing.assert_array_equal(rid, ids)
    assert [r.tobytes() for r in recs] == [want_rec[i] for i in ids.tolist()]
    chunks = list(store.iter_vectors(chunk=64))
    assert len(chunks) > 1 and all(len(i) <= 64 for i, _ in chunks)
    np.testing.assert_array_equal(np.concatenate([i for i, _ in chunks]), ids)
    np.testing.assert_array_equal(np.concatenate([v for _, v in chunks]),
                                  np.stack([want_vec[i] for i in ids.tolist()]))
    assert store.pages.fallbacks == 0
    store.close()


@pytest.mark.parametrize("fail_at", [0, 2])
def test_iter_vectors_goes_on_through_the_cursor_when_the_pages_fail(tmp_path, fail_at):
    """When the page reader cannot vouch for a chunk (here: told to fail from chunk
    ``fail_at`` on), the rest comes through LMDB's cursor from that chunk's first key:
    every point once, in id order, with its vector."""
    store = LmdbVectorStore(str(tmp_path / "s"), DIM)
    ids = np.unique(np.random.default_rng(1).integers(0, 1 << 40, 700)).astype(np.uint64)
    x = vectors(ids)
    store.put_points(ids, x, None, np.zeros((len(ids), 0), np.uint8))
    read_at, calls = store.pages.read_at, []

    def failing(*a):
        calls.append(1)
        return None if len(calls) > fail_at else read_at(*a)

    store.pages.read_at = failing
    chunks = list(store.iter_vectors(chunk=100))
    assert len(calls) == fail_at + 1
    np.testing.assert_array_equal(np.concatenate([i for i, _ in chunks]), ids)
    np.testing.assert_array_equal(np.concatenate([v for _, v in chunks]), x)
    store.close()


def test_put_points_without_code_bytes(tmp_path):
    store = LmdbVectorStore(str(tmp_path / "s"), DIM)
    ids = np.array([5, 3, 9], np.uint64)
    store.put_points(ids, vectors(ids), None, np.zeros((3, 0), np.uint8))
    with store.read_txn() as txn:
        found, got = store.get_vectors(txn, np.array([3, 5, 9], np.uint64))
    assert found.all()
    np.testing.assert_array_equal(got, vectors(np.array([3, 5, 9], np.uint64)))
    store.close()


# -- reading originals from the data file's pages (shard/storage/pages.py) --------------

@pytest.mark.parametrize("dim", [8, 384, 1024])  # 1024 dims: 4 KiB values, on overflow pages
def test_page_reads_match_lmdb_through_writes_deletes_and_growth(tmp_path, dim):
    """Random upserts, replacements and deletes in a store small enough to grow its map
    several times: after each batch the page reader gives exactly what py-lmdb gives,
    for present and absent ids, in the order asked, and never falls back."""
    rng = np.random.default_rng(dim)
    store = LmdbVectorStore(str(tmp_path / "s"), dim, map_size=1 << 20)
    model: dict[int, np.ndarray] = {}
    for step in range(12):
        ids = np.unique(rng.integers(0, 4000, 600)).astype(np.uint64)
        vec = rng.standard_normal((len(ids), dim)).astype(np.float32)
        store.put_points(ids, vec, None, np.zeros((len(ids), 0), np.uint8))
        model.update(zip(ids.tolist(), vec))
        if step % 3 == 2:
            gone = rng.choice(np.array(sorted(model), np.uint64), 150, replace=False)
            store.delete_points(np.sort(gone))
            for i in gone.tolist():
                model.pop(i)
        ask = rng.integers(0, 4100, 300).astype(np.uint64)  # some absent, some repeated, unsorted
        with store.read_txn() as txn:
            found, got = store.get_vectors(txn, ask)
            found_l, got_l = store.get_vectors_lmdb(txn, ask)
        np.testing.assert_array_equal(found, [i in model for i in ask.tolist()])
        np.testing.assert_array_equal(found, found_l)
        np.testing.assert_array_equal(got, got_l)
        np.testing.assert_array_equal(got, np.stack([model[i] for i in ask.tolist() if i in model]))
    assert store.map_generation >= (1 if dim >= 384 else 0)  # the map grew under the reader
    assert store.pages.fallbacks == 0
    store.close()


def test_page_reads_see_their_own_snapshot(tmp_path):
    """A read transaction opened before a write keeps reading the values it saw,
    from pages LMDB keeps for it, while a newer one reads the new values."""
    store = LmdbVectorStore(str(tmp_path / "s"), DIM)
    ids = np.arange(0, 2000, dtype=np.uint64)
    store.put_points(ids, vectors(ids), None, np.zeros((len(ids), 0), np.uint8))
    old = store.read_txn()
    try:
        store.put_points(ids[::2], vectors(ids[::2]) + 1000, None, np.zeros((1000, 0), np.uint8))
        store.delete_points(ids[1:100:2])
        _, before = store.get_vectors(old, ids)
        np.testing.assert_array_equal(before, vectors(ids))
        with store.read_txn() as txn:
            found, after = store.get_vectors(txn, ids)
        want = vectors(ids)
        want[::2] += 1000
        keep = np.ones(len(ids), bool)
        keep[1:100:2] = False
        np.testing.assert_array_equal(found, keep)
        np.testing.assert_array_equal(after, want[keep])
    finally:
        old.abort()
    assert store.pages.fallbacks == 0
    store.close()


def test_page_reads_of_an_empty_store(tmp_path):
    store = LmdbVectorStore(str(tmp_path / "s"), DIM)
    with store.read_txn() as txn:
        found, got = store.get_vectors(txn, np.array([1, 2], np.uint64))
    assert not found.any() and got.shape == (0, DIM)
    store.close()


def test_page_reads_under_concurrent_writes_and_map_growth(tmp_path):
    """Readers in their own transactions while a writer replaces, deletes and grows the
    map: every vector read is one some write stored whole (its id and version in it,
    the rest derived from them), never a torn or foreign row. Bounded in count and time."""
    import threading
    import time

    dim = 384
    store = LmdbVectorStore(str(tmp_path / "s"), dim, map_size=1 << 20)
    ids = np.arange(3000, dtype=np.uint64)

    def rows(ids, version):
        ids = ids.astype(np.int64)
        v = np.broadcast_to(np.asarray(version, np.int64), ids.shape)
        out = np.empty((len(ids), dim), np.float32)
        out[:, 0] = ids
        out[:, 1] = v
        out[:, 2:] = (ids[:, None] * 7 + v[:, None] * 13 + np.arange(dim - 2)[None, :]) % 1009
        return out

    guard = threading.Lock()  # the engine's rule: no transaction open while the map grows
    store._exclusive = lambda: guard
    store.put_points(ids, rows(ids, 0), None, np.zeros((len(ids), 0), np.uint8))
    errors, stop = [], threading.Event()

    def reader(seed):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(300):
                if stop.is_set():
                    return
                ask = rng.choice(ids, 64)
                with guard, store.read_txn() as txn:
                    found, got = store.get_vectors(txn, ask)
                want_ids = ask[found].astype(np.float32)
                assert np.array_equal(got[:, 0], want_ids)
                np.testing.assert_array_equal(got, rows(ask[found], got[:, 1].astype(np.int64)))
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    rng = np.random.default_rng(9)
    deadline = time.monotonic() + 20
    for version in range(1, 40):
        if time.monotonic() > deadline or errors:
            break
        batch = np.unique(rng.choice(ids, 500))
        store.put_points(batch, rows(batch, version), None, np.zeros((len(batch), 0), np.uint8))
        if version % 5 == 0:
            store.delete_points(np.unique(rng.choice(ids, 50)))
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors[0]
    assert store.map_generation >= 1 and store.pages.fallbacks == 0
    store.close()


@pytest.mark.parametrize("dim", [8, 384, 1024])
def test_located_reads_match_descents(tmp_path, dim):
    """``pages.nodes`` lists every value of the snapshot in key order, and reading by
    those nodes (``get_vectors_at``) gives what a descent gives, absent ids included,
    without falling back; a node table from an older snapshot is caught by its key
    check and the read falls back to a descent with the right answer."""
    rng = np.random.default_rng(dim)
    store = LmdbVectorStore(str(tmp_path / "s"), dim)
    ids = np.unique(rng.integers(0, 1 << 40, 3000)).astype(np.uint64)
    x = rng.standard_normal((len(ids), dim)).astype(np.float32)
    store.put_points(ids, x, None, np.zeros((len(ids), 0), np.uint8))
    store.delete_points(ids[::7])
    live = np.ones(len(ids), bool)
    live[::7] = False
    with store.read_txn() as txn:
        keys, nodes = store.pages.nodes(txn)
    np.testing.assert_array_equal(keys, ids[live])  # ids are sorted: key order
    # the table is by "slot": here slot i holds ids[i]
    table = np.full(len(ids), -1, np.int64)
    table[np.flatnonzero(live)] = nodes
    ask = rng.permutation(len(ids))[:500]
    with store.read_txn() as txn:
        found, got = store.get_vectors_at(txn, ids[ask], ask, table)
        found_d, got_d = store.get_vectors(txn, ids[ask])
    np.testing.assert_array_equal(found, live[ask])
    np.testing.assert_array_equal(found, found_d)
    np.testing.assert_array_equal(got, got_d)
    np.testing.assert_array_equal(got, x[ask[live[ask]]])
    assert store.pages.fallbacks == 0
    # slot 0 claims the node of another id: the key check refuses it, and a descent answers
    wrong = table.copy()
    wrong[np.flatnonzero(live)[:2]] = table[np.flatnonzero(live)[[1, 0]]]
    with store.read_txn() as txn:
        found, got = store.get_vectors_at(txn, ids[live][:2], np.flatnonzero(live)[:2], wrong)
    np.testing.assert_array_equal(got, x[live][:2])
    assert store.pages.fallbacks == 1
    store.close()


def test_located_nodes_of_an_empty_store(tmp_path):
    store = LmdbVectorStore(str(tmp_path / "s"), DIM)
    with store.read_txn() as txn:
        keys, nodes = store.pages.nodes(txn)
    assert len(keys) == 0 and len(nodes) == 0
    store.close()


@pytest.mark.parametrize("use_sqnorm", [False, True])
@pytest.mark.parametrize("dim", [8, 384, 1024])
def test_located_ranks_match_numpy(tmp_path, dim, use_sqnorm):
    """``pages.ranks_at`` (read in place and ranked in one kernel) against numpy on
    the same vectors: <x, q> (minus 0.5 ||x||^2 for euclid), best first, ties in the
    order asked, absent points left out."""
    rng = np.random.default_rng(dim + use_sqnorm)
    store = LmdbVectorStore(str(tmp_path / "s"), dim)
    ids = np.arange(2500, dtype=np.uint64) * 3
    x = rng.standard_normal((len(ids), dim)).astype(np.float32)
    x[5] = x[6]  # a tie
    store.put_points(ids, x, None, np.zeros((len(ids), 0), np.uint8))
    store.delete_points(ids[10:20])
    with store.read_txn() as txn:
        keys, nodes = store.pages.nodes(txn)
    table = np.full(len(ids), -1, np.int64)
    table[np.searchsorted(ids, keys)] = nodes
    ask = np.concatenate([[6, 5, 12], rng.permutation(len(ids))[:60]])
    ask = ask[np.sort(np.unique(ask, return_index=True)[1])]
    q = rng.standard_normal(dim).astype(np.float32)
    got_ids, got_r = store.pages.ranks_at(table, ask, ids[ask], q, use_sqnorm)
    present = ask[table[ask] >= 0]
    r = x[present].astype(np.float64) @ q
    if use_sqnorm:
        r -= 0.5 * (x[present].astype(np.float64) ** 2).sum(1)
    order = np.argsort(-r.astype(np.float32), kind="stable")
    np.testing.assert_array_equal(got_ids, ids[present][order])
    np.testing.assert_allclose(got_r, r[order], rtol=1e-4, atol=1e-4)
    assert store.pages.fallbacks == 0
    store.close()
