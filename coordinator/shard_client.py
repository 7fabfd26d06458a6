"""The remote side of the shard interface: a shard on a shard node, over gRPC (asyncio).

Every call carries its own deadline, and a failed call is mapped through the
error table with the shard and node named in the message ("shard 1 of 'docs'
on 10.0.0.7:6335: unreachable: ...").

Searches are coalesced: while ``MAX_IN_FLIGHT`` searches to a replica are on
the wire, further searches with the same parameters wait and leave together
as one batched call (the shard API takes many query rows; the engine searches
them in one pass). A lone query never waits; under load the per-call cost of
gRPC, which on a small machine exceeds the engine's own search, is paid once
per batch instead of once per query.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque

import grpc
import numpy as np

from coordinator.errors import error_from_rpc
from coordinator.search_stream import NodeSearchStreams
from quiver import convert, security
from quiver.serving import message_options
from quiver.v1 import shard_node_pb2 as pb
from quiver.v1 import shard_node_pb2_grpc as pb_grpc
from shard.errors import QuiverError
from shard.node import ShardPoints, ShardSearch

#: Searches to one replica on the wire at once before new ones queue and coalesce
#: (1 measured best at concurrency 32 on 2 cores: ~800 q/s against ~700 with 2).
MAX_IN_FLIGHT = 1
#: Most query rows in one coalesced call.
MAX_BATCH_ROWS = 64
#: Deadline of a transfer's or snapshot's stream (large shards take minutes).
STREAM_TIMEOUT = 6 * 3600.0


async def _call(method, request, timeout: float, where: str, **kw):
    try:
        return await method(request, timeout=timeout, **kw)
    except grpc.RpcError as e:  # grpc.aio.AioRpcError
        raise error_from_rpc(e, where) from None


class NodePool:
    """One aio channel per shard node, shared by all the shards on it.

    Create and use it inside the coordinator's event loop (aio channels belong
    to the loop they were first used in).
    """

    def __init__(self, max_message_bytes: int, timeout: float, write_timeout: float | None = None):
        self.timeout = timeout
        self.write_timeout = timeout if write_timeout is None else write_timeout
        self._options = message_options(max_message_bytes) + [
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            # a restarted node is reachable again within a second (gRPC's default backoff grows to 120 s)
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1_000),
        ]
        self._stubs: dict[str, pb_grpc.ShardNodeStub] = {}
        self._searchers: dict[str, NodeSearchStreams] = {}
        self._channels: list[grpc.aio.Channel] = []
        self._metadata: tuple[tuple[str, str], ...] | None = None
        self._credentials: grpc.ChannelCredentials | None = None

    def set_tls(self, root_certificates: bytes, server_name: str | None = None,
                identity: tuple[bytes, bytes] | None = None) -> None:
        """Call shard nodes over TLS, trusting the CA certificate(s) ``root_certificates``
        (PEM); ``server_name``: the name checked against every node's certificate
        instead of the host it is reached by; ``identity``: (certificate chain,
        private key) PEM presented to the nodes (mutual TLS). Set it before the first call."""
        if self._stubs:
            raise RuntimeError("set the shard-call TLS before the first shard call")
        self._credentials = security.channel_credentials(root_certificates, identity)
        if server_name:
            self._options = self._options + [("grpc.ssl_target_name_override", server_name)]

    def set_metadata(self, metadata: tuple[tuple[str, str], ...] | None) -> None:
        """Metadata sent on every call (the cluster secret); set it before the first call."""
        if self._stubs:
            raise RuntimeError("set the shard-call metadata before the first shard call")
        self._metadata = metadata or None

    def stub(self, address: str) -> pb_grpc.ShardNodeStub:
        stub = self._stubs.get(address)
        if stub is None:
            channel = (grpc.aio.secure_channel(address, self._credentials, options=self._options)
                       if self._credentials is not None else grpc.aio.insecure_channel(address, options=self._options))
            self._channels.append(channel)
            stub = pb_grpc.ShardNodeStub(channel)
            if self._metadata:
                stub = _WithMetadata(stub, self._metadata)
            self._stubs[address] = stub
        return stub

    def node(self, address: str) -> "NodeClient":
        return NodeClient(self.stub(address), address, self.write_timeout)

    def searcher(self, address: str) -> NodeSearchStreams:
        """The node's search streams (shared by its shards)."""
        ss = self._searchers.get(address)
        if ss is None:
            ss = self._searchers[address] = NodeSearchStreams(self.stub(address), address)
        return ss

    def shard(self, address: str, collection: str, shard_id: int) -> "RemoteShard":
        return RemoteShard(self.stub(address), address, collection, shard_id, self.timeout, self.write_timeout,
                           self.searcher(address))

    async def close(self) -> None:
        for ss in self._searchers.values():
            await ss.close()
        self._searchers.clear()
        for c in self._channels:
            await c.close()
        self._channels.clear()
        self._stubs.clear()


class _WithMetadata:
    """A stub whose every method sends ``metadata`` (cheaper than a channel interceptor)."""

    def __init__(self, stub: pb_grpc.ShardNodeStub, metadata: tuple[tuple[str, str], ...]):
        for name, method in vars(stub).items():
            setattr(self, name, functools.partial(method, metadata=metadata))


