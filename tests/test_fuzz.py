"""Random well-formed and malformed requests against a live cluster (issue 6).

Hypothesis builds requests for every point and collection RPC of the public API
from random parts: vectors as random bytes or random floats (NaN, Inf,
subnormals) of random dimension, random limits, offsets, oversampling, effort
and thresholds across their whole wire ranges, payloads as random bytes,
JSON-ish text, real JSON or JSON nested thousands deep, random collection names
and random ids (any uint64, random strings and UUIDs). Whatever the cluster
answers, it must never be INTERNAL or UNKNOWN (a client error is the client's,
and says so), every error carries a message, and afterwards the cluster still
answers a health check and a valid search that finds its probe point.

Bounded: ``MAX_EXAMPLES`` examples and a ``BUDGET_S`` wall-clock budget (examples
past it return at once), so the file stays well under a minute.
"""

from __future__ import annotations

import json
import os
import time

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiver.v1 import common_pb2, quiver_pb2 as pb

DIM = 8
N = 60
NAME = "fz"
#: QUIVER_FUZZ_EXAMPLES / QUIVER_FUZZ_BUDGET_S / QUIVER_FUZZ_RANDOM=1 widen a local hunt
#: (CI runs the fixed, derandomized 150 examples).
MAX_EXAMPLES = int(os.environ.get("QUIVER_FUZZ_EXAMPLES", 150))
BUDGET_S = float(os.environ.get("QUIVER_FUZZ_BUDGET_S", 35.0))
DERANDOMIZE = os.environ.get("QUIVER_FUZZ_RANDOM") != "1"
U32 = 2**32 - 1
U64 = 2**64 - 1


@pytest.fixture(scope="module")
def fz(stub):
    stub.CreateCollection(pb.CreateCollectionRequest(name=NAME, dimension=DIM, shard_number=2), timeout=60)
    x = np.random.default_rng(11).standard_normal((N, DIM)).astype(np.float32)
    stub.Upsert(pb.UpsertRequest(collection=NAME, ids=pb.PointIds(num=list(range(N))),
                                 vectors=common_pb2.Vectors(dim=DIM, f32le=x.tobytes()),
                                 payloads=[json.dumps({"i": i}).encode() for i in range(N)]), timeout=60)
    return x


# ------------------------------------------------------------- strategies

names = st.one_of(st.just(NAME), st.just("nope"), st.text(max_size=80),
                  st.text(alphabet="ab_-./\\ \0é", min_size=0, max_size=70))
floats32 = st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True)
dims = st.one_of(st.sampled_from([0, 1, DIM - 1, DIM, DIM + 1]), st.integers(0, U32))


@st.composite
def vectors(draw):
    form = draw(st.sampled_from(["bytes", "floats", "values", "unset"]))
    if form == "unset":
        return None
    if form == "bytes":  # any bytes, any dim: torn rows, NaN patterns, wrong dimension
        return common_pb2.Vectors(dim=draw(dims), f32le=draw(st.binary(max_size=200)))
    dim = draw(st.one_of(st.just(DIM), st.integers(0, 20)))
    rows = draw(st.integers(0, 3))
    vals = draw(st.lists(floats32, min_size=rows * dim, max_size=rows * dim))
    if form == "values":
        return common_pb2.Vectors(dim=dim, values=vals)
    return common_pb2.Vectors(dim=dim, f32le=np.asarray(vals, np.float32).tobytes())


def _json_values():
    leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                     st.text(max_size=10))
    return st.recursive(leaf, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                     st.dictionaries(st.text(max_size=5), kids, max_size=4)),
                        max_leaves=20)


