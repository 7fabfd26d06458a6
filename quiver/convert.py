"""Conversions between the wire messages (quiver.v1) and Python values.

The generated code stops here and in the thin servers: everything behind them
works on numpy arrays, ``shard.config`` dataclasses and ``shard.node`` values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from quiver.ids import IdBatch, from_columns
from quiver.v1 import common_pb2, quiver_pb2, shard_node_pb2
from shard.config import CollectionConfig, HnswConfig, IndexConfig, QuantizationConfig
from shard.errors import InvalidArgument
from shard.node import ShardPoints, ShardSearch

_F32 = np.dtype("<f4")
_U64 = np.dtype("<u8")

# ------------------------------------------------------------------ vectors


def vectors_to_proto(x: np.ndarray | None) -> common_pb2.Vectors | None:
    """(n, d) float array -> Vectors in the packed float32 form."""
    if x is None:
        return None
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    return common_pb2.Vectors(dim=x.shape[1], f32le=np.ascontiguousarray(x, _F32).tobytes())


def vectors_from_proto(msg: common_pb2.Vectors, what: str = "vectors") -> np.ndarray:
    """Vectors -> (n, d) float32 (read-only when it came packed). Empty message -> (0, 0)."""
    dim = msg.dim
    if msg.f32le and len(msg.values):
        raise InvalidArgument(f"{what}: set either f32le or values, not both")
    if dim == 0:
        if msg.f32le or len(msg.values):
            raise InvalidArgument(f"{what}: dim must be set")
        return np.zeros((0, 0), np.float32)
    if msg.f32le:
        buf = msg.f32le
        if len(buf) % (4 * dim):
            raise InvalidArgument(f"{what}: {len(buf)} bytes is not a whole number of {dim}-d float32 vectors")
        return np.frombuffer(buf, _F32).reshape(-1, dim)
    values = np.asarray(msg.values, np.float32)
    if values.size % dim:
        raise InvalidArgument(f"{what}: {values.size} values is not a whole number of {dim}-d vectors")
    return values.reshape(-1, dim)


def ids_to_bytes(ids: np.ndarray) -> bytes:
    return np.ascontiguousarray(ids, _U64).tobytes()


def ids_from_bytes(b: bytes) -> np.ndarray:
    if len(b) % 8:
        raise InvalidArgument(f"ids: {len(b)} bytes is not a whole number of uint64")
    return np.frombuffer(b, _U64)


# ---------------------------------------------------------------- point ids


def point_ids_from_proto(msg: quiver_pb2.PointIds) -> IdBatch:
    return from_columns(msg.num, msg.uuid)


def point_ids_to_proto(ids: np.ndarray, uuids: list[str] | None = None) -> quiver_pb2.PointIds:
    """Engine ids (+ UUID strings at UUID positions) -> PointIds columns."""
    if uuids is None:
        return quiver_pb2.PointIds(num=ids.tolist())
    return quiver_pb2.PointIds(num=ids.tolist(), uuid=uuids)


# ------------------------------------------------------------------ configs

_ENUMS = {
    # CollectionConfig field -> (proto enum, name prefix)
    "distance": (quiver_pb2.Distance, "DISTANCE_"),
    "kind": (quiver_pb2.QuantizationKind, "QUANTIZATION_KIND_"),
    "encoding": (quiver_pb2.BinaryEncoding, "BINARY_ENCODING_"),
    "query_encoding": (quiver_pb2.BinaryQueryEncoding, "BINARY_QUERY_ENCODING_"),
    "compression": (quiver_pb2.ProductCompression, "PRODUCT_COMPRESSION_"),
}


def enum_to_str(field: str, value: int) -> str | None:
    """Proto enum value -> the config's string (e.g. BINARY_ENCODING_TWO_BITS -> "two_bits"); None if unspecified."""
    enum, prefix = _ENUMS[field]
    if value == 0:
        return None
    try:
        return enum.Name(value)[len(prefix):].lower()
    except ValueError:
        raise InvalidArgument(f"unknown {field} value {value}") from None


