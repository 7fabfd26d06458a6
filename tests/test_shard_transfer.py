"""Shard transfer (ExportShard, BeginReceive, ImportPoints, EndReceive) and snapshots
(SnapshotShard, RestoreShard) against real shard-node processes on loopback."""

from __future__ import annotations

import json
import threading
import time

import grpc
import numpy as np
import pytest

from quiver import convert
from quiver.v1 import shard_node_pb2 as spb
from quiver.v1 import shard_node_pb2_grpc as spb_grpc
from shard.config import CollectionConfig, IndexConfig, QuantizationConfig
from shard.errors import FailedPrecondition
from shard.node import ShardNode, ShardPoints

DIM = 32
T = 20  # seconds: every call's deadline
CONFIG = CollectionConfig(dim=DIM, distance="euclid", quantization=QuantizationConfig(kind="scalar"),
                          index=IndexConfig(full_scan_threshold=500))
CONFIG_JSON = convert.config_to_json(CONFIG)


@pytest.fixture(scope="module")
def stubs(shard_nodes):
    channels = [grpc.insecure_channel(n.address) for n in shard_nodes]
    yield [spb_grpc.ShardNodeStub(ch) for ch in channels]
    for ch in channels:
        ch.close()


def ref(collection: str, shard_id: int = 0) -> spb.ShardRef:
    return spb.ShardRef(collection=collection, shard_id=shard_id)


def vectors_of(ids: np.ndarray, gen: int = 0) -> np.ndarray:
    """A vector that says which id and which write made it: [id, gen, noise...]."""
    ids = np.asarray(ids, np.uint64)
    rng = np.random.default_rng(int(ids[0]) * 7919 + gen if len(ids) else 0)
    x = rng.standard_normal((len(ids), DIM)).astype(np.float32)
    x[:, 0] = ids.astype(np.float32)
    x[:, 1] = gen
    return x


def payloads_of(ids, gen: int = 0) -> list[bytes]:
    return [b"" if i % 3 == 0 else json.dumps({"id": int(i), "gen": gen, "t": "é"}).encode() for i in ids]


def upsert(stub, r, ids, gen=0, with_payloads=True):
    ids = np.asarray(ids, np.uint64)
    stub.Upsert(spb.ShardUpsertRequest(shard=r, ids=convert.ids_to_bytes(ids),
                                       vectors=convert.vectors_to_proto(vectors_of(ids, gen)),
                                       payloads=payloads_of(ids, gen) if with_payloads else []), timeout=T)


def delete(stub, r, ids):
    return stub.Delete(spb.ShardIdsRequest(shard=r, ids=convert.ids_to_bytes(np.asarray(ids, np.uint64))),
                       timeout=T).deleted


def create(stub, r, config_json=CONFIG_JSON):
    stub.CreateShard(spb.CreateShardRequest(shard=r, config_json=config_json), timeout=T)


def retrieve(stub, r, ids):
    msg = stub.Retrieve(spb.ShardRetrieveRequest(shard=r, ids=convert.ids_to_bytes(np.asarray(ids, np.uint64)),
                                                 with_payload=True, with_vector=True), timeout=T)
    return convert.shard_points_from_proto(msg, True, True)


def export(stub, r, batch_size=0, sizes=None, pause=0.0):
    """(ids, vectors, payloads) of a whole ExportShard stream, concatenated."""
    ids, vecs, pays = [], [], []
    for msg in stub.ExportShard(spb.ExportShardRequest(shard=r, batch_size=batch_size), timeout=T):
        assert not msg.scores
        p = convert.shard_points_from_proto(msg, True, True)
        assert len(p.payloads) == len(p.ids) == len(p.vectors)
        ids.append(p.ids)
        vecs.append(p.vectors)
        pays += p.payloads
        if sizes is not None:
            sizes.append(len(p.ids))
        time.sleep(pause)
    if not ids:
        return np.zeros(0, np.uint64), np.zeros((0, DIM), np.float32), []
    return np.concatenate(ids), np.concatenate(vecs), pays


def count(stub, r) -> int:
    return stub.Count(r, timeout=T).count


def expect_code(code, fn, *args, **kw):
    with pytest.raises(grpc.RpcError) as e:
        fn(*args, **kw)
    assert e.value.code() == code, e.value.details()
    return e.value.details()


# ------------------------------------------------------------------ export