@st.composite
def payload(draw, kinds=("bytes", "jsonish", "json", "object", "deep", "number", "escape", "empty")):
    kind = draw(st.sampled_from(kinds))
    if kind == "bytes":
        return draw(st.binary(max_size=60))
    if kind == "jsonish":
        return draw(st.text(alphabet='{}[]":,0123456789.eE+-truefalsnNI \\u', max_size=60)).encode()
    if kind == "json":
        return json.dumps(draw(_json_values())).encode()
    if kind == "object":
        return json.dumps(draw(st.dictionaries(st.text(max_size=8), _json_values(), max_size=4))).encode()
    if kind == "number":  # numeric literals, some overflowing float64 (1e400) or int conversion limits
        digits = draw(st.one_of(st.integers(-10**30, 10**30).map(str), st.just("1" * 5000),
                                st.builds(lambda m, e: f"{m}e{e}", st.integers(-99, 99),
                                          st.one_of(st.integers(-500, 500), st.integers(300, 330)))))
        return f'{{"n": [{digits}]}}'.encode()
    if kind == "escape":  # \\u escapes, surrogates included
        cps = draw(st.lists(st.one_of(st.integers(0, 0xFFFF), st.integers(0xD800, 0xDFFF)), min_size=1, max_size=3))
        return ('{"s": "' + "".join(f"\\u{c:04x}" for c in cps) + '"}').encode()
    if kind == "deep":
        depth = draw(st.integers(1, 5000))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"k":', b"}")]))
        return b'{"a":' + opener * depth + b"0" + closer * depth + b"}"
    return b""


@st.composite
def point_ids(draw, low: int = 0):
    """Random PointIds; numeric ids from ``low`` up (writes keep off the probe points 0..N-1)."""
    n = draw(st.integers(0, 4))
    num = draw(st.lists(st.one_of(st.integers(low, low + 100), st.integers(low, U64)), min_size=n, max_size=n))
    form = draw(st.sampled_from(["num", "uuid", "mixed", "ragged"]))
    uuid_text = st.one_of(st.uuids().map(str), st.text(max_size=40), st.just(""))
    if form == "num":
        return pb.PointIds(num=num)
    if form == "uuid":
        return pb.PointIds(uuid=draw(st.lists(uuid_text, min_size=n, max_size=n)))
    if form == "mixed":
        return pb.PointIds(num=num, uuid=draw(st.lists(uuid_text, min_size=n, max_size=n)))
    return pb.PointIds(num=num, uuid=draw(st.lists(uuid_text, max_size=5)))


def optional(strategy):
    return st.one_of(st.none(), strategy)


@st.composite
def search_request(draw):
    req = pb.SearchRequest(collection=draw(st.one_of(st.just(NAME), names)),
                           limit=draw(st.one_of(st.integers(0, 12), st.integers(0, U32))),
                           offset=draw(st.one_of(st.integers(0, 12), st.integers(0, U32))),
                           with_payload=draw(st.booleans()), with_vector=draw(st.booleans()),
                           allow_partial=draw(st.booleans()))
    v = draw(vectors())
    if v is not None:
        req.vectors.CopyFrom(v)
    t = draw(optional(floats32))
    if t is not None:
        req.score_threshold = t
    p = req.params
    for f in ("nprobe", "hnsw_ef"):
        e = draw(optional(st.one_of(st.integers(0, 4), st.integers(0, U32))))
        if e is not None:
            setattr(p, f, e)
    p.exact = draw(st.booleans())
    p.quantization.ignore = draw(st.booleans())
    r = draw(optional(st.booleans()))
    if r is not None:
        p.quantization.rescore = r
    o = draw(optional(st.one_of(st.floats(0, 20), st.floats(allow_nan=True, allow_infinity=True))))
    if o is not None:
        p.quantization.oversampling = o
    return "Search", req


@st.composite
def upsert_request(draw):
    ids = draw(point_ids(low=N))
    req = pb.UpsertRequest(collection=draw(st.one_of(st.just(NAME), names)), ids=ids)
    v = draw(vectors())
    if v is not None:
        req.vectors.CopyFrom(v)
    n = max(len(ids.num), len(ids.uuid))
    req.payloads.extend(draw(st.one_of(st.just([]), st.lists(payload(), min_size=n, max_size=n),
                                       st.lists(payload(), max_size=3))))
    return "Upsert", req


