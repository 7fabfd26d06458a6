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
    assert [i.tolist() for i, _ in store.iter_vectors(chunk=64)] and \
        np.array_equal(np.concatenate([i for i, _ in store.iter_vectors(chunk=64)]), ids)
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
