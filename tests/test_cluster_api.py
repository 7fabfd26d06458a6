"""The cluster over real channels: shard nodes as processes, the coordinator in-process.

Results through the coordinator are held to one ShardEngine holding every
point (the merge is exact), and the error table is covered case by case.
"""

from __future__ import annotations

import uuid
import urllib.request

import grpc
import numpy as np
import pytest

from quiver.ids import UUID_PAYLOAD_KEY
from quiver.v1 import common_pb2, quiver_pb2 as pb, quiver_pb2_grpc
from shard.config import CollectionConfig, QuantizationConfig
from shard.engine import ShardEngine
from shard.errors import AlreadyExists, InvalidArgument, NotFound

DIM = 32
N = 2000


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    ids = rng.choice(10**12, N, replace=False).astype(np.uint64)  # sparse, unordered ids
    payloads = [{"i": i, "parity": "even" if i % 2 == 0 else "odd", "big": 2**62 + i} for i in range(N)]
    queries = rng.standard_normal((16, DIM)).astype(np.float32)
    return {"x": x, "ids": ids, "payloads": payloads, "q": queries, "row": {int(v): i for i, v in enumerate(ids)}}


@pytest.fixture(scope="module")
def pts(client, data):
    """Collection "pts": binary quantization, 2 shards, every point of ``data``."""
    client.create_collection("pts", DIM, "cosine", quantization="binary", shard_number=2)
    client.upsert_many("pts", data["ids"], data["x"], data["payloads"], batch_size=500)
    return "pts"


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """One engine holding every point, with the collection's config."""
    eng = ShardEngine.create(str(tmp_path_factory.mktemp("ref") / "s"),
                             CollectionConfig(dim=DIM, distance="cosine", quantization=QuantizationConfig("binary")))
    eng.upsert(data["ids"], data["x"], data["payloads"])
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def stub(coordinator):
    channel = grpc.insecure_channel(coordinator.address)
    yield quiver_pb2_grpc.QuiverStub(channel)
    channel.close()


def assert_same_ranking(ids_a, scores_a, ids_b, scores_b, atol=1e-5):
    """Equal scores, and equal ids except among tied scores."""
    np.testing.assert_allclose(scores_a, scores_b, atol=atol)
    for a, b, s in zip(ids_a, ids_b, scores_a):
        if a != b:  # only allowed inside a tie
            assert np.sum(np.abs(np.asarray(scores_b) - s) <= atol) > 1, (ids_a, ids_b)


# ------------------------------------------------------------------ collections


def test_collection_info_spreads_points_over_shards(client, pts):
    info = client.get_collection(pts)
    assert info.shard_number == 2 and info.replication_factor == 1
    assert info.status == "green"
    assert info.points == N
    assert info.config.quantization.kind == "binary" and info.config.dim == DIM
    per_shard = [s.points for s in info.shards]
    assert len(per_shard) == 2 and sum(per_shard) == N
    assert min(per_shard) > 0.4 * N  # the id hash spreads points evenly
    assert len({s.node for s in info.shards}) == 2
    assert pts in client.list_collections()


def test_create_list_delete(client):
    client.create_collection("tmp-coll", 8, "dot", quantization={"kind": "scalar", "quantile": 0.95},
                             index={"nlist": 4}, shard_number=3)
    info = client.get_collection("tmp-coll")
    assert (info.config.distance, info.config.quantization.kind, info.config.quantization.quantile,
            info.config.index.nlist, info.shard_number) == ("dot", "scalar", pytest.approx(0.95), 4, 3)
    assert "tmp-coll" in client.list_collections()
    client.delete_collection("tmp-coll")
    assert "tmp-coll" not in client.list_collections()
    with pytest.raises(NotFound):
        client.count("tmp-coll")


# ----------------------------------------------------------------------- points