@st.composite
def other_request(draw):
    method = draw(st.sampled_from(["GetPoints", "DeletePoints", "Count", "GetCollection", "CreateCollection"]))
    name = draw(names)
    if method == "GetPoints":
        return method, pb.GetPointsRequest(collection=draw(st.one_of(st.just(NAME), names)), ids=draw(point_ids()),
                                           with_payload=draw(st.booleans()), with_vector=draw(st.booleans()))
    if method == "DeletePoints":  # the probe points 0..N-1 are left alone (the final search needs them)
        return method, pb.DeletePointsRequest(collection=draw(st.one_of(st.just(NAME), names)),
                                              ids=draw(point_ids(low=N)))
    if method == "Count":
        return method, pb.CountRequest(collection=name)
    if method == "GetCollection":
        return method, pb.GetCollectionRequest(name=name)
    q = pb.QuantizationConfig(kind=draw(st.integers(-3, 8)), encoding=draw(st.integers(-1, 5)),
                              query_encoding=draw(st.integers(-1, 5)), compression=draw(st.integers(-1, 7)))
    qt = draw(optional(st.floats(allow_nan=True, allow_infinity=True)))
    if qt is not None:
        q.quantile = qt
    ix = pb.IndexConfig()
    for f in ("full_scan_threshold", "nlist", "nprobe", "train_sample", "scan_factor"):
        val = draw(optional(st.one_of(st.integers(0, 300), st.integers(0, U32))))
        if val is not None:
            setattr(ix, f, val)
    g = draw(optional(st.floats(allow_nan=True, allow_infinity=True)))
    if g is not None:
        ix.retrain_growth = g
    return method, pb.CreateCollectionRequest(
        name=name, dimension=draw(st.one_of(st.integers(0, 16), st.integers(0, U32))),
        distance=draw(st.integers(-2, 6)), quantization=q, index=ix,
        shard_number=draw(st.one_of(st.integers(0, 3), st.integers(0, U32))),
        replication_factor=draw(st.one_of(st.integers(0, 3), st.integers(0, U32))))


finite32 = st.floats(-1e6, 1e6, width=32)


@st.composite
def valid_search(draw):
    """A search the API should answer, with its parameters anywhere in their valid ranges."""
    rows = draw(st.integers(1, 3))
    x = np.asarray(draw(st.lists(finite32, min_size=rows * DIM, max_size=rows * DIM)), np.float32)
    # an all-zero row is refused under cosine (INVALID_ARGUMENT): also a fine answer
    req = pb.SearchRequest(collection=NAME, vectors=common_pb2.Vectors(dim=DIM, f32le=x.tobytes()),
                           limit=draw(st.integers(1, 100)), offset=draw(st.integers(0, 100)),
                           with_payload=draw(st.booleans()), with_vector=draw(st.booleans()))
    t = draw(optional(floats32))
    if t is not None:
        req.score_threshold = t
    e = draw(optional(st.one_of(st.integers(1, 4), st.integers(1, U32))))
    if e is not None:
        req.params.nprobe = e
    req.params.exact = draw(st.booleans())
    req.params.quantization.ignore = draw(st.booleans())
    req.params.quantization.rescore = draw(st.booleans())
    req.params.quantization.oversampling = draw(st.floats(1.0, 16.0))
    return "Search", req


@st.composite
def valid_upsert(draw):
    """An upsert with well-formed vectors for its ids (off the probe points) and random payloads."""
    ids = draw(point_ids(low=N))
    n = max(len(ids.num), len(ids.uuid))
    x = np.asarray(draw(st.lists(finite32, min_size=n * DIM, max_size=n * DIM)), np.float32).reshape(n, DIM)
    req = pb.UpsertRequest(collection=NAME, ids=ids, vectors=common_pb2.Vectors(dim=DIM, f32le=x.tobytes()))
    # JSON objects that parse, some holding what a shard cannot store (1e400, lone surrogates)
    parsing = payload(kinds=("object", "object", "object", "number", "escape", "empty"))
    req.payloads.extend(draw(st.one_of(st.just([]), st.lists(parsing, min_size=n, max_size=n))))
    return "Upsert", req