def test_export_equals_what_was_upserted(stubs):
    a = stubs[0]
    r = ref("exp", 1)
    create(a, r)
    ids = np.random.default_rng(1).permutation(np.arange(3000, dtype=np.uint64) * 11 + 5)
    for part in np.array_split(ids, 3):
        upsert(a, r, part)
    sizes = []
    got_ids, got_x, got_p = export(a, r, batch_size=700, sizes=sizes)
    assert sizes and max(sizes) <= 700 and sum(sizes) == 3000
    assert np.array_equal(got_ids, np.sort(ids))  # id order
    want = {int(i): (v, p) for part in np.array_split(ids, 3)
            for i, v, p in zip(part, vectors_of(part), payloads_of(part))}
    for i, v, p in zip(got_ids.tolist(), got_x, got_p):
        wv, wp = want[i]
        assert v.tobytes() == wv.tobytes()  # bit-exact
        assert (json.loads(p) if p else None) == (json.loads(wp) if wp else None)
    # the default batch size, and a shard that is not here
    assert len(export(a, r)[0]) == 3000
    expect_code(grpc.StatusCode.NOT_FOUND, lambda: list(a.ExportShard(
        spb.ExportShardRequest(shard=ref("nope")), timeout=T)))


def test_export_is_one_snapshot_while_writes_go_on(stubs):
    """A writer commits batches of 50 new ids (each also rewriting one old id) while a slow
    reader exports: the export holds whole batches only, a prefix of them, and each old id
    in the state of that same prefix."""
    a = stubs[0]
    r = ref("exp", 2)
    create(a, r)
    old = np.arange(2000, dtype=np.uint64)
    upsert(a, r, old)
    before = count(a, r)
    stop = threading.Event()
    done = []

    def writer():
        b = 0
        while not stop.is_set() and b < 400:
            new = np.arange(10_000 + 50 * b, 10_050 + 50 * b, dtype=np.uint64)
            ids = np.concatenate([new, [np.uint64(b)]])
            x = np.concatenate([vectors_of(new, 1), vectors_of([b], 1)])
            a.Upsert(spb.ShardUpsertRequest(shard=r, ids=convert.ids_to_bytes(ids),
                                            vectors=convert.vectors_to_proto(x)), timeout=T)
            b += 1
            done.append(b)

    t = threading.Thread(target=writer)
    t.start()
    try:
        while not done:
            time.sleep(0.01)
        ids, x, _ = export(a, r, batch_size=100, pause=0.01)
    finally:
        stop.set()
        t.join(T)
    after = count(a, r)
    assert before <= len(ids) <= after
    assert before < after  # writes did go on
    new = ids[ids >= 10_000]
    batches = (new - 10_000) // 50
    k = len(np.unique(batches))
    assert np.array_equal(np.bincount(batches.astype(np.int64), minlength=k), np.full(k, 50))  # whole batches
    assert np.array_equal(np.unique(batches), np.arange(k))  # a prefix
    assert np.array_equal(x[:, 0], ids.astype(np.float32))  # every vector is its id's
    rewritten = x[ids < 2000, 1] == 1
    assert np.array_equal(np.flatnonzero(rewritten), np.arange(k))  # old ids 0..k-1 rewritten, no more


def test_export_and_map_growth(tmp_path):
    """Map growth invalidates open transactions: the engine reserves room before an
    export, and an export that a growth overtakes anyway ends Unavailable."""
    from shard.engine import ShardEngine
    from shard.errors import Unavailable
    from shard.storage.lmdb_store import LmdbVectorStore

    store = LmdbVectorStore(str(tmp_path / "s"), DIM, map_size=1 << 20)
    ids = np.arange(2000, dtype=np.uint64)
    store.put_points(ids, vectors_of(ids), None, np.zeros((2000, 0), np.uint8))
    it = store.iter_batches(300)
    first = next(it)
    more = np.arange(100_000, 110_000, dtype=np.uint64)
    store.put_points(more, vectors_of(more), None, np.zeros((len(more), 0), np.uint8))  # grows the map
    with pytest.raises(Unavailable, match="start the export again"):
        list(it)
    assert len(first[0]) == 300
    store.close()

    small = LmdbVectorStore(str(tmp_path / "e"), DIM, map_size=1 << 20)
    small.put_meta({"config": json.dumps(CONFIG.to_dict()).encode()})
    eng = ShardEngine(str(tmp_path / "e"), CONFIG, small)
    ids = np.arange(3000, dtype=np.uint64)
    eng.upsert(ids, vectors_of(ids))
    assert small.env.info()["map_size"] < 2 * small.disk_bytes()
    it = eng.iter_batches(500)
    size0 = small.env.info()["map_size"]
    assert size0 >= 2 * small.disk_bytes() and small.map_generation == 1  # grown before the export began
    got = [next(it)]
    eng.upsert(more[:3000], vectors_of(more[:3000]))  # as many bytes as the shard held: room reserved
    got += list(it)
    assert small.env.info()["map_size"] == size0
    assert np.array_equal(np.concatenate([g[0] for g in got]), ids)
    assert np.array_equal(np.concatenate([g[1] for g in got]), vectors_of(ids))
    eng.close()