def test_count_and_get_agree_with_engine(client, pts, data, reference):
    assert client.count(pts) == N == reference.count()
    rng = np.random.default_rng(1)
    want = np.concatenate([rng.choice(data["ids"], 50, replace=False), np.array([3, 5], np.uint64)])
    got = client.get(pts, want, with_payload=True, with_vector=True)
    ref = reference.retrieve(want, with_payload=True, with_vector=True)
    assert got.ids.tolist() == ref.ids.tolist() == want[:50].tolist()  # found ones, request order
    assert got.payloads == ref.payloads
    assert got.payloads[0]["big"] == 2**62 + data["row"][int(want[0])]  # JSON keeps big ints exact
    np.testing.assert_allclose(got.vectors, ref.vectors, atol=1e-6)
    assert client.get(pts, want[:3], with_payload=False).payloads is None


def test_upsert_replaces_and_delete_counts(client):
    client.create_collection("edit", 4, "euclid", quantization="none", shard_number=2)
    ids = np.arange(100, dtype=np.uint64)
    x = np.arange(400, dtype=np.float32).reshape(100, 4)
    assert client.upsert("edit", ids, x, [{"v": 1}] * 100) == 100
    client.upsert("edit", ids[:10], x[:10] + 1, [{"v": 2}] * 10)  # replace
    got = client.get("edit", ids[:12], with_vector=True)
    assert [p["v"] for p in got.payloads] == [2] * 10 + [1] * 2
    np.testing.assert_allclose(got.vectors[:10], x[:10] + 1)
    assert client.count("edit") == 100
    assert client.delete("edit", np.array([1, 2, 3, 1000], np.uint64)) == 3
    assert client.count("edit") == 97
    assert len(client.get("edit", [1, 2, 3, 4])) == 1
    hits = client.search("edit", x[2], limit=100, exact=True)
    assert not {1, 2, 3} & set(hits.ids.tolist())
    client.delete_collection("edit")


# ----------------------------------------------------------------------- search


@pytest.mark.parametrize("mode", [{"exact": True}, {"ignore": True}, {"rescore": True, "oversampling": 16.0}])
def test_search_equals_single_engine(client, pts, data, reference, mode):
    """The merge is exact: with exact scores, 2 shards answer as one engine does."""
    for q in data["q"]:
        hits = client.search(pts, q, limit=10, **mode)
        ref = reference.search(q, 10, exact=True)
        if mode.get("rescore"):  # candidates on the codes: compare scores of what both found
            assert len(set(hits.ids.tolist()) & set(ref.ids.tolist())) >= 9
            continue
        assert hits.shards_answered == hits.shards_total == 2
        assert_same_ranking(hits.ids, hits.scores, ref.ids, ref.scores)


def test_rescored_scores_are_exact_and_recall_at_least_engines(client, pts, data, reference):
    xn = data["x"] / np.linalg.norm(data["x"], axis=1, keepdims=True)
    recall_cluster = recall_engine = 0.0
    for q in data["q"]:
        truth = set(reference.search(q, 10, exact=True).ids.tolist())
        hits = client.search(pts, q, limit=10, oversampling=2.0, rescore=True)
        ref = reference.search(q, 10, oversampling=2.0, rescore=True).head(10)
        rows = [data["row"][i] for i in hits.ids.tolist()]
        exact = xn[rows] @ (q / np.linalg.norm(q))
        np.testing.assert_allclose(hits.scores, exact, atol=1e-5)
        assert np.all(np.diff(hits.scores) <= 0)
        recall_cluster += len(truth & set(hits.ids.tolist())) / 10
        recall_engine += len(truth & set(ref.ids.tolist())) / 10
    # each shard keeps its own top ceil(limit * oversampling): never fewer candidates than one engine
    assert recall_cluster >= recall_engine - 0.05 * len(data["q"])


def test_offset_is_applied_once(client, pts, data):
    for q in data["q"][:4]:
        full = client.search(pts, q, limit=15, exact=True)
        page = client.search(pts, q, limit=5, offset=10, exact=True)
        assert page.ids.tolist() == full.ids[10:15].tolist()
        approx_full = client.search(pts, q, limit=15, oversampling=2.0)
        approx_page = client.search(pts, q, limit=5, offset=10, oversampling=2.0)
        assert approx_page.ids.tolist() == approx_full.ids[10:15].tolist()


def test_score_threshold(client, pts, data):
    q = data["q"][0]
    full = client.search(pts, q, limit=50, exact=True)
    cut = float(full.scores[20])
    hits = client.search(pts, q, limit=50, exact=True, score_threshold=cut)
    assert hits.ids.tolist() == full.ids[: int(np.sum(full.scores >= cut))].tolist()
    assert np.all(hits.scores >= cut)