def str_to_enum(field: str, value: str) -> int:
    enum, prefix = _ENUMS[field]
    return enum.Value(prefix + value.upper())


_INDEX_FIELDS = tuple(quiver_pb2.IndexConfig.DESCRIPTOR.fields_by_name)


_HNSW_FIELDS = tuple(quiver_pb2.HnswConfig.DESCRIPTOR.fields_by_name)


def config_from_proto(dimension: int, distance: int, q: quiver_pb2.QuantizationConfig,
                      ix: quiver_pb2.IndexConfig, hnsw: quiver_pb2.HnswConfig | None = None) -> CollectionConfig:
    """The fields of a create request -> CollectionConfig (unset fields: engine defaults)."""
    qd: dict = {}
    for f in ("kind", "encoding", "query_encoding", "compression"):
        s = enum_to_str(f, getattr(q, f))
        if s is not None:
            qd[f] = s
    for f in ("quantile", "seed"):
        if q.HasField(f):
            qd[f] = getattr(q, f)
    idx = {f: getattr(ix, f) for f in _INDEX_FIELDS if ix.HasField(f)}
    graph = None if hnsw is None else HnswConfig(**{f: getattr(hnsw, f) for f in _HNSW_FIELDS if hnsw.HasField(f)})
    try:
        return CollectionConfig(dim=int(dimension), distance=enum_to_str("distance", distance) or "cosine",
                                quantization=QuantizationConfig(**qd), index=IndexConfig(**idx), hnsw=graph)
    except TypeError as e:  # a value of the wrong type reaching a dataclass
        raise InvalidArgument(str(e)) from None


def config_to_proto(cfg: CollectionConfig) -> dict:
    """CollectionConfig -> the fields of CollectionInfo / CreateCollectionRequest, all resolved."""
    q = cfg.quantization
    ix = cfg.index
    return dict(
        dimension=cfg.dim,
        distance=str_to_enum("distance", cfg.distance),
        quantization=quiver_pb2.QuantizationConfig(
            kind=str_to_enum("kind", q.kind), quantile=q.quantile, encoding=str_to_enum("encoding", q.encoding),
            query_encoding=str_to_enum("query_encoding", q.query_encoding),
            compression=str_to_enum("compression", q.compression), seed=q.seed),
        index=quiver_pb2.IndexConfig(**{f: getattr(ix, f) for f in _INDEX_FIELDS}),
        **({} if cfg.hnsw is None else
           {"hnsw": quiver_pb2.HnswConfig(**{f: getattr(cfg.hnsw, f) for f in _HNSW_FIELDS})}),
    )


def config_to_json(cfg: CollectionConfig) -> str:
    return json.dumps(cfg.to_dict(), sort_keys=True)


def config_from_json(text: str) -> CollectionConfig:
    try:
        return CollectionConfig.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidArgument(f"bad collection config: {e}") from None


# ------------------------------------------------------------------- search


@dataclass(frozen=True)
class SearchSpec:
    """A public search request's options, validated and with defaults applied."""

    limit: int
    offset: int = 0
    score_threshold: float | None = None
    with_payload: bool = False
    with_vector: bool = False
    oversampling: float = 1.0
    rescore: bool = True
    ignore: bool = False
    exact: bool = False
    effort: int | None = None
    allow_partial: bool = False


def search_spec_from_proto(req: quiver_pb2.SearchRequest) -> SearchSpec:
    p = req.params
    q = p.quantization
    effort = None
    if p.HasField("nprobe") and p.HasField("hnsw_ef") and p.nprobe != p.hnsw_ef:
        raise InvalidArgument(f"params.nprobe ({p.nprobe}) and its alias params.hnsw_ef ({p.hnsw_ef}) disagree")
    if p.HasField("nprobe"):
        effort = p.nprobe
    elif p.HasField("hnsw_ef"):
        effort = p.hnsw_ef
    if effort is not None and effort < 1:
        raise InvalidArgument("params.nprobe (hnsw_ef) must be >= 1")
    return SearchSpec(
        limit=req.limit, offset=req.offset,
        score_threshold=req.score_threshold if req.HasField("score_threshold") else None,
        with_payload=req.with_payload, with_vector=req.with_vector,
        oversampling=q.oversampling if q.HasField("oversampling") else 1.0,
        rescore=q.rescore if q.HasField("rescore") else True,
        ignore=q.ignore, exact=p.exact, effort=effort, allow_partial=req.allow_partial)


