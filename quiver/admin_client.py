"""A typed client of the operators' API (``QuiverAdmin``, protos/quiver/v1/admin.proto).

    from quiver.admin_client import AdminClient
    with AdminClient("localhost:6334", api_key=key) as a:
        a.cluster_status().nodes
        op = a.move_shard("docs", 0, from_node="10.0.0.1:6335", to_node="10.0.0.2:6335")
        op = a.wait_operation(op.id, timeout=600)
        a.snapshot_to_file("docs", "docs.tar")
        a.restore_from_file("docs.tar", restore_as="docs_copy")

Collections are created, listed, described and dropped through the public
API (``Quiver``), over the same channel. Errors come back as the
``shard.errors`` classes (NotFound, FailedPrecondition, Unavailable, ...)
carrying the server's message, as with :class:`quiver.client.Client`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import grpc

from coordinator.errors import error_from_rpc
from quiver import convert, snapshot_file
from quiver.client import open_channel
from quiver.serving import DEFAULT_MAX_MESSAGE_MB
from quiver.v1 import admin_pb2 as apb
from quiver.v1 import admin_pb2_grpc as apb_grpc
from quiver.v1 import quiver_pb2 as pb
from quiver.v1 import quiver_pb2_grpc as pb_grpc
from shard.errors import DeadlineExceeded, InvalidArgument

_STATUS_NAMES = {pb.COLLECTION_STATUS_GREEN: "green", pb.COLLECTION_STATUS_YELLOW: "yellow",
                 pb.COLLECTION_STATUS_RED: "red"}

#: Largest data chunk sent in a Restore stream.
RESTORE_CHUNK_BYTES = 1 << 20


# ------------------------------------------------------------------ values


@dataclass
class NodeInfo:
    address: str
    state: str  # active | draining
    healthy: bool
    error: str
    shards: int
    points: int
    ram_bytes: int
    disk_bytes: int


@dataclass
class Transfer:
    collection: str
    shard_id: int
    from_node: str
    to_node: str
    move: bool
    state: str  # pending | copying | done | failed
    points_copied: int
    points_total: int
    error: str


@dataclass
class Operation:
    id: str
    kind: str  # move | replicate | rebalance | remove-node | catch-up
    state: str  # running | done | failed
    error: str
    description: str
    transfers: list[Transfer] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.state != "running"

    @property
    def points_copied(self) -> int:
        return sum(t.points_copied for t in self.transfers)

    @property
    def points_total(self) -> int:
        return sum(t.points_total for t in self.transfers)


@dataclass
class Replica:
    shard_id: int
    node: str
    state: str  # active | receiving | dead
    available: bool
    error: str
    points: int
    ram_bytes: int
    disk_bytes: int


@dataclass
class CollectionDetails:
    """A collection as CollectionInfo reports it: resolved config and one entry per replica."""

    name: str
    dimension: int
    distance: str
    quantization: dict
    index: dict
    shard_number: int
    replication_factor: int
    write_consistency: int
    status: str  # green | yellow | red
    points: int
    replicas: list[Replica] = field(default_factory=list)

    def placement(self) -> dict[int, list[Replica]]:
        """shard id -> its replicas, shards in order."""
        out: dict[int, list[Replica]] = {}
        for r in sorted(self.replicas, key=lambda r: (r.shard_id, r.node)):
            out.setdefault(r.shard_id, []).append(r)
        return out


@dataclass
class ClusterStatus:
    nodes: list[NodeInfo]
    collections: list[CollectionDetails]
    operations: list[Operation]
    metadata_backend: str
    coordinators: list[str]


# ------------------------------------------------------------ conversions


def _node(m: apb.NodeInfo) -> NodeInfo:
    return NodeInfo(m.address, m.state, m.healthy, m.error, m.shards, m.points, m.ram_bytes, m.disk_bytes)


def _operation(m: apb.Operation) -> Operation:
    transfers = [Transfer(t.collection, t.shard_id, t.from_node, t.to_node, t.move, t.state, t.points_copied,
                          t.points_total, t.error) for t in m.transfers]
    return Operation(m.id, m.kind, m.state, m.error, m.description, transfers)


def collection_details(m: pb.CollectionInfo) -> CollectionDetails:
    q, ix = m.quantization, m.index
    quant = {"kind": convert.enum_to_str("kind", q.kind)}
    if quant["kind"] == "scalar" or q.HasField("quantile"):
        quant["quantile"] = q.quantile
    for f in ("encoding", "query_encoding", "compression"):
        s = convert.enum_to_str(f, getattr(q, f))
        if s is not None:
            quant[f] = s
    if q.HasField("seed"):
        quant["seed"] = q.seed
    index = {f.name: getattr(ix, f.name) for f in ix.DESCRIPTOR.fields if ix.HasField(f.name)}
    if m.HasField("hnsw"):  # candidates from an HNSW graph over the codes
        index["hnsw"] = {f.name: getattr(m.hnsw, f.name) for f in m.hnsw.DESCRIPTOR.fields}
    replicas = [Replica(s.shard_id, s.node, s.state or ("active" if s.available else "?"), s.available, s.error,
                        s.points_count, s.ram_bytes, s.disk_bytes) for s in m.shards]
    return CollectionDetails(m.name, m.dimension, convert.enum_to_str("distance", m.distance) or "cosine", quant,
                             index, m.shard_number, m.replication_factor, m.write_consistency,
                             _STATUS_NAMES.get(m.status, "?"), m.points_count, replicas)


# ------------------------------------------------------------------ client


class AdminClient:
    """A connection to a coordinator's QuiverAdmin service (and its public API, for collections).

    timeout: default deadline of each call, in seconds (None = none); a
    snapshot or restore stream gets it as a whole.
    api_key: an admin key, sent on every call as ``authorization: Bearer <key>``.
    tls / ca_cert / tls_server_name / tls_cert / tls_key: as :class:`quiver.client.Client`.
    """

    def __init__(self, address: str = "localhost:6334", *, timeout: float | None = 600.0,
                 max_message_mb: int = DEFAULT_MAX_MESSAGE_MB, channel: grpc.Channel | None = None,
                 api_key: str | None = None, tls: bool = False, ca_cert: str | Path | None = None,
                 tls_server_name: str | None = None, tls_cert: str | Path | None = None,
                 tls_key: str | Path | None = None):
        self.address = address
        self.timeout = timeout
        self._channel = channel or open_channel(address, max_message_bytes=max_message_mb << 20, tls=tls,
                                                ca_cert=ca_cert, tls_server_name=tls_server_name,
                                                tls_cert=tls_cert, tls_key=tls_key)
        # Metadata on each call rather than an interceptor: it covers the streaming calls too.
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else None
        self._admin = apb_grpc.QuiverAdminStub(self._channel)
        self._public = pb_grpc.QuiverStub(self._channel)

    def __repr__(self) -> str:  # never the key
        return f"AdminClient({self.address!r})"

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "AdminClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request, timeout: float | None = None):
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None

    # ---------------------------------------------------------------- cluster

    def cluster_status(self) -> ClusterStatus:
        r = self._call(self._admin.ClusterStatus, apb.ClusterStatusRequest())
        return ClusterStatus([_node(n) for n in r.nodes], [collection_details(c) for c in r.collections],
                             [_operation(o) for o in r.operations], r.metadata_backend, list(r.coordinators))

    def list_nodes(self) -> list[NodeInfo]:
        return [_node(n) for n in self._call(self._admin.ListNodes, apb.ListNodesRequest()).nodes]

    def add_node(self, address: str, allow_unreachable: bool = False) -> NodeInfo:
        return _node(self._call(self._admin.AddNode, apb.AddNodeRequest(address=address,
                                                                         allow_unreachable=allow_unreachable)))

    def remove_node(self, address: str) -> Operation:
        return _operation(self._call(self._admin.RemoveNode, apb.RemoveNodeRequest(address=address)))

    # ----------------------------------------------------------------- shards

    def move_shard(self, collection: str, shard_id: int, from_node: str, to_node: str) -> Operation:
        req = apb.MoveShardRequest(collection=collection, shard_id=shard_id, from_node=from_node, to_node=to_node)
        return _operation(self._call(self._admin.MoveShard, req))

    def replicate_shard(self, collection: str, shard_id: int, to_node: str, from_node: str = "") -> Operation:
        req = apb.ReplicateShardRequest(collection=collection, shard_id=shard_id, to_node=to_node,
                                        from_node=from_node or "")
        return _operation(self._call(self._admin.ReplicateShard, req))

    def drop_replica(self, collection: str, shard_id: int, node: str) -> None:
        self._call(self._admin.DropReplica, apb.DropReplicaRequest(collection=collection, shard_id=shard_id,
                                                                   node=node))

    def rebalance(self, collection: str = "") -> Operation:
        return _operation(self._call(self._admin.Rebalance, apb.RebalanceRequest(collection=collection or "")))

    def get_operation(self, op_id: str, timeout: float | None = None) -> Operation:
        return _operation(self._call(self._admin.GetOperation, apb.GetOperationRequest(id=op_id), timeout))

    def list_operations(self) -> list[Operation]:
        return [_operation(o) for o in self._call(self._admin.ListOperations, apb.ListOperationsRequest()).operations]

    def wait_operation(self, op_id: str, timeout: float = 600.0, interval: float = 0.2,
                       on_progress: Callable[[Operation], None] | None = None) -> Operation:
        """Poll GetOperation until the operation is done or failed; DeadlineExceeded after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded(f"operation {op_id} still running after {timeout:g}s "
                                       f"(see `quiver admin operations show {op_id}`)")
            op = self.get_operation(op_id, timeout=min(left, self.timeout or left))
            if on_progress is not None:
                on_progress(op)
            if op.finished:
                return op
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))

    # ------------------------------------------------------------ collections

    def create_collection(self, name: str, dimension: int, distance: str = "cosine", *,
                          quantization: dict | None = None, index: dict | None = None, shard_number: int = 0,
                          replication_factor: int = 0, write_consistency: int = 0,
                          hnsw: dict | None = None) -> CollectionDetails:
        """Create a collection through the public API. quantization: ``kind`` plus any of quantile,
        encoding, query_encoding, compression, seed; index: any IndexConfig field. Fields left out
        take the engine's defaults."""
        q = dict(quantization or {})
        try:
            qmsg = pb.QuantizationConfig(**{f: convert.str_to_enum(f, v) if f in convert._ENUMS else v
                                            for f, v in q.items() if v is not None})
            imsg = pb.IndexConfig(**{f: v for f, v in (index or {}).items() if v is not None})
            hmsg = None if hnsw is None else pb.HnswConfig(**{f: v for f, v in hnsw.items() if v is not None})
            dist = convert.str_to_enum("distance", distance)
        except (ValueError, TypeError) as e:
            raise InvalidArgument(str(e)) from None
        req = pb.CreateCollectionRequest(name=name, dimension=dimension, distance=dist, quantization=qmsg,
                                         index=imsg, shard_number=shard_number,
                                         replication_factor=replication_factor,
                                         write_consistency=write_consistency, hnsw=hmsg)
        return collection_details(self._call(self._public.CreateCollection, req))

    def list_collections(self) -> list[str]:
        return list(self._call(self._public.ListCollections, pb.ListCollectionsRequest()).names)

    def get_collection(self, name: str) -> CollectionDetails:
        return collection_details(self._call(self._public.GetCollection, pb.GetCollectionRequest(name=name)))

    def delete_collection(self, name: str) -> None:
        self._call(self._public.DeleteCollection, pb.DeleteCollectionRequest(name=name))

    # -------------------------------------------------------------- snapshots

    def snapshot_parts(self, collection: str, shard_id: int | None = None) -> Iterator[apb.SnapshotPart]:
        """The raw Snapshot stream (errors mapped as for every call)."""
        req = apb.SnapshotRequest(collection=collection)
        if shard_id is not None:
            req.shard_id = shard_id
        try:
            yield from self._admin.Snapshot(req, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None

    def snapshot_to_file(self, collection: str, out: str | Path, shard_id: int | None = None,
                         on_bytes: Callable[[int], None] | None = None) -> snapshot_file.Manifest:
        """Download a snapshot into the tar file ``out`` (see :mod:`quiver.snapshot_file`), checking
        each shard's SHA-256 as it arrives; nothing is left at ``out`` on failure."""
        return snapshot_file.write(self.snapshot_parts(collection, shard_id), out, on_bytes=on_bytes)

    def restore_from_file(self, path: str | Path, restore_as: str = "",
                          on_bytes: Callable[[int], None] | None = None) -> CollectionDetails:
        """Verify the tar file ``path`` locally (every checksum), then stream it to Restore."""
        manifest = snapshot_file.verify(path)
        failed: list[BaseException] = []  # an error raised inside the request stream only cancels the call

        def parts() -> Iterator[apb.SnapshotPart]:
            try:
                yield apb.SnapshotPart(header=manifest.header(restore_as))
                for f in manifest.files:
                    h = hashlib.sha256()
                    for data in snapshot_file.iter_member(path, f.name, RESTORE_CHUNK_BYTES):
                        h.update(data)
                        yield apb.SnapshotPart(chunk=apb.SnapshotData(shard_id=f.shard_id, data=data))
                        if on_bytes is not None:
                            on_bytes(len(data))
                    if h.hexdigest() != f.sha256:  # the file changed since verify()
                        raise snapshot_file.SnapshotFileError(f"{path}: {f.name} changed while it was being sent")
                    yield apb.SnapshotPart(shard_end=apb.SnapshotShardEnd(shard_id=f.shard_id, size=f.size,
                                                                          sha256=f.sha256, points=f.points))
            except Exception as e:
                failed.append(e)
                raise

        try:
            return collection_details(self._admin.Restore(parts(), timeout=self.timeout, metadata=self._metadata))
        except grpc.RpcError as e:
            if failed:
                raise failed[0] from None
            raise error_from_rpc(e) from None