# ----------------------------------------------------------------- receive


def test_receive_live_writes_win_over_the_import(stubs):
    b = stubs[1]
    r = ref("recv", 1)
    b.BeginReceive(spb.BeginReceiveRequest(shard=r, config_json=CONFIG_JSON, token="t1"), timeout=T)
    X, Y, Z = 7, 8, 9
    upsert(b, r, [X], gen=2)  # live: newer than anything the source exports
    upsert(b, r, [Y], gen=2)
    assert delete(b, r, [Y]) == 1
    assert delete(b, r, [42]) == 0  # deleted live while absent here: the export's 42 is older too
    src = np.array([X, Y, Z, 42, 100], np.uint64)
    imp = spb.ImportPointsRequest(shard=r, token="t1", points=convert.shard_points_to_proto(
        ShardPoints(src, None, payloads_of(src), vectors_of(src))))
    resp = b.ImportPoints(imp, timeout=T)
    assert (resp.imported, resp.skipped) == (2, 3)
    got = retrieve(b, r, [X, Y, Z, 42, 100])
    assert got.ids.tolist() == [X, Z, 100]
    assert got.vectors[0, 1] == 2 and got.vectors[1, 1] == 0  # X keeps the live value
    assert json.loads(got.payloads[0])["gen"] == 2 and json.loads(got.payloads[2]) == json.loads(payloads_of([100])[0])

    bad = spb.ImportPointsRequest(shard=r, token="other", points=imp.points)
    assert "not receiving" in expect_code(grpc.StatusCode.FAILED_PRECONDITION, b.ImportPoints, bad, timeout=T)
    expect_code(grpc.StatusCode.FAILED_PRECONDITION, b.EndReceive,
                spb.EndReceiveRequest(shard=r, token="other"), timeout=T)
    expect_code(grpc.StatusCode.FAILED_PRECONDITION, b.ImportPoints,
                spb.ImportPointsRequest(shard=ref("recv", 99), token="t1", points=imp.points), timeout=T)
    assert b.EndReceive(spb.EndReceiveRequest(shard=r, token="t1"), timeout=T).points == 3
    expect_code(grpc.StatusCode.FAILED_PRECONDITION, b.ImportPoints, imp, timeout=T)  # ended
    expect_code(grpc.StatusCode.FAILED_PRECONDITION, b.EndReceive,
                spb.EndReceiveRequest(shard=r, token="t1"), timeout=T)

    # an existing shard: ALREADY_EXISTS, unless replace (which starts empty)
    begin = spb.BeginReceiveRequest(shard=r, config_json=CONFIG_JSON, token="t2")
    expect_code(grpc.StatusCode.ALREADY_EXISTS, b.BeginReceive, begin, timeout=T)
    begin.replace = True
    b.BeginReceive(begin, timeout=T)
    assert count(b, r) == 0
    assert b.EndReceive(spb.EndReceiveRequest(shard=r, token="t2"), timeout=T).points == 0
    b.DropShard(r, timeout=T)


