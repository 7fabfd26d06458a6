"""The Quiver client library: typed calls, numpy arrays in and out.

    from quiver.client import Client
    with Client("localhost:6334") as c:
        c.create_collection("docs", dimension=384, quantization="binary", shard_number=2)
        c.upsert_many("docs", ids, vectors, payloads, progress=True)
        hits = c.search("docs", query, limit=10, oversampling=3.0, rescore=True)
        hits.ids, hits.scores, hits.payloads

Errors come back as the ``shard.errors`` classes (NotFound, InvalidArgument,
Unavailable, ...) carrying the server's message.
"""

from __future__ import annotations

import collections
import json
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from coordinator.errors import error_from_rpc
from quiver import convert
from quiver.client_stream import SearchStream
from quiver.ids import to_columns
from quiver.serving import DEFAULT_MAX_MESSAGE_MB, message_options
from quiver.v1 import quiver_pb2 as pb
from quiver.v1 import quiver_pb2_grpc as pb_grpc
from shard.config import CollectionConfig, HnswConfig, IndexConfig, QuantizationConfig
from shard.errors import InvalidArgument, QuiverError, ResourceExhausted, Unavailable

_STATUS_NAMES = {pb.COLLECTION_STATUS_GREEN: "green", pb.COLLECTION_STATUS_YELLOW: "yellow",
                 pb.COLLECTION_STATUS_RED: "red"}


@dataclass
class ScoredPoints:
    """One query's results, best first.

    ids: uint64 array when every id is numeric, else an object array of ints
    and UUID strings; scores: float32 (k,); payloads: k dicts (or None each)
    when asked for; vectors: float32 (k, d) when asked for.
    """

    ids: np.ndarray
    scores: np.ndarray
    payloads: list[dict | None] | None = None
    vectors: np.ndarray | None = None
    shards_answered: int = 0
    shards_total: int = 0
    #: with allow_partial: why each shard that did not answer is missing (it names the shard)
    missing_shards: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Records:
    """Points fetched by id (found ones only, request order)."""

    ids: np.ndarray
    payloads: list[dict | None] | None = None
    vectors: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class ShardReplica:
    shard_id: int
    node: str
    available: bool
    error: str
    points: int
    ram_bytes: int
    disk_bytes: int
    originals_read: int
    searches: int


@dataclass
class CollectionInfo:
    name: str
    config: CollectionConfig
    shard_number: int
    replication_factor: int
    status: str  # green | yellow | red
    points: int
    shards: list[ShardReplica] = field(default_factory=list)

    @property
    def originals_read(self) -> int:
        """Originals read by searches, summed over the replicas (cumulative)."""
        return sum(s.originals_read for s in self.shards)

    @property
    def searches(self) -> int:
        return sum(s.searches for s in self.shards)


def _ids_msg(ids) -> pb.PointIds:
    num, uuid = to_columns(ids)
    msg = pb.PointIds(uuid=uuid)
    msg.num.extend(num.tolist() if isinstance(num, np.ndarray) else num)
    return msg


def _ids_out(msg: pb.PointIds) -> np.ndarray:
    if not len(msg.uuid):
        return np.array(msg.num, np.uint64)
    num = list(msg.num) or [0] * len(msg.uuid)
    return np.array([u or n for n, u in zip(num, msg.uuid)], object)


def _payloads_out(raw) -> list[dict | None]:
    return [json.loads(b) if b else None for b in raw]


def _payloads_in(payloads, n: int) -> list[bytes]:
    if payloads is None:
        return []
    if len(payloads) != n:
        raise InvalidArgument(f"got {len(payloads)} payloads for {n} points")
    out = []
    for p in payloads:
        if p is None:
            out.append(b"")
        elif isinstance(p, (bytes, str)):
            out.append(p.encode() if isinstance(p, str) else p)
        else:
            out.append(json.dumps(p, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode())
    return out


def _vectors(x, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise InvalidArgument(f"{what} must be a (n, dim) array, got shape {x.shape}")
    return x


def _quantization(q) -> QuantizationConfig:
    if q is None:
        return QuantizationConfig()
    if isinstance(q, QuantizationConfig):
        return q
    if isinstance(q, str):
        return QuantizationConfig(kind=q)
    return QuantizationConfig(**q)


class _CallDetails(collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials",
                                                            "wait_for_ready", "compression")),
                   grpc.ClientCallDetails):
    pass