class NodeClient:
    """Shard lifecycle calls on one node."""

    def __init__(self, stub: pb_grpc.ShardNodeStub, address: str, timeout: float):
        self.stub, self.address, self.timeout = stub, address, timeout

    async def create_shard(self, collection: str, shard_id: int, config_json: str, exist_ok: bool) -> bool:
        req = pb.CreateShardRequest(shard=pb.ShardRef(collection=collection, shard_id=shard_id),
                                    config_json=config_json, exist_ok=exist_ok)
        r = await _call(self.stub.CreateShard, req, self.timeout,
                        f"creating shard {shard_id} of {collection!r} on {self.address}")
        return r.created

    async def drop_shard(self, collection: str, shard_id: int) -> bool:
        req = pb.ShardRef(collection=collection, shard_id=shard_id)
        r = await _call(self.stub.DropShard, req, self.timeout,
                        f"dropping shard {shard_id} of {collection!r} on {self.address}")
        return r.dropped


    async def list_shards(self, timeout: float | None = None, wait_for_ready: bool = False) -> list[dict]:
        """The node's shards and their stats. ``wait_for_ready``: wait (within the timeout) for
        the channel to connect instead of failing at once on a node that was down a moment ago."""
        r = await _call(self.stub.ListShards, pb.ListShardsRequest(), timeout or self.timeout,
                        f"listing the shards of {self.address}", wait_for_ready=wait_for_ready)
        return [dict(convert.stats_from_proto(s), collection=s.shard.collection, shard_id=s.shard.shard_id)
                for s in r.shards]

    # ---------------------------------------------------- transfers and snapshots

    async def begin_receive(self, collection: str, shard_id: int, config_json: str, token: str,
                            replace: bool = True) -> None:
        req = pb.BeginReceiveRequest(shard=pb.ShardRef(collection=collection, shard_id=shard_id),
                                     config_json=config_json, token=token, replace=replace)
        await _call(self.stub.BeginReceive, req, self.timeout,
                    f"preparing {self.address} to receive shard {shard_id} of {collection!r}")

    async def import_points(self, collection: str, shard_id: int, token: str, points: pb.ShardPoints) -> int:
        req = pb.ImportPointsRequest(shard=pb.ShardRef(collection=collection, shard_id=shard_id), token=token,
                                     points=points)
        r = await _call(self.stub.ImportPoints, req, self.timeout,
                        f"copying points of shard {shard_id} of {collection!r} to {self.address}")
        return r.imported + r.skipped

    async def end_receive(self, collection: str, shard_id: int, token: str) -> int:
        req = pb.EndReceiveRequest(shard=pb.ShardRef(collection=collection, shard_id=shard_id), token=token)
        r = await _call(self.stub.EndReceive, req, self.timeout,
                        f"finishing the copy of shard {shard_id} of {collection!r} to {self.address}")
        return r.points

    async def export(self, collection: str, shard_id: int, batch_size: int = 1024,
                     timeout: float = STREAM_TIMEOUT):
        """The shard's points as a stream of pb.ShardPoints batches (one consistent read)."""
        req = pb.ExportShardRequest(shard=pb.ShardRef(collection=collection, shard_id=shard_id),
                                    batch_size=batch_size)
        async for msg in _stream(self.stub.ExportShard(req, timeout=timeout),
                                 f"exporting shard {shard_id} of {collection!r} from {self.address}"):
            yield msg

    async def snapshot(self, collection: str, shard_id: int, timeout: float = STREAM_TIMEOUT):
        """A copy of the shard's LMDB environment as a stream of pb.SnapshotChunk."""
        req = pb.ShardRef(collection=collection, shard_id=shard_id)
        async for msg in _stream(self.stub.SnapshotShard(req, timeout=timeout),
                                 f"snapshotting shard {shard_id} of {collection!r} on {self.address}"):
            yield msg

    async def restore(self, chunks, collection: str, shard_id: int, timeout: float = STREAM_TIMEOUT) -> int:
        """Send a snapshot stream (an async iterator of pb.SnapshotChunk); returns the point count."""
        r = await _call(self.stub.RestoreShard, chunks, timeout,
                        f"restoring shard {shard_id} of {collection!r} on {self.address}")
        return r.points


async def _stream(call, where: str):
    try:
        async for msg in call:
            yield msg
    except grpc.RpcError as e:
        raise error_from_rpc(e, where) from None
    finally:
        call.cancel()


