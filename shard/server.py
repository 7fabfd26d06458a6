"""The shard node's gRPC server: a thin ShardNode servicer over ``shard.node``.

    create_server(addr, node) -> (server, port)   # started; tests use port 0
    serve(...)                                    # + metrics, SIGTERM, port file

Each handler converts the request (``quiver.convert``), calls the node's
LocalShard, and converts the answer back; errors leave through the error
table (``quiver.serving.rpc``). It is a thread-pool server: searches run in
the handler threads, in parallel (the engine's kernels release the GIL and
the engine lets searches run beside writes).
"""

from __future__ import annotations

import logging
import os
import threading
import time

import grpc
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from quiver import convert, security
from quiver.serving import (DEFAULT_MAX_MESSAGE_MB, RpcMetrics, add_standard_services_sync, bind, new_health,
                            new_thread_server, rpc, run_until_signal_sync, start_health_server_sync,
                            start_metrics, stream_status, undecodable, write_port_file)
from quiver.v1 import shard_node_pb2 as pb
from quiver.v1 import shard_node_pb2_grpc as pb_grpc
from shard.errors import InvalidArgument
from shard.node import ShardNode

log = logging.getLogger("quiver.shard")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ShardNode"].full_name


def _until_cancelled(requests):
    """A stream's requests until the client closes it or it is cancelled (the
    iterator then raises RpcError: not an error of this node's)."""
    try:
        yield from requests
    except grpc.RpcError:
        return


class _Stream:
    __slots__ = ("context", "busy", "ending")

    def __init__(self, context):
        self.context = context
        self.busy = threading.Lock()
        self.ending = False