def search_request_to_proto(collection: str, queries: np.ndarray, spec: SearchSpec) -> quiver_pb2.SearchRequest:
    params = quiver_pb2.SearchParams(
        exact=spec.exact,
        quantization=quiver_pb2.QuantizationSearchParams(
            ignore=spec.ignore, rescore=spec.rescore, oversampling=spec.oversampling))
    if spec.effort is not None:
        params.nprobe = spec.effort
    req = quiver_pb2.SearchRequest(
        collection=collection, vectors=vectors_to_proto(queries), limit=spec.limit, offset=spec.offset,
        with_payload=spec.with_payload, with_vector=spec.with_vector, params=params,
        allow_partial=spec.allow_partial)
    if spec.score_threshold is not None:
        req.score_threshold = spec.score_threshold
    return req


# ---------------------------------------------------------- internal (shard)


def shard_search_to_proto(ref: shard_node_pb2.ShardRef, queries: np.ndarray,
                          p: ShardSearch) -> shard_node_pb2.ShardSearchRequest:
    req = shard_node_pb2.ShardSearchRequest(
        shard=ref, queries=vectors_to_proto(queries), limit=p.limit, oversampling=p.oversampling,
        rescore=p.rescore, ignore=p.ignore, exact=p.exact, effort=p.effort or 0,
        with_payload=p.with_payload, with_vector=p.with_vector)
    if p.score_threshold is not None:
        req.score_threshold = p.score_threshold
    return req


def shard_search_from_proto(req: shard_node_pb2.ShardSearchRequest) -> ShardSearch:
    return ShardSearch(
        limit=req.limit, oversampling=req.oversampling or 1.0, rescore=req.rescore, ignore=req.ignore,
        exact=req.exact, effort=req.effort or None, with_payload=req.with_payload,
        with_vector=req.with_vector,
        score_threshold=req.score_threshold if req.HasField("score_threshold") else None)


def shard_points_to_proto(p: ShardPoints) -> shard_node_pb2.ShardPoints:
    msg = shard_node_pb2.ShardPoints(ids=ids_to_bytes(p.ids))
    if p.scores is not None:
        msg.scores = np.ascontiguousarray(p.scores, _F32).tobytes()
    if p.payloads is not None:
        msg.payloads.extend(p.payloads)
    if p.vectors is not None:
        msg.vectors.CopyFrom(vectors_to_proto(p.vectors))
    return msg


def shard_points_from_proto(msg: shard_node_pb2.ShardPoints, with_payload: bool, with_vector: bool) -> ShardPoints:
    ids = ids_from_bytes(msg.ids)
    scores = np.frombuffer(msg.scores, _F32) if (msg.scores or not len(ids)) else None
    payloads = list(msg.payloads) if with_payload else None
    vectors = None
    if with_vector:
        vectors = vectors_from_proto(msg.vectors) if msg.vectors.dim else np.zeros((len(ids), 0), np.float32)
    return ShardPoints(ids, scores, payloads, vectors)


def stats_to_proto(ref: shard_node_pb2.ShardRef, s: dict) -> shard_node_pb2.ShardStats:
    return shard_node_pb2.ShardStats(
        shard=ref, points=s["points"], ram_bytes=s["ram_bytes"], disk_bytes=s["disk_bytes"],
        originals_read=s["originals_read"], searches=s["searches"])


def stats_from_proto(msg: shard_node_pb2.ShardStats) -> dict:
    return {"points": msg.points, "ram_bytes": msg.ram_bytes, "disk_bytes": msg.disk_bytes,
            "originals_read": msg.originals_read, "searches": msg.searches}
