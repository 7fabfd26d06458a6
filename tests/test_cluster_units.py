"""The cluster's pieces without processes: merge, routing, ids, placement, the error
table, wire conversions, and the shard interface (local and remote answer alike)."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.errors import STATUS_BY_ERROR, error_for_status, status_for
from coordinator.merge import merge_from_shards
from coordinator.placement import CollectionMeta, place_shards, shard_of
from quiver import convert, ids as qids
from shard import errors as E
from shard.config import CollectionConfig, IndexConfig, QuantizationConfig

# ------------------------------------------------------------------------ merge


def merge_reference(ids, scores, limit, offset=0, threshold=None):
    """Obviously correct: best copy of each id, sort by (-score, id), threshold, offset, limit."""
    best = {}
    for s_ids, s_scores in zip(ids, scores):
        for i, s in zip(s_ids.tolist(), s_scores.tolist()):
            if i not in best or s > best[i]:
                best[i] = s
    ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
    if threshold is not None:
        ranked = [kv for kv in ranked if kv[1] >= threshold]
    return ranked[offset:offset + limit]


shard_lists = st.lists(
    st.lists(st.tuples(st.integers(0, 40), st.integers(-20, 20)), max_size=25), min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(shard_lists, st.integers(1, 30), st.integers(0, 10), st.one_of(st.none(), st.integers(-20, 20)))
def test_merge_matches_reference(lists, limit, offset, threshold):
    ids = [np.array([i for i, _ in l], np.uint64) for l in lists]
    scores = [np.array([s / 4 for _, s in l], np.float32) for l in lists]
    thr = None if threshold is None else threshold / 4
    m = merge_from_shards(ids, scores, limit, offset, thr)
    ref = merge_reference(ids, scores, limit, offset, thr)
    assert list(zip(m.ids.tolist(), m.scores.tolist())) == ref
    for i, s, shard, row in zip(m.ids, m.scores, m.shard, m.row):  # provenance points at the winner
        assert ids[shard][row] == i and scores[shard][row] == s


def test_merge_with_empty_shards():
    m = merge_from_shards([np.zeros(0, np.uint64), np.array([5], np.uint64), np.zeros(0, np.uint64)],
                          [np.zeros(0, np.float32), np.array([0.5], np.float32), np.zeros(0, np.float32)], 3)
    assert m.ids.tolist() == [5] and m.shard.tolist() == [1] and m.row.tolist() == [0]
    assert len(merge_from_shards([np.zeros(0, np.uint64)], [np.zeros(0, np.float32)], 3).ids) == 0


# ---------------------------------------------------------------------- routing


def test_shard_of_is_pinned_and_even():
    """The routing hash is part of the on-disk format: these values must never change."""
    import hashlib

    assert shard_of(np.array([0, 1, 2, 3, 2**63 + 5], np.uint64), 7).tolist() == [2, 2, 4, 2, 3]
    digest = hashlib.sha256(shard_of(np.arange(1000, dtype=np.uint64), 5).astype(np.int8).tobytes()).hexdigest()
    assert digest == "9bdfcaeeed8bebb3625efd011b8e4e78110c3331c871ad900dbc8f2c8eb4be81"
    for ids in (np.arange(100_000, dtype=np.uint64), np.arange(0, 10**7, 100, dtype=np.uint64)):
        counts = np.bincount(shard_of(ids, 4), minlength=4)
        assert counts.min() > 0.95 * len(ids) / 4




# -------------------------------------------------------------------------- ids


def test_uuid_ids_live_in_the_upper_half():
    i, canon = qids.uuid_to_id("{12345678-1234-5678-1234-567812345678}")
    assert canon == "12345678-1234-5678-1234-567812345678"
    assert i >= 2**63 and qids.uuid_to_id(canon.upper())[0] == i
    batch = qids.from_columns([], [str(uuid.uuid4()) for _ in range(1000)])
    assert qids.is_uuid_id(batch.ids).all() and len(set(batch.ids.tolist())) == 1000


def test_point_id_columns():
    b = qids.from_columns([1, 0, 3], ["", "00000000-0000-0000-0000-000000000001", ""])
    assert b.ids[0] == 1 and b.ids[2] == 3 and qids.is_uuid_id(b.ids).tolist() == [False, True, False]
    assert b.external() == [1, "00000000-0000-0000-0000-000000000001", 3]
    assert qids.from_columns([4, 5], []).uuids is None
    for num, uu in [([2**63], []), ([1, 2], ["", "", ""]), ([], ["x"]), ([], [""])]:
        with pytest.raises(E.InvalidArgument):
            qids.from_columns(num, uu)
    assert qids.to_columns(np.arange(3))[1] == []
    assert qids.to_columns([1, "00000000-0000-0000-0000-000000000002"]) == (
        [1, 0], ["", "00000000-0000-0000-0000-000000000002"])
    with pytest.raises(E.InvalidArgument):
        qids.to_columns([-1])


# -------------------------------------------------------------------- placement


def test_place_shards_spreads_replicas_on_distinct_nodes():
    nodes = ["a:1", "b:1", "c:1"]
    p = place_shards(6, 2, nodes)
    assert all(len(set(r)) == 2 for r in p)
    load = {n: sum(n in r for r in p) for n in nodes}
    assert set(load.values()) == {4}
    assert place_shards(2, 1, nodes, load={"a:1": 5, "b:1": 0, "c:1": 0}) == (("b:1",), ("c:1",))
    with pytest.raises(E.InvalidArgument):
        place_shards(2, 4, nodes)
    with pytest.raises(E.InvalidArgument):
        place_shards(0, 1, nodes)


def test_metadata_round_trip_through_lmdb(tmp_path):
    import asyncio

    from coordinator.metadata import COLLECTIONS, Metadata
    from coordinator.metastore import LmdbBackend
    from coordinator.placement import DEAD, Replica

    cfg = CollectionConfig(dim=8, distance="dot", quantization=QuantizationConfig("product", compression="x8"),
                           index=IndexConfig(nlist=16))
    meta = CollectionMeta.placed("c", cfg, 2, (("a", "b"), ("b", "a")), "ready", write_consistency=1)
    meta = meta.with_shard(1, (Replica("b"), Replica("a", DEAD)))

    async def scenario():
        m = Metadata(LmdbBackend(tmp_path), "local")
        await m.start()
        await m.put_collection(meta)
        await m.close()
        m = Metadata(LmdbBackend(tmp_path), "local")
        await m.start()
        assert m.collections == {"c": meta}
        assert m.collections["c"].readers(1) == ["b"] and m.collections["c"].writers(1) == ["b"]
        await m.update(COLLECTIONS + "c", lambda _: None)
        assert m.collections == {}
        await m.close()

    asyncio.run(scenario())


# ------------------------------------------------------------------ error table


@pytest.mark.parametrize("cls", sorted(STATUS_BY_ERROR, key=lambda c: c.__name__))
def test_error_table_agrees_with_error_codes(cls):
    assert STATUS_BY_ERROR[cls].name == cls.code
    code, message = status_for(cls("why"))
    assert code.name == cls.code and message == "why"
    if cls is not E.QuiverError:
        assert type(error_for_status(code, "why")) is cls


def test_unknown_errors_are_internal():
    assert status_for(RuntimeError("boom"))[0] == grpc.StatusCode.INTERNAL
    assert type(error_for_status(grpc.StatusCode.UNKNOWN, "?")) is E.QuiverError


# ---------------------------------------------------------------- conversions


def test_vectors_both_wire_forms():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(convert.vectors_from_proto(convert.vectors_to_proto(x)), x)
    from quiver.v1 import common_pb2

    np.testing.assert_array_equal(convert.vectors_from_proto(common_pb2.Vectors(dim=4, values=x.ravel())), x)
    for bad in (common_pb2.Vectors(dim=4, values=[1, 2, 3]), common_pb2.Vectors(dim=0, values=[1]),
                common_pb2.Vectors(dim=4, f32le=b"12345"),
                common_pb2.Vectors(dim=1, f32le=b"1234", values=[1.0])):
        with pytest.raises(E.InvalidArgument):
            convert.vectors_from_proto(bad)


@pytest.mark.parametrize("cfg", [
    CollectionConfig(dim=3),
    CollectionConfig(dim=7, distance="euclid", quantization=QuantizationConfig(
        "binary", encoding="two_bits", query_encoding="scalar8bits", seed=5),
        index=IndexConfig(full_scan_threshold=10, nlist=8, nprobe=2, train_sample=300, retrain_growth=2.5)),
    CollectionConfig(dim=16, distance="dot", quantization=QuantizationConfig("product", compression="x64")),
    CollectionConfig(dim=2, quantization=QuantizationConfig("scalar", quantile=0.9)),
])
def test_config_round_trips_through_the_wire(cfg):
    f = convert.config_to_proto(cfg)
    back = convert.config_from_proto(f["dimension"], f["distance"], f["quantization"], f["index"])
    assert back == cfg


# ---------------------------------------------- the shard interface, both sides


def test_local_and_remote_shard_answer_alike(tmp_path):
    """LocalShard (in process) and RemoteShard (over gRPC to a shard node server) are one interface."""
    asyncio.run(_local_and_remote(tmp_path))


async def _local_and_remote(tmp_path):
    from coordinator.shard_client import NodePool
    from shard.node import ShardNode, ShardSearch
    from shard.server import create_server

    cfg = CollectionConfig(dim=8, quantization=QuantizationConfig("scalar"))
    node = ShardNode(tmp_path / "node")
    local = ShardNode(tmp_path / "local")
    server, port = create_server("127.0.0.1:0", node)
    pool = NodePool(64 << 20, 30.0)
    try:
        assert await pool.node(f"127.0.0.1:{port}").create_shard("c", 0, convert.config_to_json(cfg), False)
        local.create("c", 0, cfg)
        shards = [local.get("c", 0), pool.shard(f"127.0.0.1:{port}", "c", 0)]
        rng = np.random.default_rng(0)
        x = rng.standard_normal((300, 8)).astype(np.float32)
        ids = np.arange(300, dtype=np.uint64) * 7
        payloads = [b'{"k":%d}' % i for i in range(300)]
        for s in shards:
            assert await s.upsert(ids, x, payloads) == 300
        outs = []
        for s in shards:
            hits = await s.search(x[:3], ShardSearch(limit=5, oversampling=2.0, with_payload=True, with_vector=True))
            got = await s.retrieve(ids[[3, 1, 2]], True, True)
            outs.append((hits, got, await s.count(), await s.delete(ids[:10]), await s.stats()))
        (h1, g1, c1, d1, s1), (h2, g2, c2, d2, s2) = outs
        for a, b in zip(h1, h2):
            assert a.ids.tolist() == b.ids.tolist() and a.payloads == b.payloads
            np.testing.assert_allclose(a.scores, b.scores)
            np.testing.assert_allclose(a.vectors, b.vectors)
        assert g1.ids.tolist() == g2.ids.tolist()
        assert g1.payloads == g2.payloads == [b'{"k":3}', b'{"k":1}', b'{"k":2}']
        assert (c1, d1) == (c2, d2) == (300, 10)
        assert s1["points"] == s2["points"] == 290
        with pytest.raises(E.NotFound):
            await pool.shard(f"127.0.0.1:{port}", "other", 0).count()
    finally:
        await pool.close()
        server.stop(0)
        node.close()
        local.close()


def test_concurrent_searches_coalesce_into_batched_calls(tmp_path):
    """Searches queued behind busy calls to one replica leave together, each getting its own answer."""
    asyncio.run(_coalesce(tmp_path))


async def _coalesce(tmp_path):
    from coordinator.shard_client import MAX_IN_FLIGHT, NodePool
    from quiver.serving import RpcMetrics
    from shard.node import ShardNode, ShardSearch
    from shard.server import create_server

    cfg = CollectionConfig(dim=8, quantization=QuantizationConfig("scalar"))
    node = ShardNode(tmp_path / "node")
    node.create("c", 0, cfg)
    metrics = RpcMetrics("shard")
    server, port = create_server("127.0.0.1:0", node, metrics=metrics)
    pool = NodePool(64 << 20, 30.0)
    try:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((500, 8)).astype(np.float32)
        shard = pool.shard(f"127.0.0.1:{port}", "c", 0)
        await shard.upsert(np.arange(500, dtype=np.uint64), x, None)
        params = [ShardSearch(limit=5), ShardSearch(limit=3, oversampling=2.0, with_payload=True)]
        calls = [(x[i:i + 1 + i % 2], params[i % 2]) for i in range(30)]  # one or two rows each
        alone = [await shard.search(q, p) for q, p in calls]
        before = metrics.requests.labels("shard", "Search", "OK")._value.get()
        together = await asyncio.gather(*(shard.search(q, p) for q, p in calls))
        rpcs = metrics.requests.labels("shard", "Search", "OK")._value.get() - before
        assert rpcs < 10, rpcs  # 2 went at once, 28 coalesced by parameters
        assert rpcs >= MAX_IN_FLIGHT
        for a, b in zip(alone, together):
            assert len(a) == len(b)
            for ha, hb in zip(a, b):
                assert ha.ids.tolist() == hb.ids.tolist() and ha.payloads == hb.payloads
                np.testing.assert_allclose(ha.scores, hb.scores)
    finally:
        await pool.close()
        server.stop(0)
        node.close()


def test_requests_do_not_write_the_metadata_store(tmp_path):
    """Publishing the applied revision is for changes others fence on, not for every request:
    a busy coordinator must not turn its own acknowledgements into a stream of store writes."""
    import asyncio

    from coordinator.metadata import Metadata
    from coordinator.metastore import LmdbBackend

    async def scenario():
        m = Metadata(LmdbBackend(tmp_path), "local")
        await m.start()
        await asyncio.sleep(0.05)
        _, before = await m.backend.range("")
        for _ in range(200):
            m.end(m.begin())
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        _, after = await m.backend.range("")
        assert after == before
        await m.close()

    asyncio.run(scenario())