class Streams:
    """The open search streams, so a stopping node can end them: each one after
    the request it is answering (an idle stream waits in a read that only
    cancelling ends; the server's stop would otherwise wait out its grace)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._open: set[_Stream] = set()

    def open(self, context) -> _Stream:
        stream = _Stream(context)
        with self._lock:
            self._open.add(stream)
        return stream

    def close(self, stream: _Stream) -> None:
        with self._lock:
            self._open.discard(stream)

    def end_all(self) -> None:
        with self._lock:
            streams = list(self._open)
        for stream in streams:
            with stream.busy:
                stream.ending = True
                stream.context.cancel()


class ShardNodeServicer(pb_grpc.ShardNodeServicer):
    def __init__(self, node: ShardNode, metrics: RpcMetrics, streams: Streams | None = None):
        self.node = node
        self.metrics = metrics
        self.streams = streams or Streams()

    def _shard(self, ref: pb.ShardRef):
        return self.node.get(ref.collection, ref.shard_id)

    @rpc
    def CreateShard(self, request, context):
        config = convert.config_from_json(request.config_json)
        created = self.node.create(request.shard.collection, request.shard.shard_id, config, request.exist_ok)
        return pb.CreateShardResponse(created=created)

    @rpc
    def DropShard(self, request, context):
        return pb.DropShardResponse(dropped=self.node.drop(request.collection, request.shard_id))

    @rpc
    def ListShards(self, request, context):
        return pb.ListShardsResponse(shards=[
            convert.stats_to_proto(pb.ShardRef(collection=s.collection, shard_id=s.shard_id), s.engine.stats())
            for s in self.node.shards()])

    @rpc
    def Upsert(self, request, context):
        ids = convert.ids_from_bytes(request.ids)
        vectors = convert.vectors_from_proto(request.vectors)
        n = self._shard(request.shard).upsert_now(ids, vectors, list(request.payloads))
        return pb.ShardUpsertResponse(upserted=n)

    @rpc
    def Delete(self, request, context):
        n = self._shard(request.shard).delete_now(convert.ids_from_bytes(request.ids))
        return pb.ShardDeleteResponse(deleted=n)

    @rpc
    def Retrieve(self, request, context):
        points = self._shard(request.shard).retrieve_now(
            convert.ids_from_bytes(request.ids), request.with_payload, request.with_vector)
        return convert.shard_points_to_proto(points)

    @rpc
    def Count(self, request, context):
        return pb.ShardCountResponse(count=self._shard(request).engine.count())

    @rpc
    def Search(self, request, context):
        return self._search(request)

    def _search(self, request: pb.ShardSearchRequest) -> pb.ShardSearchResponse:
        queries = convert.vectors_from_proto(request.queries, "queries")
        hits = self._shard(request.shard).search_now(queries, convert.shard_search_from_proto(request))
        return pb.ShardSearchResponse(results=[convert.shard_points_to_proto(h) for h in hits])

    @rpc
    def SearchStream(self, request_iterator, context):
        """Searches in request order on one stream, each answered with its result or
        its status; counted and timed as ``Search`` calls."""
        stream = self.streams.open(context)
        try:
            for msg in _until_cancelled(request_iterator):
                with stream.busy:  # held until the answer is handed over (see Streams.end_all)
                    if stream.ending:
                        return
                    t0 = time.perf_counter()
                    try:
                        bad = undecodable(msg)
                        if bad is not None:
                            raise bad
                        answer = pb.ShardSearchStreamResponse(tag=msg.tag, result=self._search(msg.search))
                        code = "OK"
                    except Exception as exc:  # noqa: BLE001 - every error becomes this request's status
                        status, code = stream_status("Search", exc)
                        answer = pb.ShardSearchStreamResponse(tag=getattr(msg, "tag", 0), status=status)
                    self.metrics.observe("Search", code, time.perf_counter() - t0)
                    yield answer
        finally:
            self.streams.close(stream)

    @rpc
    def Stats(self, request, context):
        return convert.stats_to_proto(request, self._shard(request).engine.stats())

    # -- shard transfer -------------------------------------------------
    @rpc
    def ExportShard(self, request, context):
        for points in self.node.export_batches(request.shard.collection, request.shard.shard_id,
                                               request.batch_size):
            yield convert.shard_points_to_proto(points)

    @rpc
    def BeginReceive(self, request, context):
        config = convert.config_from_json(request.config_json)
        self.node.begin_receive(request.shard.collection, request.shard.shard_id, config, request.token,
                                request.replace)
        return pb.BeginReceiveResponse()

    @rpc
    def ImportPoints(self, request, context):
        p = request.points
        points = convert.shard_points_from_proto(p, with_payload=True, with_vector=True)
        imported, skipped = self.node.import_points(request.shard.collection, request.shard.shard_id,
                                                    request.token, points)
        return pb.ImportPointsResponse(imported=imported, skipped=skipped)

    @rpc
    def EndReceive(self, request, context):
        n = self.node.end_receive(request.shard.collection, request.shard.shard_id, request.token)
        return pb.EndReceiveResponse(points=n)

    # -- snapshots --------------------------------------------------------
    @rpc
    def SnapshotShard(self, request, context):
        snap = self.node.snapshot(request.collection, request.shard_id)
        # the generator may never be resumed once the client goes away: the
        # callback removes the temp file then (unlinking an open file is fine)
        context.add_callback(snap.close)
        with snap:
            first = True
            for data, sha256 in snap.chunks():
                chunk = pb.SnapshotChunk(data=data)
                if first:
                    chunk.shard.CopyFrom(request)
                    chunk.config_json = convert.config_to_json(snap.config)
                    chunk.points = snap.points
                    first = False
                if sha256 is not None:
                    chunk.sha256 = sha256
                    chunk.size = snap.size
                yield chunk

    @rpc
    def RestoreShard(self, request_iterator, context):
        first = next(request_iterator, None)
        if first is None:
            raise InvalidArgument("empty snapshot stream: the first chunk must carry shard and config_json")
        if not first.HasField("shard") or not first.config_json:
            raise InvalidArgument("the first snapshot chunk must carry shard and config_json")
        config = convert.config_from_json(first.config_json)
        with self.node.restore(first.shard.collection, first.shard.shard_id, config) as restore:
            last = first
            restore.write(first.data)
            for chunk in request_iterator:
                restore.write(chunk.data)
                last = chunk
            n = restore.finish(last.size, last.sha256)
        return pb.RestoreShardResponse(points=n)


class ShardCollector:
    """Per-shard gauges and counters, read from each engine's stats() at scrape time.

    Originals read per search = rate(quiver_shard_originals_read_total) /
    rate(quiver_shard_searches_total).
    """

    def __init__(self, node: ShardNode):
        self.node = node

    def collect(self):
        labels = ["collection", "shard"]
        fams = {
            "points": GaugeMetricFamily("quiver_shard_points", "Points in the shard", labels=labels),
            "ram_bytes": GaugeMetricFamily("quiver_shard_ram_bytes", "RAM held by codes and index", labels=labels),
            "disk_bytes": GaugeMetricFamily("quiver_shard_disk_bytes", "LMDB file size", labels=labels),
            "originals_read": CounterMetricFamily("quiver_shard_originals_read",
                                                  "Original vectors read from LMDB by searches", labels=labels),
            "searches": CounterMetricFamily("quiver_shard_searches", "Queries searched", labels=labels),
        }
        for s in self.node.shards():
            try:
                stats = s.engine.stats()
            except Exception:  # noqa: BLE001 - a shard closing during a scrape
                continue
            for key, fam in fams.items():
                fam.add_metric([s.collection, str(s.shard_id)], stats[key])
        yield from fams.values()


def create_server(address: str, node: ShardNode, *, metrics: RpcMetrics | None = None, health_servicer=None,
                  max_message_mb: int = DEFAULT_MAX_MESSAGE_MB, workers: int = 16,
                  cluster_secret: str | None = None, tls: grpc.ServerCredentials | None = None,
                  streams: Streams | None = None) -> tuple[grpc.Server, int]:
    """Start a ShardNode server for ``node`` on ``address`` (port 0 = any free port).

    ``cluster_secret``: every call but health and reflection must carry it
    (the coordinator sends it); None = no check. ``tls``: serve TLS
    (``security.server_credentials``; the coordinator then needs the CA:
    ``--shard-tls-ca``). Returns ``(server, port)``.
    The caller owns ``node`` and closes it after stopping the server; pass
    ``health_servicer`` to flip it on shutdown, and ``streams`` to end the
    search streams on shutdown (``Streams.end_all``).
    """
    metrics = metrics or RpcMetrics("shard")
    interceptors = None
    if cluster_secret:
        interceptors = [security.Authorizer.for_cluster_secret(cluster_secret, metrics).interceptor()]
    else:
        security.log_open_once("shard node", address, "cluster secret")
    server = new_thread_server(max_message_mb << 20, workers, interceptors)
    pb_grpc.add_ShardNodeServicer_to_server(ShardNodeServicer(node, metrics, streams), server)
    add_standard_services_sync(server, [SERVICE_NAME], health_servicer)
    port = bind(server, address, tls)
    server.start()
    return server, port


def serve(address: str, data_dir: str, *, metrics_port: int | None = None, port_file: str | None = None,
          grace: float = 10.0, max_message_mb: int = DEFAULT_MAX_MESSAGE_MB, workers: int = 16,
          cluster_secret: str | None = None, tls: grpc.ServerCredentials | None = None,
          health_port: int | None = None) -> None:
    """Run a shard node until SIGTERM; then drain in-flight calls and close every LMDB environment.

    ``health_port``: also serve grpc.health.v1 alone, in plaintext, on this port of
    the listen host (0 = any free port), for probes that cannot speak TLS."""
    node = ShardNode(data_dir)
    metrics = RpcMetrics("shard")
    metrics.registry.register(ShardCollector(node))
    health = new_health(aio=False)
    streams = Streams()
    server, port = create_server(address, node, metrics=metrics, health_servicer=health,
                                 max_message_mb=max_message_mb, workers=workers, cluster_secret=cluster_secret,
                                 tls=tls, streams=streams)
    httpd, mport = start_metrics(metrics_port, metrics.registry)
    hserver, hport = None, None
    if health_port is not None:
        hserver, hport = start_health_server_sync(f"{address.rsplit(':', 1)[0]}:{health_port}", health)

    def on_stop() -> None:
        if hserver is not None:
            hserver.stop(0)
        node.close()

    log.info("shard node listening", extra={"address": address, "port": port, "metrics_port": mport,
                                            "health_port": hport, "tls": tls is not None,
                                            "data_dir": str(data_dir), "shards": len(node.shards()),
                                            "grpc_experiments": os.environ.get("GRPC_EXPERIMENTS", ""),
                                            "cluster_secret": cluster_secret is not None})
    if port_file:
        write_port_file(port_file, port=port, metrics_port=mport, health_port=hport)
    run_until_signal_sync(server, health, grace=grace, on_stop=on_stop, metrics_httpd=httpd,
                          end_streams=streams.end_all)