@pytest.mark.parametrize("oversampling", [1.0, 4.0], ids=["inline", "fetch-winners"])
def test_payloads_and_vectors_of_winners(client, pts, data, reference, oversampling):
    for q in data["q"][:4]:
        hits = client.search(pts, q, limit=10, oversampling=oversampling, with_payload=True, with_vector=True)
        bare = client.search(pts, q, limit=10, oversampling=oversampling)
        assert hits.ids.tolist() == bare.ids.tolist()
        assert hits.payloads == [data["payloads"][data["row"][i]] for i in hits.ids.tolist()]
        np.testing.assert_allclose(hits.vectors, reference.retrieve(hits.ids, with_vector=True).vectors, atol=1e-6)


def test_search_batch_equals_single_searches(client, pts, data):
    batch = client.search_batch(pts, data["q"][:5], limit=7, oversampling=2.0, with_payload=True)
    assert len(batch) == 5
    for q, b in zip(data["q"][:5], batch):
        one = client.search(pts, q, limit=7, oversampling=2.0, with_payload=True)
        assert b.ids.tolist() == one.ids.tolist()
        np.testing.assert_allclose(b.scores, one.scores)
        assert b.payloads == one.payloads


def test_nprobe_and_hnsw_ef_alias(client, pts, data):
    q = data["q"][0]
    a = client.search(pts, q, limit=10, nprobe=1)
    b = client.search(pts, q, limit=10, hnsw_ef=1)
    assert a.ids.tolist() == b.ids.tolist()


def test_rescore_off_scores_are_comparable_across_shards(client, tmp_path_factory):
    """With rescore off the shards' estimates are on the exact scale, so merging them by
    score still finds most of the exact top-10, with scores close to the exact ones."""
    from quiver.sample import load_sample

    s = load_sample()
    base, queries = s.base[:3000], s.queries[:50]
    truth = np.argsort(-(queries @ base.T), axis=1)[:, :10]
    out = {}
    for kind in ("scalar", "binary"):
        name = f"est-{kind}"
        client.create_collection(name, base.shape[1], "cosine", quantization=kind, shard_number=2)
        client.upsert_many(name, np.arange(len(base), dtype=np.uint64), base, batch_size=1000)
        recall, err = [], []
        for q, t in zip(queries, truth):
            hits = client.search(name, q, limit=10, oversampling=1.0, rescore=False)
            ids = hits.ids.astype(np.int64)
            recall.append(len(set(ids.tolist()) & set(t.tolist())) / 10)
            err.append(np.abs(hits.scores - base[ids] @ q).mean())
        out[kind] = (float(np.mean(recall)), float(np.mean(err)))
        client.delete_collection(name)
    # measured: scalar 0.97 / 0.004, binary 0.71 / 0.03
    assert out["scalar"][0] >= 0.9 and out["scalar"][1] < 0.01, out
    assert out["binary"][0] >= 0.6 and out["binary"][1] < 0.06, out


# ------------------------------------------------------------------------- UUIDs


def test_uuid_ids_round_trip(client):
    client.create_collection("uu", 8, "cosine", quantization="none", shard_number=2)
    rng = np.random.default_rng(3)
    uu = [str(uuid.UUID(int=int(rng.integers(2**62)) << 64 | i)) for i in range(50)]
    x = rng.standard_normal((50, 8)).astype(np.float32)
    client.upsert("uu", uu, x, [{"n": i} for i in range(50)])
    got = client.get("uu", [uu[3], uu[7], str(uuid.uuid4())])
    assert got.ids.tolist() == [uu[3], uu[7]]
    assert got.payloads == [{"n": 3}, {"n": 7}]  # the reserved key stays hidden
    for with_payload in (False, True):
        hits = client.search("uu", x[5], limit=3, exact=True, with_payload=with_payload)
        assert hits.ids[0] == uu[5]
        assert with_payload is False or hits.payloads[0] == {"n": 5}
    hits = client.search("uu", x[5], limit=3, oversampling=8.0, with_payload=True)  # fetch-winners path
    assert hits.ids[0] == uu[5] and hits.payloads[0] == {"n": 5}
    # mixed batch of numeric and UUID ids
    client.upsert("uu", [7, uu[0].upper()], x[:2], None)
    got = client.get("uu", [7, uu[0]], with_payload=True)
    assert got.ids.tolist() == [7, uu[0]] and got.payloads == [None, None]
    assert client.delete("uu", [uu[1], str(uuid.uuid4())]) == 1
    assert client.count("uu") == 50
    with pytest.raises(InvalidArgument, match="reserved"):
        client.upsert("uu", [1], x[:1], [{UUID_PAYLOAD_KEY: "x"}])
    client.delete_collection("uu")