class RemoteShard:
    """One replica of one shard on a shard node (implements shard.node.Shard)."""

    __slots__ = ("stub", "node", "collection", "shard_id", "ref", "name", "timeout", "write_timeout", "_queue",
                 "_in_flight", "_tasks", "searcher")

    def __init__(self, stub: pb_grpc.ShardNodeStub, node: str, collection: str, shard_id: int, timeout: float,
                 write_timeout: float, searcher: NodeSearchStreams | None = None):
        self.stub, self.node, self.collection, self.shard_id = stub, node, collection, shard_id
        self.searcher = searcher  # None: unary Search calls
        self.ref = pb.ShardRef(collection=collection, shard_id=shard_id)
        self.name = f"shard {shard_id} of {collection!r} on {node}"
        self.timeout, self.write_timeout = timeout, write_timeout
        self._queue: deque = deque()  # (params, queries, deadline, future) waiting to be sent
        self._in_flight = 0
        self._tasks: set[asyncio.Task] = set()  # batches on the wire (the loop holds tasks weakly)

    @property
    def load(self) -> int:
        """Searches on the wire or waiting to be sent (reads prefer the least loaded replica)."""
        return self._in_flight + len(self._queue)

    def _t(self, timeout: float | None) -> float:
        """A read's deadline: the caller's remaining time, capped by the shard timeout."""
        return self.timeout if timeout is None else min(timeout, self.timeout)

    def _w(self, timeout: float | None) -> float:
        """A write's deadline: writes may retrain an index, so they get the (longer) write timeout."""
        return self.write_timeout if timeout is None else min(timeout, self.write_timeout)

    async def upsert(self, ids: np.ndarray, vectors: np.ndarray, payloads: list[bytes] | None,
                     timeout: float | None = None) -> int:
        req = pb.ShardUpsertRequest(shard=self.ref, ids=convert.ids_to_bytes(ids),
                                    vectors=convert.vectors_to_proto(vectors), payloads=payloads or ())
        return (await _call(self.stub.Upsert, req, self._w(timeout), self.name)).upserted

    async def delete(self, ids: np.ndarray, timeout: float | None = None) -> int:
        req = pb.ShardIdsRequest(shard=self.ref, ids=convert.ids_to_bytes(ids))
        return (await _call(self.stub.Delete, req, self._w(timeout), self.name)).deleted

    async def retrieve(self, ids: np.ndarray, with_payload: bool, with_vector: bool,
                       timeout: float | None = None) -> ShardPoints:
        req = pb.ShardRetrieveRequest(shard=self.ref, ids=convert.ids_to_bytes(ids), with_payload=with_payload,
                                      with_vector=with_vector)
        r = await _call(self.stub.Retrieve, req, self._t(timeout), self.name)
        return convert.shard_points_from_proto(r, with_payload, with_vector)

    async def count(self, timeout: float | None = None) -> int:
        return (await _call(self.stub.Count, self.ref, self._t(timeout), self.name)).count

    async def search(self, queries: np.ndarray, params: ShardSearch,
                     timeout: float | None = None) -> list[ShardPoints]:
        if self._in_flight < MAX_IN_FLIGHT and not self._queue:  # idle: go now
            self._in_flight += 1
            try:
                return await self._search_call(queries, params, self._t(timeout))
            finally:
                self._in_flight -= 1
                self._drain()
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.append((params, queries, loop.time() + self._t(timeout), fut))
        self._drain()
        return await fut

    def _drain(self) -> None:
        """Send queued searches, those with equal parameters together, while a slot is free."""
        while self._queue and self._in_flight < MAX_IN_FLIGHT:
            params = self._queue[0][0]
            batch, rest, rows = [], deque(), 0
            while self._queue:
                item = self._queue.popleft()
                if item[0] == params and (rows == 0 or rows + len(item[1]) <= MAX_BATCH_ROWS):
                    batch.append(item)
                    rows += len(item[1])
                else:
                    rest.append(item)
            self._queue = rest
            self._in_flight += 1
            task = asyncio.ensure_future(self._send_batch(params, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send_batch(self, params: ShardSearch, batch: list) -> None:
        try:
            live = [b for b in batch if not b[3].done()]  # callers that gave up are skipped
            if not live:
                return
            timeout = max(b[2] for b in live) - asyncio.get_running_loop().time()
            queries = live[0][1] if len(live) == 1 else np.concatenate([b[1] for b in live])
            try:
                results = await self._search_call(queries, params, min(max(timeout, 1e-3), self.timeout))
            except Exception as e:  # noqa: BLE001 - every waiter must hear of it, whatever it is
                for b in live:
                    if not b[3].done():
                        b[3].set_exception(e)
                return
            start = 0
            for _, q, _, fut in live:
                if not fut.done():
                    fut.set_result(results[start:start + len(q)])
                start += len(q)
        finally:
            self._in_flight -= 1
            self._drain()

    async def _search_call(self, queries: np.ndarray, params: ShardSearch, timeout: float) -> list[ShardPoints]:
        req = convert.shard_search_to_proto(self.ref, queries, params)
        ss, r = self.searcher, None
        if ss is not None and not ss.unsupported:
            try:
                r = await ss.search(req, timeout, self.name)
            except QuiverError:
                if not ss.unsupported:  # else the node is too old for the stream: ask it the unary way
                    raise
        if r is None:
            r = await _call(self.stub.Search, req, timeout, self.name)
        return [convert.shard_points_from_proto(p, params.with_payload, params.with_vector) for p in r.results]

    async def stats(self, timeout: float | None = None) -> dict:
        return convert.stats_from_proto(await _call(self.stub.Stats, self.ref, self._t(timeout), self.name))