def test_receive_races_between_live_writes_and_imports(stubs):
    """Live upserts and imports of the same ids at once: every id written live ends with its live value."""
    b = stubs[1]
    r = ref("recv", 2)
    b.BeginReceive(spb.BeginReceiveRequest(shard=r, config_json=CONFIG_JSON, token="race"), timeout=T)
    ids = np.arange(1000, dtype=np.uint64)
    live = np.random.default_rng(3).permutation(ids)[:300]

    def importer():
        for part in np.array_split(ids, 20):
            b.ImportPoints(spb.ImportPointsRequest(shard=r, token="race", points=convert.shard_points_to_proto(
                ShardPoints(part, None, None, vectors_of(part, 0)))), timeout=T)

    t = threading.Thread(target=importer)
    t.start()
    for part in np.array_split(live, 30):
        for i in part:
            upsert(b, r, [i], gen=5, with_payloads=False)
    t.join(T)
    assert b.EndReceive(spb.EndReceiveRequest(shard=r, token="race"), timeout=T).points == 1000
    got = retrieve(b, r, ids)
    assert len(got.ids) == 1000
    gen = dict(zip(got.ids.tolist(), got.vectors[:, 1].tolist()))
    assert all(gen[i] == 5 for i in live.tolist())
    assert sum(g == 0 for g in gen.values()) == 700
    b.DropShard(r, timeout=T)


def test_a_restarted_node_forgot_the_receive(tmp_path):
    from quiver.local import spawn, terminate, wait_port_file

    data, pf, log = tmp_path / "node", tmp_path / "node.port", tmp_path / "node.log"

    def start():
        p = spawn("shard-node", ["--listen", "127.0.0.1:0", "--data-dir", str(data), "--grace", "2"], pf, log)
        return p, f"127.0.0.1:{wait_port_file(pf, p, timeout=60, log_file=log)['port']}"

    p, address = start()
    try:
        r = ref("restart", 0)
        with grpc.insecure_channel(address) as ch:
            s = spb_grpc.ShardNodeStub(ch)
            s.BeginReceive(spb.BeginReceiveRequest(shard=r, config_json=CONFIG_JSON, token="tok"), timeout=T)
            upsert(s, r, [1, 2, 3])
        terminate([p.pid], timeout=10)
        p.wait(timeout=10)
        p, address = start()
        with grpc.insecure_channel(address) as ch:
            s = spb_grpc.ShardNodeStub(ch)
            assert count(s, r) == 3  # the shard is back, its receive mode is not
            src = np.array([4], np.uint64)
            imp = spb.ImportPointsRequest(shard=r, token="tok", points=convert.shard_points_to_proto(
                ShardPoints(src, None, None, vectors_of(src))))
            expect_code(grpc.StatusCode.FAILED_PRECONDITION, s.ImportPoints, imp, timeout=T)
            expect_code(grpc.StatusCode.FAILED_PRECONDITION, s.EndReceive,
                        spb.EndReceiveRequest(shard=r, token="tok"), timeout=T)
            assert count(s, r) == 3
    finally:
        terminate([p.pid], timeout=10)
        p.wait(timeout=10)


# --------------------------------------------------------------- snapshots


def snapshot(stub, r) -> list[spb.SnapshotChunk]:
    return list(stub.SnapshotShard(r, timeout=T))


def search(stub, r, queries):
    resp = stub.Search(spb.ShardSearchRequest(shard=r, queries=convert.vectors_to_proto(queries), limit=10,
                                              oversampling=2.0, rescore=True, with_payload=True,
                                              with_vector=True), timeout=T)
    return [(list(h.ids), list(h.scores), list(h.payloads), h.vectors.f32le) for h in resp.results]


def snapshot_files(node) -> list:
    d = node.data_dir / ".snapshots"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


@pytest.fixture(scope="module")
def snapshotted(stubs, shard_nodes):
    """A trained shard of 9000 points on node 0, its snapshot, and node 1 holding other data under its name."""
    a, b = stubs
    r = ref("snap", 3)
    create(a, r)
    ids = np.arange(9000, dtype=np.uint64) * 3
    for part in np.array_split(ids, 3):
        upsert(a, r, part)
    delete(a, r, ids[::10])
    chunks = snapshot(a, r)
    assert snapshot_files(shard_nodes[0]) == []  # the temp file is gone
    create(b, r)
    upsert(b, r, np.arange(50, dtype=np.uint64), gen=9)
    return r, chunks, ids


def test_snapshot_chunks_carry_what_the_contract_says(snapshotted):
    r, chunks, ids = snapshotted
    assert len(chunks) >= 2 and all(len(c.data) <= 1 << 20 for c in chunks)
    assert chunks[0].shard == r and convert.config_from_json(chunks[0].config_json) == CONFIG
    assert chunks[0].points == 9000 - 900
    assert chunks[-1].size == sum(len(c.data) for c in chunks)
    import hashlib

    assert chunks[-1].sha256 == hashlib.sha256(b"".join(c.data for c in chunks)).hexdigest()
    assert not any(c.sha256 for c in chunks[:-1])