def test_uuid_hash_collision_is_refused(client, coordinator):
    """Two UUIDs on one 63-bit id: the second is refused, the first stays."""
    import quiver.ids as qids

    client.create_collection("collide", 4, "cosine", quantization="none", shard_number=2)
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    client.upsert("collide", [a], np.ones((1, 4), np.float32))
    real = qids.uuid_to_id
    try:  # force b onto a's id inside the coordinator (it runs in this process)
        qids.uuid_to_id = lambda t: (real(a)[0], str(uuid.UUID(t)))
        with pytest.raises(AlreadyExists, match="same 63-bit id"):
            client.upsert("collide", [b], np.ones((1, 4), np.float32))
    finally:
        qids.uuid_to_id = real
    assert client.get("collide", [a]).ids.tolist() == [a]
    client.delete_collection("collide")


# ---------------------------------------------------------------------- restart


def test_coordinator_restart_keeps_collections(client, coordinator, pts, data):
    before = client.list_collections()
    hits_before = client.search(pts, data["q"][0], limit=10, exact=True)
    coordinator.restart()
    assert client.list_collections() == before
    assert client.count(pts) == N
    hits = client.search(pts, data["q"][0], limit=10, exact=True)
    assert hits.ids.tolist() == hits_before.ids.tolist()


# ------------------------------------------------------------------ error table


def _vec(rows, dim=DIM, fill=None):
    x = np.ones((rows, dim), np.float32) if fill is None else np.full((rows, dim), fill, np.float32)
    return common_pb2.Vectors(dim=dim, f32le=x.tobytes())


def _ids(*nums):
    return pb.PointIds(num=list(nums))