requests = st.one_of(search_request(), upsert_request(), other_request(), valid_search(), valid_upsert())


# ------------------------------------------------------------------ tests


def test_fuzz_never_internal(channel, stub, fz):
    seen: dict[str, int] = {}
    written: set[int] = set(range(N))  # numeric ids some accepted upsert has written
    start = time.monotonic()

    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=DERANDOMIZE, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(requests)
    def one(method_request):
        if time.monotonic() - start > BUDGET_S:
            return
        method, req = method_request
        try:
            getattr(stub, method)(req, timeout=30)
            code, message = "OK", ""
        except grpc.RpcError as e:
            code, message = e.code().name, e.details() or ""
        seen[code] = seen.get(code, 0) + 1
        assert code not in ("INTERNAL", "UNKNOWN"), f"{method} -> {code}: {message}\n{req}"
        assert code == "OK" or message.strip(), f"{method} -> {code} with no message"
        if method == "Upsert" and req.collection == NAME:
            if code == "OK":
                written.update(req.ids.num)
                # what was accepted can be read back (a stored payload no read can encode is a bug)
                stub.GetPoints(pb.GetPointsRequest(collection=NAME, ids=req.ids, with_payload=True), timeout=30)
            else:  # a refused batch writes nothing: none of its never-written numeric ids may exist now
                uu = list(req.ids.uuid)
                nums = [i for k, i in enumerate(req.ids.num) if k >= len(uu) or not uu[k]]
                fresh = [i for i in set(nums) if i not in written and i < 2**63]
                if fresh:
                    got = stub.GetPoints(pb.GetPointsRequest(collection=NAME, ids=pb.PointIds(num=fresh)), timeout=30)
                    assert not got.ids.num, f"refused upsert ({code}: {message}) wrote {list(got.ids.num)}\n{req}"
        if method == "CreateCollection" and code == "OK":  # a valid random create: undo it
            stub.DeleteCollection(pb.DeleteCollectionRequest(name=req.name), timeout=60)

    one()
    print("fuzz outcomes:", seen)
    assert sum(seen.values()) >= 30, seen  # the budget let a meaningful number of examples through
    assert set(seen) - {"OK"}, seen  # and some were refused
    assert_cluster_serves(channel, stub, fz)


def test_fuzz_raw_bytes_never_crash(channel, stub, fz):
    """Random request bytes: refused as unparsable (INVALID_ARGUMENT), or they parse as some
    request and our handlers answer; never INTERNAL, UNKNOWN or a crash."""
    start = time.monotonic()
    methods = ["Search", "Upsert", "GetPoints", "Count", "GetCollection"]

    @settings(max_examples=60, deadline=None, derandomize=DERANDOMIZE, database=None)
    @given(st.sampled_from(methods), st.binary(max_size=300))
    def one(method, raw):
        if time.monotonic() - start > BUDGET_S / 3:
            return
        try:
            channel.unary_unary(f"/quiver.v1.Quiver/{method}")(raw, timeout=30)
            return
        except grpc.RpcError as e:
            code, message = e.code().name, e.details() or ""
        assert message.strip()
        assert code not in ("INTERNAL", "UNKNOWN"), f"{method} {raw!r} -> {code}: {message}"

    one()
    assert_cluster_serves(channel, stub, fz)


def assert_cluster_serves(channel, stub, x):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    hits = stub.Search(pb.SearchRequest(collection=NAME, vectors=common_pb2.Vectors(dim=DIM, f32le=x[3].tobytes()),
                                        limit=3, params=pb.SearchParams(exact=True), with_payload=True), timeout=30)
    assert list(hits.results[0].ids.num)[0] == 3
    assert json.loads(hits.results[0].payloads[0]) == {"i": 3}