def _auth_header(api_key: str) -> tuple[str, str]:
    return ("authorization", f"Bearer {api_key}")


class _ApiKeyInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Adds ``authorization: Bearer <key>`` to every call."""

    def __init__(self, api_key: str):
        self._header = _auth_header(api_key)

    def __repr__(self) -> str:  # never the key
        return "_ApiKeyInterceptor()"

    def intercept_unary_unary(self, continuation, details, request):
        details = _CallDetails(details.method, details.timeout, [*(details.metadata or ()), self._header],
                               details.credentials, details.wait_for_ready, details.compression)
        return continuation(details, request)


def open_channel(address: str, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_MB << 20, tls: bool = False,
                 ca_cert: str | Path | None = None, tls_server_name: str | None = None,
                 tls_cert: str | Path | None = None, tls_key: str | Path | None = None) -> grpc.Channel:
    """A channel to a coordinator: plaintext, or TLS trusting ``ca_cert`` (None = the
    system's roots), showing the client certificate ``tls_cert`` (with its key ``tls_key``)
    to a coordinator that asks for one."""
    options = message_options(max_message_bytes)
    if bool(tls_cert) != bool(tls_key):
        raise ValueError("tls_cert and tls_key go together")
    if tls or ca_cert or tls_cert:
        if tls_server_name:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
        roots = Path(ca_cert).read_bytes() if ca_cert else None
        cert, key = (Path(tls_cert).read_bytes(), Path(tls_key).read_bytes()) if tls_cert else (None, None)
        return grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=roots, private_key=key,
                                                                         certificate_chain=cert), options)
    return grpc.insecure_channel(address, options=options)


class Client:
    """A connection to a Quiver coordinator.

    timeout: default deadline of every call, in seconds (None = none); the
    coordinator passes what is left of it on to the shards.
    api_key: sent on every call (``authorization: Bearer <key>``) to a
    coordinator that requires keys.
    tls: connect over TLS, trusting ``ca_cert`` (a PEM file; None = the system's
    roots); ``tls_server_name`` overrides the name checked against the
    certificate (when the address is not one of its names); ``tls_cert`` and
    ``tls_key`` (PEM files): the client certificate for a coordinator that
    requires one (``--tls-client-ca``).
    search_stream: send searches on one long-lived stream (``Quiver.SearchStream``,
    see quiver/client_stream.py) rather than a unary call each; same results
    and errors, less work per search on both sides.
    """

    def __init__(self, address: str = "localhost:6334", *, timeout: float | None = 300.0,
                 max_message_mb: int = DEFAULT_MAX_MESSAGE_MB, channel: grpc.Channel | None = None,
                 api_key: str | None = None, tls: bool = False, ca_cert: str | Path | None = None,
                 tls_server_name: str | None = None, search_stream: bool = True,
                 tls_cert: str | Path | None = None, tls_key: str | Path | None = None):
        self.address = address
        self.timeout = timeout
        self.max_message_bytes = max_message_mb << 20
        if channel is None:
            channel = open_channel(address, max_message_bytes=self.max_message_bytes, tls=tls, ca_cert=ca_cert,
                                   tls_server_name=tls_server_name, tls_cert=tls_cert, tls_key=tls_key)
        self._raw_channel = channel  # readiness is watched on the channel itself
        self._channel = grpc.intercept_channel(channel, _ApiKeyInterceptor(api_key)) if api_key else channel
        self._stub = pb_grpc.QuiverStub(self._channel)
        # streams are not seen by the unary interceptor: the key goes along as metadata
        self._search_stream = SearchStream(pb_grpc.QuiverStub(channel).SearchStream, address,
                                           (_auth_header(api_key),) if api_key else None
                                           ) if search_stream else None

    def close(self) -> None:
        if self._search_stream is not None:
            self._search_stream.close()
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request, timeout: float | None = None):
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the coordinator accepts connections."""
        try:
            grpc.channel_ready_future(self._raw_channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise Unavailable(f"coordinator {self.address} not reachable after {timeout:g}s") from None

    # ------------------------------------------------------------ collections

    def create_collection(self, name: str, dimension: int, distance: str = "cosine",
                          quantization: QuantizationConfig | dict | str | None = None,
                          index: IndexConfig | dict | None = None, shard_number: int = 0,
                          replication_factor: int = 0, write_consistency: int = 0,
                          hnsw: HnswConfig | dict | bool | None = None) -> CollectionInfo:
        """Create a collection. quantization: a QuantizationConfig, its fields as a dict, or
        just the kind ("none", "scalar", "binary", "product"). shard_number 0 = one per node.
        hnsw: search an HNSW graph over the (scalar or product) codes: True for the defaults,
        or an HnswConfig or its fields as a dict."""
        index = index if isinstance(index, IndexConfig) else IndexConfig(**(index or {}))
        if hnsw is True or isinstance(hnsw, dict):
            hnsw = HnswConfig(**({} if hnsw is True else hnsw))
        cfg = CollectionConfig(dim=int(dimension), distance=distance, quantization=_quantization(quantization),
                               index=index, hnsw=hnsw or None)
        req = pb.CreateCollectionRequest(name=name, shard_number=shard_number,
                                         replication_factor=replication_factor, write_consistency=write_consistency,
                                         **convert.config_to_proto(cfg))
        return self._info(self._call(self._stub.CreateCollection, req))

    def get_collection(self, name: str) -> CollectionInfo:
        return self._info(self._call(self._stub.GetCollection, pb.GetCollectionRequest(name=name)))

    def list_collections(self) -> list[str]:
        return list(self._call(self._stub.ListCollections, pb.ListCollectionsRequest()).names)

    def delete_collection(self, name: str) -> None:
        self._call(self._stub.DeleteCollection, pb.DeleteCollectionRequest(name=name))

    @staticmethod
    def _info(m: pb.CollectionInfo) -> CollectionInfo:
        cfg = convert.config_from_proto(m.dimension, m.distance, m.quantization, m.index,
                                        m.hnsw if m.HasField("hnsw") else None)
        shards = [ShardReplica(s.shard_id, s.node, s.available, s.error, s.points_count, s.ram_bytes,
                               s.disk_bytes, s.originals_read, s.searches) for s in m.shards]
        return CollectionInfo(m.name, cfg, m.shard_number, m.replication_factor, _STATUS_NAMES.get(m.status, "?"),
                              m.points_count, shards)

    # ------------------------------------------------------------------ points

    def _upsert_request(self, collection, ids, vectors, payloads) -> pb.UpsertRequest:
        x = _vectors(vectors, "vectors")
        ids_msg = _ids_msg(ids)
        n = max(len(ids_msg.num), len(ids_msg.uuid))
        req = pb.UpsertRequest(collection=collection, ids=ids_msg, vectors=convert.vectors_to_proto(x),
                               payloads=_payloads_in(payloads, n))
        size = req.ByteSize()
        if size > self.max_message_bytes:
            raise ResourceExhausted(f"an upsert of {n} points is {size / 2**20:.1f} MiB, over the "
                                    f"{self.max_message_bytes >> 20} MiB message limit: use upsert_many "
                                    "(it splits into batches)")
        return req

    def upsert(self, collection: str, ids, vectors, payloads: list | None = None) -> int:
        """Insert or replace points (atomic validation: a bad batch writes nothing).

        ids: uint64/int array or a list of ints and UUID strings; vectors:
        (n, dim) floats; payloads: n dicts (or None each), or None.
        """
        return self._call(self._stub.Upsert, self._upsert_request(collection, ids, vectors, payloads)).upserted

    def upsert_many(self, collection: str, ids, vectors, payloads: list | None = None, *,
                    batch_size: int = 1024, in_flight: int = 2, progress: bool = False) -> int:
        """Upsert a large load in batches, ``in_flight`` of them on the wire at once.

        Batches are shrunk to stay well under the message limit. Each batch is
        atomic; if one fails the error is raised and the batches before it stay
        written (upserts are idempotent: run the same load again).
        """
        x = np.asarray(vectors, dtype=np.float32)
        ids = ids if isinstance(ids, np.ndarray) else list(ids)
        n = len(ids)
        row_bytes = 4 * x.shape[1] + 64 + (0 if payloads is None else 256)
        batch_size = max(1, min(batch_size, (self.max_message_bytes // 2) // row_bytes))
        done = 0
        bar = None
        if progress:
            import click
            bar = click.progressbar(length=n, label=f"upserting into {collection}", file=None)
            bar.__enter__()
        window: deque = deque()
        try:
            for start in range(0, n, batch_size):
                sl = slice(start, min(n, start + batch_size))
                req = self._upsert_request(collection, ids[sl], x[sl], None if payloads is None else payloads[sl])
                window.append(self._stub.Upsert.future(req, timeout=self.timeout))
                if len(window) >= in_flight:
                    done += self._settle(window.popleft(), bar)
            while window:
                done += self._settle(window.popleft(), bar)
        finally:
            if bar is not None:
                bar.__exit__(None, None, None)
        return done

    def _settle(self, future, bar) -> int:
        try:
            k = future.result().upserted
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None
        if bar is not None:
            bar.update(k)
        return k

    def get(self, collection: str, ids, with_payload: bool = True, with_vector: bool = False) -> Records:
        """Points by id: the found ones, each once, in request order."""
        req = pb.GetPointsRequest(collection=collection, ids=_ids_msg(ids), with_payload=with_payload,
                                  with_vector=with_vector)
        r = self._call(self._stub.GetPoints, req)
        return Records(_ids_out(r.ids), _payloads_out(r.payloads) if with_payload else None,
                       convert.vectors_from_proto(r.vectors).copy() if with_vector else None)

    def delete(self, collection: str, ids) -> int:
        """Delete points by id; returns how many existed."""
        req = pb.DeletePointsRequest(collection=collection, ids=_ids_msg(ids))
        return self._call(self._stub.DeletePoints, req).deleted

    def count(self, collection: str) -> int:
        return self._call(self._stub.Count, pb.CountRequest(collection=collection)).count

    # ------------------------------------------------------------------ search

    def search(self, collection: str, vector, limit: int = 10, **kw) -> ScoredPoints:
        """Search one query vector (dim,). Keywords as in :meth:`search_batch`."""
        x = np.asarray(vector, dtype=np.float32)
        if x.ndim != 1:
            raise InvalidArgument(f"a query is one vector; got shape {x.shape} (use search_batch)")
        return self.search_batch(collection, x[None, :], limit, **kw)[0]

    def search_batch(self, collection: str, vectors, limit: int = 10, *, offset: int = 0,
                     score_threshold: float | None = None, with_payload: bool = False,
                     with_vector: bool = False, oversampling: float = 1.0, rescore: bool = True,
                     ignore: bool = False, exact: bool = False, nprobe: int | None = None,
                     hnsw_ef: int | None = None, allow_partial: bool = False,
                     timeout: float | None = None) -> list[ScoredPoints]:
        """Search m query vectors (m, dim) in one call; one ScoredPoints per query.

        oversampling / rescore / ignore: Qdrant's quantization search params;
        nprobe (alias hnsw_ef): inverted lists probed; exact: brute force on
        the originals. allow_partial: answer from the shards that answered.
        """
        if nprobe is not None and hnsw_ef is not None and nprobe != hnsw_ef:
            raise InvalidArgument("nprobe and its alias hnsw_ef disagree")
        effort = nprobe if nprobe is not None else hnsw_ef
        if not (isinstance(limit, (int, np.integer)) and not isinstance(limit, bool)) or limit < 1:
            raise InvalidArgument(f"limit must be an integer >= 1, got {limit!r}")
        if not isinstance(oversampling, (int, float)) or not math.isfinite(oversampling):
            raise InvalidArgument(f"oversampling must be a finite number, got {oversampling!r}")
        spec = convert.SearchSpec(limit=int(limit), offset=int(offset), score_threshold=score_threshold,
                                  with_payload=with_payload, with_vector=with_vector,
                                  oversampling=float(oversampling), rescore=rescore, ignore=ignore, exact=exact,
                                  effort=effort, allow_partial=allow_partial)
        req = convert.search_request_to_proto(collection, _vectors(vectors, "queries"), spec)
        timeout = self.timeout if timeout is None else timeout
        ss, r = self._search_stream, None
        if ss is not None and not ss.unsupported:
            try:
                r = ss.search(req, timeout)
            except QuiverError:
                if not ss.unsupported:  # else an older coordinator: ask it the unary way
                    raise
        if r is None:
            r = self._call(self._stub.Search, req, timeout)
        out = []
        for res in r.results:
            out.append(ScoredPoints(
                _ids_out(res.ids), np.array(res.scores, np.float32),
                _payloads_out(res.payloads) if with_payload else None,
                convert.vectors_from_proto(res.vectors).copy() if with_vector else None,
                r.shards_answered, r.shards_total, tuple(r.missing_shards)))
        return out