ERROR_CASES = [
    # (name, method, request, expected status)
    ("get unknown collection", "GetCollection", pb.GetCollectionRequest(name="nope"), "NOT_FOUND"),
    ("count unknown collection", "Count", pb.CountRequest(collection="nope"), "NOT_FOUND"),
    ("search unknown collection", "Search", pb.SearchRequest(collection="nope", vectors=_vec(1), limit=1),
     "NOT_FOUND"),
    ("upsert unknown collection", "Upsert", pb.UpsertRequest(collection="nope", ids=_ids(1), vectors=_vec(1)),
     "NOT_FOUND"),
    ("get points unknown collection", "GetPoints", pb.GetPointsRequest(collection="nope", ids=_ids(1)),
     "NOT_FOUND"),
    ("delete unknown collection", "DeleteCollection", pb.DeleteCollectionRequest(name="nope"), "NOT_FOUND"),
    ("create existing name", "CreateCollection", pb.CreateCollectionRequest(name="pts", dimension=DIM),
     "ALREADY_EXISTS"),
    ("create bad name", "CreateCollection", pb.CreateCollectionRequest(name="../x", dimension=4),
     "INVALID_ARGUMENT"),
    ("create dimension 0", "CreateCollection", pb.CreateCollectionRequest(name="d0", dimension=0),
     "INVALID_ARGUMENT"),
    ("create replication above nodes", "CreateCollection",
     pb.CreateCollectionRequest(name="rf3", dimension=4, replication_factor=3), "INVALID_ARGUMENT"),
    ("create bad quantile", "CreateCollection", pb.CreateCollectionRequest(
        name="q", dimension=4, quantization=pb.QuantizationConfig(quantile=2.0)), "INVALID_ARGUMENT"),
    ("upsert wrong dimension", "Upsert", pb.UpsertRequest(collection="pts", ids=_ids(1), vectors=_vec(1, 31)),
     "INVALID_ARGUMENT"),
    ("upsert NaN", "Upsert", pb.UpsertRequest(collection="pts", ids=_ids(1), vectors=_vec(1, fill=np.nan)),
     "INVALID_ARGUMENT"),
    ("upsert Inf", "Upsert", pb.UpsertRequest(collection="pts", ids=_ids(1), vectors=_vec(1, fill=np.inf)),
     "INVALID_ARGUMENT"),
    ("upsert zero vector under cosine", "Upsert",
     pb.UpsertRequest(collection="pts", ids=_ids(1), vectors=_vec(1, fill=0.0)), "INVALID_ARGUMENT"),
    ("upsert payload not an object", "Upsert",
     pb.UpsertRequest(collection="pts", ids=_ids(1), vectors=_vec(1), payloads=[b"[1, 2]"]), "INVALID_ARGUMENT"),
    ("upsert payload not JSON", "Upsert",
     pb.UpsertRequest(collection="pts", ids=_ids(1), vectors=_vec(1), payloads=[b"{nope"]), "INVALID_ARGUMENT"),
    ("upsert payload with NaN", "Upsert",
     pb.UpsertRequest(collection="pts", ids=_ids(1), vectors=_vec(1), payloads=[b'{"a": NaN}']),
     "INVALID_ARGUMENT"),
    ("upsert payload count", "Upsert",
     pb.UpsertRequest(collection="pts", ids=_ids(1, 2), vectors=_vec(2), payloads=[b"{}"]), "INVALID_ARGUMENT"),
    ("upsert id >= 2^63", "Upsert", pb.UpsertRequest(collection="pts", ids=_ids(2**63), vectors=_vec(1)),
     "INVALID_ARGUMENT"),
    ("upsert bad uuid", "Upsert",
     pb.UpsertRequest(collection="pts", ids=pb.PointIds(uuid=["not-a-uuid"]), vectors=_vec(1)), "INVALID_ARGUMENT"),
    ("upsert ids vs vectors", "Upsert", pb.UpsertRequest(collection="pts", ids=_ids(1, 2), vectors=_vec(3)),
     "INVALID_ARGUMENT"),
    ("upsert torn vector bytes", "Upsert", pb.UpsertRequest(
        collection="pts", ids=_ids(1), vectors=common_pb2.Vectors(dim=DIM, f32le=b"\0" * 10)), "INVALID_ARGUMENT"),
    ("search wrong dimension", "Search", pb.SearchRequest(collection="pts", vectors=_vec(1, 5), limit=1),
     "INVALID_ARGUMENT"),
    ("search NaN", "Search", pb.SearchRequest(collection="pts", vectors=_vec(1, fill=np.nan), limit=1),
     "INVALID_ARGUMENT"),
    ("search limit 0", "Search", pb.SearchRequest(collection="pts", vectors=_vec(1), limit=0), "INVALID_ARGUMENT"),
    ("search oversampling 100", "Search", pb.SearchRequest(
        collection="pts", vectors=_vec(1), limit=1,
        params=pb.SearchParams(quantization=pb.QuantizationSearchParams(oversampling=100))), "INVALID_ARGUMENT"),
    ("search nprobe vs hnsw_ef", "Search", pb.SearchRequest(
        collection="pts", vectors=_vec(1), limit=1, params=pb.SearchParams(nprobe=2, hnsw_ef=3)),
     "INVALID_ARGUMENT"),
    ("search no vectors", "Search", pb.SearchRequest(collection="pts", limit=1), "INVALID_ARGUMENT"),
]


