"""Bad input through the public gRPC API, case by case (issue 6).

A live cluster (2 shard-node processes, the coordinator in-process, one per
module, messages capped at 4 MiB so the size limit is cheap to hit) takes every
case of ``CASES`` through the raw generated stubs, so the typed client's own
checks never get in the way. Each case asserts the exact status code, a
message that says what is wrong, and that the cluster's state is unchanged
afterwards: the collection list, the probe collection's point count per shard,
and the probe points' payloads and vectors.

``QUIVER_WRITE_RELIABILITY=1`` writes its section of ``tests/RELIABILITY.md`` from the run:
every input, the status and message the cluster answered with, and the data lost.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

import grpc
import numpy as np
import pytest

import reliability_doc
from quiver.v1 import common_pb2, quiver_pb2 as pb

DIM = 8
N = 40
MAX_MESSAGE_MB = 4
PROBE = "probe"
PROBE_IDS = [7, 23]
PROBE_UUID = "5b6f3c1e-2a44-4b8e-9d0c-7f1e2d3c4b5a"
PAYLOAD_DEPTH_LIMIT = 64  # coordinator.service.MAX_PAYLOAD_DEPTH, as documented


@pytest.fixture(scope="module")
def coordinator(shard_nodes, tmp_path_factory, cluster_helpers):
    """The module's coordinator, with a 4 MiB message limit (overrides conftest's)."""
    handle_cls = cluster_helpers[0]
    handle = handle_cls(tmp_path_factory.mktemp("coordinator"), [n.address for n in shard_nodes],
                        server_kw={"max_message_mb": MAX_MESSAGE_MB}, max_message_bytes=MAX_MESSAGE_MB << 20)
    yield handle
    handle.close()


def _vec(rows: int, dim: int = DIM, fill: float | None = None) -> common_pb2.Vectors:
    x = np.ones((rows, dim), np.float32) if fill is None else np.full((rows, dim), fill, np.float32)
    return common_pb2.Vectors(dim=dim, f32le=x.tobytes())


def _ids(*nums: int) -> pb.PointIds:
    return pb.PointIds(num=list(nums))


@pytest.fixture(scope="module")
def probe(stub):
    """Collection "probe": 2 shards, N numeric points and one UUID point, each with a payload."""
    stub.CreateCollection(pb.CreateCollectionRequest(name=PROBE, dimension=DIM, shard_number=2), timeout=60)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    payloads = [json.dumps({"n": i, "probe": True, "tags": ["a", {"b": [1, 2]}]}).encode() for i in range(N)]
    stub.Upsert(pb.UpsertRequest(collection=PROBE, ids=_ids(*range(N)),
                                 vectors=common_pb2.Vectors(dim=DIM, f32le=x.tobytes()), payloads=payloads),
                timeout=60)
    stub.Upsert(pb.UpsertRequest(collection=PROBE, ids=pb.PointIds(uuid=[PROBE_UUID]), vectors=_vec(1),
                                 payloads=[b'{"kind": "uuid probe"}']), timeout=60)
    return PROBE


def snapshot(stub) -> dict:
    """What must not change: collections, per-shard counts, the probe points."""
    info = stub.GetCollection(pb.GetCollectionRequest(name=PROBE), timeout=30)
    got = stub.GetPoints(pb.GetPointsRequest(collection=PROBE, ids=pb.PointIds(
        num=PROBE_IDS + [0], uuid=[""] * len(PROBE_IDS) + [PROBE_UUID]), with_payload=True, with_vector=True),
        timeout=30)
    return {
        "collections": list(stub.ListCollections(pb.ListCollectionsRequest(), timeout=30).names),
        "count": stub.Count(pb.CountRequest(collection=PROBE), timeout=30).count,
        "per_shard": sorted((s.shard_id, s.points_count) for s in info.shards),
        "ids": (list(got.ids.num), list(got.ids.uuid)),
        "payloads": [json.loads(p) for p in got.payloads],
        "vectors": bytes(got.vectors.f32le),
    }


# --------------------------------------------------------------- raw wire


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def with_raw_varint(msg, field_number: int, value: int) -> bytes:
    """``msg`` serialized, plus a varint field carrying ``value`` as the wire allows
    (e.g. -1 as the 10-byte two's complement a client of a signed type would send)."""
    return msg.SerializeToString() + _varint(field_number << 3) + _varint(value % (1 << 64))


def deep_json(depth: int, kind: str = "object") -> bytes:
    """A JSON object whose innermost value sits ``depth`` containers deep."""
    if kind == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b'{"a":' + b"[" * (depth - 1) + b"1" + b"]" * (depth - 1) + b"}"


# --------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    request: object  # a message, or raw bytes for what the typed messages cannot express
    code: str  # grpc.StatusCode name; "OK" for inputs that are legal and change nothing
    says: str = ""  # regex the message must match (case-insensitive)
    note: str = ""


def _search(vectors=None, limit=10, **kw) -> pb.SearchRequest:
    return pb.SearchRequest(collection=PROBE, vectors=vectors if vectors is not None else _vec(1), limit=limit, **kw)


def _quant(**kw) -> pb.SearchParams:
    return pb.SearchParams(quantization=pb.QuantizationSearchParams(**kw))


def _upsert(ids=None, vectors=None, payloads=None) -> pb.UpsertRequest:
    return pb.UpsertRequest(collection=PROBE, ids=ids if ids is not None else _ids(7),
                            vectors=vectors if vectors is not None else _vec(1), payloads=payloads or [])


def _payload(p: bytes) -> pb.UpsertRequest:
    # point 7 exists: a refused payload must leave its stored payload as it was
    return _upsert(payloads=[p])


IA = "INVALID_ARGUMENT"
CASES = [
    # vectors
    Case("upsert wrong dimension (7 for 8)", "Upsert", _upsert(vectors=_vec(1, 7)), IA, r"dimension is 7.*has 8"),
    Case("search wrong dimension (9 for 8)", "Search", _search(_vec(1, 9)), IA, r"dimension is 9.*has 8"),
    Case("upsert NaN", "Upsert", _upsert(vectors=_vec(1, fill=np.nan)), IA, r"NaN or Inf"),
    Case("upsert +Inf", "Upsert", _upsert(vectors=_vec(1, fill=np.inf)), IA, r"NaN or Inf"),
    Case("upsert -Inf in the values form", "Upsert",
         _upsert(vectors=common_pb2.Vectors(dim=DIM, values=[1.0] * (DIM - 1) + [float("-inf")])), IA,
         r"NaN or Inf"),
    Case("search NaN", "Search", _search(_vec(1, fill=np.nan)), IA, r"NaN or Inf"),
    Case("search Inf", "Search", _search(_vec(1, fill=np.inf)), IA, r"NaN or Inf"),
    Case("upsert zero vector under cosine", "Upsert", _upsert(vectors=_vec(1, fill=0.0)), IA, r"all zeros"),
    Case("upsert empty vector (no Vectors) for one id", "Upsert",
         pb.UpsertRequest(collection=PROBE, ids=_ids(7)), IA, r"1 ids for 0 vectors"),
    Case("upsert empty vector (dim 8, no bytes) for one id", "Upsert",
         _upsert(vectors=common_pb2.Vectors(dim=DIM)), IA, r"1 ids for 0 vectors"),
    Case("search empty vector (no Vectors)", "Search", pb.SearchRequest(collection=PROBE, limit=10), IA,
         r"at least one query vector"),
    Case("search empty vector (dim 8, no bytes)", "Search", _search(common_pb2.Vectors(dim=DIM)), IA,
         r"at least one query vector"),
    Case("upsert 70,000-dim vector", "Upsert", _upsert(vectors=_vec(1, 70_000)), IA, r"dimension is 70000"),
    Case("search 70,000-dim vector", "Search", _search(_vec(1, 70_000)), IA, r"dimension is 70000"),
    Case("vector bytes not a multiple of dim", "Upsert",
         _upsert(vectors=common_pb2.Vectors(dim=DIM, f32le=b"\0" * 12)), IA, r"not a whole number"),
    Case("vector dim 2^32-1", "Search", _search(common_pb2.Vectors(dim=2**32 - 1, f32le=b"\0" * 32)), IA,
         r"not a whole number"),
    Case("vectors in both forms", "Search",
         _search(common_pb2.Vectors(dim=DIM, f32le=_vec(1).f32le, values=[1.0] * DIM)), IA, r"either f32le or values"),
    Case("vector data without dim", "Search", _search(common_pb2.Vectors(values=[1.0] * DIM)), IA, r"dim must be set"),
    # search parameters
    Case("limit 0", "Search", _search(limit=0), IA, r"limit must be >= 1, got 0"),
    Case("limit 10^9", "Search", _search(limit=10**9), IA, r"limit must be <= 10000, got 1000000000"),
    Case("oversampling 0.5", "Search", _search(params=_quant(oversampling=0.5)), IA,
         r"oversampling must be in \[1, 16\]"),
    Case("oversampling 10^6", "Search", _search(params=_quant(oversampling=1e6)), IA, r"oversampling must be in"),
    Case("oversampling NaN", "Search", _search(params=_quant(oversampling=float("nan"))), IA, r"oversampling.*nan"),
    Case("oversampling -Inf", "Search", _search(params=_quant(oversampling=float("-inf"))), IA, r"oversampling"),
    Case("offset 2^32-1 (the largest uint32)", "Search", _search(offset=2**32 - 1), IA,
         r"limit must be <= 10000.*offset 4294967295"),
    Case("offset -1 sent on the wire (uint32: arrives as 2^32-1)", "Search",
         with_raw_varint(_search(), 4, -1), IA, r"offset 4294967295",
         note="offset is uint32: a typed client cannot set -1; a 64-bit -1 on the wire is read as 4294967295"),
    Case("limit -1 sent on the wire (uint32: arrives as 2^32-1)", "Search",
         pb.SearchRequest(collection=PROBE, vectors=_vec(1)).SerializeToString() + _varint(3 << 3) + _varint(2**64 - 1),
         IA, r"limit must be <= 10000, got 4294967295"),
    Case("nprobe 0", "Search", _search(params=pb.SearchParams(nprobe=0)), IA, r"nprobe.*>= 1"),
    Case("nprobe and hnsw_ef disagree", "Search", _search(params=pb.SearchParams(nprobe=2, hnsw_ef=3)), IA,
         r"disagree"),
    Case("search batch of 0 rows", "Search", _search(common_pb2.Vectors(dim=DIM, f32le=b"")), IA,
         r"at least one query vector"),
    # empty batches: legal, and they change nothing
    Case("upsert empty batch", "Upsert", pb.UpsertRequest(collection=PROBE), "OK", note="upserted 0"),
    Case("delete empty batch", "DeletePoints", pb.DeletePointsRequest(collection=PROBE), "OK", note="deleted 0"),
    Case("get empty batch", "GetPoints", pb.GetPointsRequest(collection=PROBE), "OK", note="no points"),
    # ids
    Case("id 2^63", "Upsert", _upsert(ids=_ids(2**63)), IA, r"point id 9223372036854775808 is too large"),
    Case("id 2^64-1", "Upsert", _upsert(ids=_ids(2**64 - 1)), IA, r"too large"),
    Case("get id 2^63", "GetPoints", pb.GetPointsRequest(collection=PROBE, ids=_ids(2**63)), IA, r"too large"),
    Case("delete id 2^63", "DeletePoints", pb.DeletePointsRequest(collection=PROBE, ids=_ids(2**63)), IA,
         r"too large"),
    Case("malformed UUID", "Upsert", _upsert(ids=pb.PointIds(uuid=["not-a-uuid"])), IA, r"'not-a-uuid' is not a UUID"),
    Case("UUID with a bad hex digit", "Upsert", _upsert(ids=pb.PointIds(uuid=[PROBE_UUID[:-1] + "g"])), IA,
         r"is not a UUID"),
    Case("delete malformed UUID", "DeletePoints",
         pb.DeletePointsRequest(collection=PROBE, ids=pb.PointIds(uuid=["x" * 36])), IA, r"is not a UUID"),
    Case("empty UUID entry with no numeric id", "Upsert", _upsert(ids=pb.PointIds(uuid=[""])), IA,
         r"entry 0 is empty"),
    Case("id columns of different lengths", "Upsert", _upsert(ids=pb.PointIds(num=[1, 2], uuid=[PROBE_UUID])), IA,
         r"columns of equal length"),
    Case("2 ids for 1 vector", "Upsert", _upsert(ids=_ids(7, 8)), IA, r"2 ids for 1 vectors"),
    # payloads
    Case("payload a JSON array", "Upsert", _payload(b"[1, 2]"), IA, r"must be a JSON object, got list"),
    Case("payload a JSON number", "Upsert", _payload(b"42"), IA, r"must be a JSON object, got int"),
    Case("payload a JSON string", "Upsert", _payload(b'"text"'), IA, r"must be a JSON object, got str"),
    Case("payload JSON null", "Upsert", _payload(b"null"), IA, r"must be a JSON object, got NoneType"),
    Case("payload invalid JSON", "Upsert", _payload(b"{nope"), IA, r"not valid JSON"),
    Case("payload invalid UTF-8 bytes", "Upsert", _payload(b"\xff\xfe{}"), IA, r"not valid JSON"),
    Case("payload with trailing garbage", "Upsert", _payload(b'{"a": 1} x'), IA, r"not valid JSON"),
    Case("payload with NaN", "Upsert", _payload(b'{"a": NaN}'), IA, r"NaN is not JSON"),
    Case("payload with a lone surrogate", "Upsert", _payload(b'{"a": "\\ud800"}'), IA, r"surrogate"),
    Case("payload nested 10,000 objects deep", "Upsert", _payload(deep_json(10_000)), IA,
         r"nested deeper than 64"),
    Case("payload nested 10,000 arrays deep", "Upsert", _payload(deep_json(10_000, "array")), IA,
         r"nested deeper than 64"),
    Case(f"payload nested {PAYLOAD_DEPTH_LIMIT + 1} deep (one over the limit)", "Upsert",
         _payload(deep_json(PAYLOAD_DEPTH_LIMIT + 1)), IA, r"nested deeper than 64"),
    Case("payload number 1e400 (overflows to Infinity) at the end of a 2-shard batch", "Upsert",
         _upsert(ids=_ids(*range(N)), vectors=_vec(N), payloads=[b"{}"] * (N - 1) + [b'{"x": 1e400}']), IA,
         r"payload of point 39.*(infinit|finite|out of range)", note="nothing written on either shard"),
    Case("payload number -1e400 in a nested list", "Upsert", _payload(b'{"x": [1, {"y": -1e400}]}'), IA,
         r"(infinit|finite|out of range)"),
    Case("payload with the reserved key", "Upsert", _payload(b'{"_quiver_uuid": "x"}'), IA, r"reserved key"),
    Case("2 payloads for 1 point", "Upsert", _upsert(payloads=[b"{}", b"{}"]), IA, r"2 payloads for 1 points"),
    Case("bad payload at the end of a 2-shard batch", "Upsert",
         _upsert(ids=_ids(*range(N)), vectors=_vec(N), payloads=[b"{}"] * (N - 1) + [b"[]"]), IA,
         r"payload of point 39", note="nothing written on either shard"),
    # collection names
    Case("create name '../x'", "CreateCollection", pb.CreateCollectionRequest(name="../x", dimension=4), IA,
         r"collection name '\.\./x' is invalid"),
    Case("create name 'a/b'", "CreateCollection", pb.CreateCollectionRequest(name="a/b", dimension=4), IA,
         r"collection name 'a/b' is invalid"),
    Case("create empty name", "CreateCollection", pb.CreateCollectionRequest(name="", dimension=4), IA,
         r"collection name '' is invalid"),
    Case("create 65-character name", "CreateCollection", pb.CreateCollectionRequest(name="x" * 65, dimension=4),
         IA, r"is invalid: use 1 to 64"),
    Case("create 100,000-character name", "CreateCollection",
         pb.CreateCollectionRequest(name="y" * 100_000, dimension=4), IA, r"is invalid"),
    Case("create name with NUL", "CreateCollection", pb.CreateCollectionRequest(name="a\0b", dimension=4), IA,
         r"is invalid"),
    Case("search collection '../probe'", "Search", pb.SearchRequest(collection="../probe", vectors=_vec(1), limit=1),
         "NOT_FOUND", r"'\.\./probe' does not exist"),
    Case("upsert into 'probe/../probe'", "Upsert",
         pb.UpsertRequest(collection="probe/../probe", ids=_ids(1), vectors=_vec(1)), "NOT_FOUND", r"does not exist"),
    Case("delete collection '../probe'", "DeleteCollection", pb.DeleteCollectionRequest(name="../probe"),
         "NOT_FOUND", r"does not exist"),
    Case("get collection with a 100,000-character name", "GetCollection",
         pb.GetCollectionRequest(name="z" * 100_000), "NOT_FOUND", r"does not exist"),
    # collection configs
    Case("distance enum 99", "CreateCollection",
         pb.CreateCollectionRequest(name="enum99", dimension=4, distance=99), IA, r"unknown distance value 99"),
    Case("quantization kind enum 99", "CreateCollection", pb.CreateCollectionRequest(
        name="enum99", dimension=4, quantization=pb.QuantizationConfig(kind=99)), IA, r"unknown kind value 99"),
    Case("binary encoding enum -1", "CreateCollection", pb.CreateCollectionRequest(
        name="enum99", dimension=4, quantization=pb.QuantizationConfig(encoding=-1)), IA,
         r"unknown encoding value -1"),
    Case("dimension 70,000", "CreateCollection", pb.CreateCollectionRequest(name="big", dimension=70_000), IA,
         r"dimension must be an integer in \[1, 65536\]"),
    Case("quantile NaN", "CreateCollection", pb.CreateCollectionRequest(
        name="qnan", dimension=4, quantization=pb.QuantizationConfig(quantile=float("nan"))), IA, r"quantile"),
    Case("retrain_growth NaN", "CreateCollection", pb.CreateCollectionRequest(
        name="gnan", dimension=4, index=pb.IndexConfig(retrain_growth=float("nan"))), IA, r"retrain_growth"),
    Case("shard_number 10^6", "CreateCollection",
         pb.CreateCollectionRequest(name="many", dimension=4, shard_number=10**6), IA, r"shard_number must be in"),
    Case("replication_factor 3 on 2 nodes", "CreateCollection",
         pb.CreateCollectionRequest(name="rf3", dimension=4, replication_factor=3), IA, r"replication_factor"),
    Case("create existing name", "CreateCollection", pb.CreateCollectionRequest(name=PROBE, dimension=DIM),
         "ALREADY_EXISTS", r"'probe' already exists"),
    # unknown collection, every operation
    *[Case(f"{m} on unknown collection", m, req, "NOT_FOUND", r"'nope' does not exist") for m, req in [
        ("GetCollection", pb.GetCollectionRequest(name="nope")),
        ("DeleteCollection", pb.DeleteCollectionRequest(name="nope")),
        ("Upsert", pb.UpsertRequest(collection="nope", ids=_ids(1), vectors=_vec(1))),
        ("GetPoints", pb.GetPointsRequest(collection="nope", ids=_ids(1))),
        ("DeletePoints", pb.DeletePointsRequest(collection="nope", ids=_ids(1))),
        ("Count", pb.CountRequest(collection="nope")),
        ("Search", pb.SearchRequest(collection="nope", vectors=_vec(1), limit=1)),
    ]],
    # bytes that are not a request: gRPC's deserializer refuses them before any handler runs
    Case("corrupt protobuf bytes", "Count", b"\xff\xff\xff", IA, r"could not be parsed"),
    Case("invalid UTF-8 in the collection name (a proto string)", "Count", b"\x0a\x02\xff\xfe", IA,
         r"could not be parsed"),
    # size limit
    Case(f"upsert over the {MAX_MESSAGE_MB} MiB message limit", "Upsert",
         _upsert(ids=_ids(*range(40_000)), vectors=_vec(40_000, 32)), "RESOURCE_EXHAUSTED",
         r"larger than max", note="refused by gRPC before the coordinator sees it"),
    Case(f"search over the {MAX_MESSAGE_MB} MiB message limit", "Search", _search(_vec(20_000, 64)),
         "RESOURCE_EXHAUSTED", r"larger than max"),
]

_RESULTS: dict[str, tuple[str, str]] = {}


def call(channel, method: str, request, timeout: float = 30):
    """Call ``/quiver.v1.Quiver/<method>`` with a message or raw request bytes; returns (code name, message)."""
    raw = request if isinstance(request, bytes) else request.SerializeToString()
    fn = channel.unary_unary(f"/quiver.v1.Quiver/{method}")  # bytes in, bytes out
    try:
        fn(raw, timeout=timeout)
    except grpc.RpcError as e:
        return e.code().name, e.details() or ""
    return "OK", ""


def test_typed_messages_cannot_express_negative_or_oversized_unsigned_fields():
    """offset and limit are uint32: the generated classes refuse -1 and 2^32 before sending."""
    with pytest.raises(ValueError):
        pb.SearchRequest(offset=-1)
    with pytest.raises(ValueError):
        pb.SearchRequest(limit=2**32)
    with pytest.raises(ValueError):
        pb.PointIds(num=[-1])


def _param(c: Case):
    return pytest.param(c, id=c.name)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input(channel, stub, probe, case):
    before = snapshot(stub)
    code, message = call(channel, case.method, case.request)
    _RESULTS[case.name] = (code, message)
    assert snapshot(stub) == before, f"{case.name} changed the cluster's state"
    assert code == case.code, f"{case.name}: {code} {message!r}"
    if case.code != "OK":
        assert message.strip(), f"{case.name}: empty message"
        assert re.search(case.says, message, re.I | re.S), f"{case.name}: message {message!r} !~ {case.says!r}"
        assert not message.startswith("internal error"), message


def test_cluster_still_serves_after_the_table(channel, stub, probe):
    """After every bad input: health SERVING, and a valid search finds the probe point."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    got = stub.GetPoints(pb.GetPointsRequest(collection=PROBE, ids=_ids(7), with_vector=True), timeout=30)
    hits = stub.Search(_search(got.vectors, limit=3, params=pb.SearchParams(exact=True)), timeout=30)
    assert list(hits.results[0].ids.num)[0] == 7
    assert stub.Count(pb.CountRequest(collection=PROBE), timeout=30).count == N + 1


def test_duplicate_ids_in_one_batch_last_wins(stub, probe):
    """Repeated ids in one batch (numeric, and one UUID in two spellings): one point each, the last wins."""
    name = "dups"
    stub.CreateCollection(pb.CreateCollectionRequest(name=name, dimension=DIM, shard_number=2), timeout=60)
    u = str(uuid.uuid4())
    x = np.arange(1, 5 * DIM + 1, dtype=np.float32).reshape(5, DIM)
    ids = pb.PointIds(num=[5, 6, 5, 0, 0], uuid=["", "", "", u, u.upper()])
    payloads = [b'{"v": "first"}', b'{"v": "six"}', b'{"v": "last"}', b'{"u": 1}', b'{"u": 2}']
    r = stub.Upsert(pb.UpsertRequest(collection=name, ids=ids, vectors=common_pb2.Vectors(dim=DIM, f32le=x.tobytes()),
                                     payloads=payloads), timeout=30)
    assert r.upserted == 5  # what the request carried
    assert stub.Count(pb.CountRequest(collection=name), timeout=30).count == 3
    got = stub.GetPoints(pb.GetPointsRequest(collection=name, ids=pb.PointIds(num=[5, 6, 0], uuid=["", "", u]),
                                             with_payload=True, with_vector=True), timeout=30)
    assert [json.loads(p) for p in got.payloads] == [{"v": "last"}, {"v": "six"}, {"u": 2}]
    vectors = np.frombuffer(got.vectors.f32le, np.float32).reshape(-1, DIM)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)  # cosine: stored normalised
    np.testing.assert_allclose(vectors, xn[[2, 1, 4]], rtol=1e-6)
    stub.DeleteCollection(pb.DeleteCollectionRequest(name=name), timeout=60)


def test_payload_at_the_depth_limit_is_accepted(stub, probe):
    name = "deep"
    stub.CreateCollection(pb.CreateCollectionRequest(name=name, dimension=DIM, shard_number=1), timeout=60)
    for kind in ("object", "array"):
        p = deep_json(PAYLOAD_DEPTH_LIMIT, kind)
        stub.Upsert(pb.UpsertRequest(collection=name, ids=_ids(1), vectors=_vec(1), payloads=[p]), timeout=30)
        got = stub.GetPoints(pb.GetPointsRequest(collection=name, ids=_ids(1), with_payload=True), timeout=30)
        assert json.loads(got.payloads[0]) == json.loads(p)
    stub.DeleteCollection(pb.DeleteCollectionRequest(name=name), timeout=60)


@pytest.fixture(scope="module", autouse=True)
def reliability_report():
    """Write tests/RELIABILITY.md from the table's results (QUIVER_WRITE_RELIABILITY=1, full table only)."""
    yield
    if not reliability_doc.enabled() or len(_RESULTS) != len(CASES):
        return
    write_reliability()


_cell = reliability_doc.cell


def write_reliability() -> None:
    """This module's section of tests/RELIABILITY.md (``tests/reliability_doc.py``)."""
    lines = [
        "## Bad input through the public API",
        "",
        f"A live cluster (coordinator + 2 shard-node processes, messages capped at {MAX_MESSAGE_MB} MiB) gets "
        "each input through the raw generated stubs. After every case the test checks that nothing changed: "
        "the collection list, the probe collection's point count on each shard, and the probe points' "
        "payloads and vectors (two numeric points and a UUID point). **Data lost: none** in every row, "
        "or the test fails.",
        "",
        f"Payloads nested deeper than {PAYLOAD_DEPTH_LIMIT} levels are refused (`MAX_PAYLOAD_DEPTH` in "
        "`coordinator/service.py`). `offset` and `limit` are `uint32`: a typed client cannot send -1, and a "
        "64-bit -1 on the wire arrives as 4294967295. Repeated ids in one batch are not an error: the last "
        "occurrence wins (`test_duplicate_ids_in_one_batch_last_wins`). `tests/test_fuzz.py` throws random "
        "requests of the same kinds, and random request bytes, and checks that none gets INTERNAL or UNKNOWN "
        "and the cluster keeps serving.",
        "",
        "| # | input | RPC | status | message | data lost |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for i, c in enumerate(CASES, 1):
        code, message = _RESULTS[c.name]
        shown = message if code != "OK" else c.note
        if c.note and code != "OK":
            shown = f"{message} ({c.note})"
        lines.append(f"| {i} | {_cell(c.name)} | {c.method} | `{code}` | {_cell(shown, 260)} | none |")
    lines += [
        "",
        "### What these cases found (fixed with them)",
        "",
        "- A payload nested 10,000 deep made the JSON parser raise RecursionError: INTERNAL. Now refused "
        f"above {PAYLOAD_DEPTH_LIMIT} levels with INVALID_ARGUMENT (`coordinator/service.py`).",
        "- A payload holding a lone surrogate escape (`\"\\ud800\"`) was stored, and every later read of "
        "that point with its payload (get, search) failed with INTERNAL on the shard. Now refused on upsert.",
        "- A payload number overflowing float64 (`1e400`) passed the coordinator and was refused by its shard "
        "only: in a batch over two shards the other shard's points were written (a partial write). Now the "
        "coordinator refuses the whole batch.",
        "- A status message quoting a 100,000-character collection name overflowed the client's metadata "
        "limit: the client saw RESOURCE_EXHAUSTED \"Stream removed\" instead of INVALID_ARGUMENT / NOT_FOUND. "
        "Messages are now cut in the middle to 1,000 bytes (`coordinator/errors.py`).",
        "- Request bytes that are not the method's protobuf message (corrupt, or invalid UTF-8 in a string "
        "field) failed inside gRPC's deserializer and came back UNKNOWN. Every server now guards its "
        "deserializers (`quiver/serving.py`): INVALID_ARGUMENT.",
    ]
    reliability_doc.write_section("bad-input", lines)


def test_status_messages_are_clipped_in_the_middle():
    """Long messages keep their head and the tail that says what to change, within the byte limit."""
    from coordinator.errors import MAX_MESSAGE_BYTES, clip_message, status_for
    from shard.errors import InvalidArgument

    assert clip_message("short") == "short"
    for ch in ("y", "é", "😀"):
        msg = f"collection name {ch * 50_000!r} is invalid: use 1 to 64 of A-Z a-z 0-9 _ -"
        out = clip_message(msg)
        assert len(out.encode()) <= MAX_MESSAGE_BYTES
        assert out.startswith("collection name '") and out.endswith("is invalid: use 1 to 64 of A-Z a-z 0-9 _ -")
        assert "characters cut" in out
    code, message = status_for(InvalidArgument("x" * 10**6))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and len(message.encode()) <= MAX_MESSAGE_BYTES