def test_a_corrupt_snapshot_replaces_nothing(stubs, snapshotted, shard_nodes):
    b = stubs[1]
    r, chunks, _ = snapshotted
    before = retrieve(b, r, np.arange(60, dtype=np.uint64))
    bad = [spb.SnapshotChunk() for _ in chunks]
    for c, src in zip(bad, chunks):
        c.CopyFrom(src)
    data = bytearray(bad[1].data)
    data[len(data) // 2] ^= 0x40
    bad[1].data = bytes(data)
    details = expect_code(grpc.StatusCode.INVALID_ARGUMENT, b.RestoreShard, iter(bad), timeout=T)
    assert "checksum mismatch" in details
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, b.RestoreShard, iter(chunks[:-1]), timeout=T)  # cut short
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, b.RestoreShard, iter([]), timeout=T)
    after = retrieve(b, r, np.arange(60, dtype=np.uint64))
    assert after.ids.tolist() == before.ids.tolist() == list(range(50))
    assert after.vectors.tobytes() == before.vectors.tobytes() and after.payloads == before.payloads
    assert snapshot_files(shard_nodes[1]) == []


def test_restore_replaces_the_shard_with_an_identical_one(stubs, snapshotted, shard_nodes):
    a, b = stubs
    r, chunks, ids = snapshotted
    assert count(b, r) == 50
    assert b.RestoreShard(iter(chunks), timeout=T).points == 9000 - 900
    assert count(b, r) == count(a, r) == 8100
    queries = np.random.default_rng(5).standard_normal((4, DIM)).astype(np.float32) * 3
    queries[:, 0] = ids[[1, 500, 4000, 8999]].astype(np.float32)
    assert search(b, r, queries) == search(a, r, queries)
    probe = np.arange(0, 27_010, 7, dtype=np.uint64)
    ra, rb = retrieve(a, r, probe), retrieve(b, r, probe)
    assert ra.ids.tolist() == rb.ids.tolist() and len(ra.ids) > 1000
    assert ra.vectors.tobytes() == rb.vectors.tobytes() and ra.payloads == rb.payloads
    # the restored shard takes writes, and a restart of its node would reopen it from its own folder
    upsert(b, r, [1], gen=3)
    assert count(b, r) == 8101
    assert snapshot_files(shard_nodes[1]) == []
    assert (shard_nodes[1].data_dir / "snap" / "3" / "data.mdb").exists()


def test_a_snapshot_client_that_goes_away_leaves_no_file(stubs, snapshotted, shard_nodes):
    a = stubs[0]
    r, _, _ = snapshotted
    call = a.SnapshotShard(r, timeout=T)
    next(call)
    call.cancel()
    deadline = time.monotonic() + 5
    while snapshot_files(shard_nodes[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert snapshot_files(shard_nodes[0]) == []
    expect_code(grpc.StatusCode.NOT_FOUND, lambda: list(a.SnapshotShard(ref("nope"), timeout=T)))


def test_a_snapshot_of_another_config_is_refused(stubs, snapshotted):
    b = stubs[1]
    r, chunks, _ = snapshotted
    other = [spb.SnapshotChunk() for _ in chunks]
    for c, src in zip(other, chunks):
        c.CopyFrom(src)
    other[0].config_json = convert.config_to_json(CollectionConfig(dim=DIM, distance="dot"))
    details = expect_code(grpc.StatusCode.INVALID_ARGUMENT, b.RestoreShard, iter(other), timeout=T)
    assert "config" in details
    assert count(b, r) == 8101


def test_drop_forgets_the_receive(tmp_path):
    """In process: DropShard and close end receive mode (state is per shard object)."""
    node = ShardNode(tmp_path)
    node.begin_receive("c", 0, CONFIG, "tok")
    assert node.get("c", 0).receiving
    node.drop("c", 0)
    node.create("c", 0, CONFIG)
    with pytest.raises(FailedPrecondition):
        node.import_points("c", 0, "tok", ShardPoints(np.array([1], np.uint64), None, None, vectors_of([1])))
    node.close()
    node = ShardNode(tmp_path)
    assert not node.get("c", 0).receiving
    node.close()