@pytest.mark.parametrize("name,method,request_,code", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_error_table(stub, pts, name, method, request_, code):
    with pytest.raises(grpc.RpcError) as exc:
        getattr(stub, method)(request_, timeout=30)
    assert exc.value.code() == getattr(grpc.StatusCode, code), exc.value.details()
    assert exc.value.details()  # a message a person can act on


BAD_BATCH_TAILS = {
    "NaN": (np.nan, None),
    "payload not an object": (1.0, b'"text"'),
    "wrong dimension": (None, None),
}


@pytest.mark.parametrize("bad", BAD_BATCH_TAILS)
def test_rejected_upsert_writes_nothing_on_any_shard(stub, client, pts, bad):
    """One bad point at the end of a batch: the whole batch is refused before any shard writes."""
    ids = np.arange(10**13, 10**13 + 200, dtype=np.uint64)  # spread over both shards
    x = np.ones((200, DIM), np.float32)
    fill, payload = BAD_BATCH_TAILS[bad]
    payloads = [b"{}"] * 200
    if bad == "wrong dimension":
        vectors = common_pb2.Vectors(dim=DIM + 1, f32le=np.ones((200, DIM + 1), np.float32).tobytes())
    else:
        x[-1] = fill
        vectors = common_pb2.Vectors(dim=DIM, f32le=x.tobytes())
        if payload is not None:
            payloads[-1] = payload
    with pytest.raises(grpc.RpcError) as exc:
        stub.Upsert(pb.UpsertRequest(collection=pts, ids=pb.PointIds(num=ids.tolist()), vectors=vectors,
                                     payloads=payloads), timeout=30)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert client.count(pts) == N
    assert len(client.get(pts, ids)) == 0


# ------------------------------------------------------- health, reflection, metrics


def test_health_reflection_and_metrics(coordinator, shard_nodes, pts, client, data):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    for address, service in [(coordinator.address, "quiver.v1.Quiver"),
                             (shard_nodes[0].address, "quiver.v1.ShardNode")]:
        with grpc.insecure_channel(address) as ch:
            h = health_pb2_grpc.HealthStub(ch)
            for name in ("", service):
                assert h.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status == \
                    health_pb2.HealthCheckResponse.SERVING
            r = reflection_pb2_grpc.ServerReflectionStub(ch)
            resp = next(r.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                               timeout=10))
            names = {s.name for s in resp.list_services_response.service}
            assert {service, "grpc.health.v1.Health"} <= names
    client.search(pts, data["q"][0], limit=10, oversampling=2.0)
    text = urllib.request.urlopen(f"http://127.0.0.1:{shard_nodes[0].metrics_port}/metrics", timeout=10).read().decode()
    assert 'quiver_requests_total{code="OK",method="Search",role="shard"}' in text
    assert 'quiver_shard_points{collection="pts",shard=' in text
    assert "quiver_shard_originals_read_total" in text and "quiver_shard_ram_bytes" in text
    from prometheus_client import generate_latest

    with pytest.raises(NotFound):
        client.count("nope")
    coord_text = generate_latest(coordinator.metrics.registry).decode()
    assert 'quiver_requests_total{code="NOT_FOUND",method="Count",role="coordinator"}' in coord_text
    assert 'quiver_request_seconds_bucket{le="0.001",method="Search",role="coordinator"}' in coord_text


@pytest.mark.parametrize("quantization", ["scalar", {"kind": "product", "compression": "x4"}])
def test_an_hnsw_collection_through_the_cluster(client, quantization):
    """The graph index is a create option end to end, over int8 or product codes: it
    round-trips in the collection's info, searches find exact neighbours after rescoring,
    and hnsw_ef is its beam width."""
    from shard.errors import InvalidArgument

    rng = np.random.default_rng(11)
    x = rng.standard_normal((3000, 24)).astype(np.float32)
    info = client.create_collection("graph", 24, "cosine", quantization=quantization, shard_number=2,
                                    index={"full_scan_threshold": 500}, hnsw={"m": 8, "ef": 64})
    try:
        assert info.config.hnsw is not None and info.config.hnsw.m == 8 and info.config.hnsw.ef == 64
        client.upsert_many("graph", np.arange(3000, dtype=np.uint64), x)
        q = x[:20] + 0.01 * rng.standard_normal((20, 24)).astype(np.float32)
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        exact = np.argsort(-(q @ xn.T), axis=1)[:, :10]
        hits = client.search_batch("graph", q, limit=10, oversampling=2.0, hnsw_ef=96)
        recall = np.mean([len(set(h.ids.tolist()) & set(e.tolist())) / 10 for h, e in zip(hits, exact)])
        assert recall >= 0.95, recall
        assert client.get_collection("graph").config.hnsw.m == 8
    finally:
        client.delete_collection("graph")
    with pytest.raises(InvalidArgument, match="hnsw"):
        client.create_collection("graph-binary", 24, quantization="binary", hnsw=True)
