"""The shard node's gRPC server: a thin ShardNode servicer over ``shard.node``.

    await create_server(addr, node) -> (server, port)   # started; tests use port 0
    serve(...)                                          # + metrics, SIGTERM, port file

Each handler converts the request (``quiver.convert``), calls the node's
LocalShard, and converts the answer back; errors leave through the error
table (``quiver.serving.rpc``). Shard creation and dropping touch the disk
and run in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from quiver import convert
from quiver.serving import (DEFAULT_MAX_MESSAGE_MB, RpcMetrics, add_standard_services, bind, new_health, new_server,
                            rpc, run_until_signal, start_metrics, write_port_file)
from quiver.v1 import shard_node_pb2 as pb
from quiver.v1 import shard_node_pb2_grpc as pb_grpc
from shard.node import ShardNode

log = logging.getLogger("quiver.shard")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ShardNode"].full_name


class ShardNodeServicer(pb_grpc.ShardNodeServicer):
    def __init__(self, node: ShardNode, metrics: RpcMetrics):
        self.node = node
        self.metrics = metrics

    def _shard(self, ref: pb.ShardRef):
        return self.node.get(ref.collection, ref.shard_id)

    @rpc
    async def CreateShard(self, request, context):
        config = convert.config_from_json(request.config_json)
        created = await asyncio.to_thread(self.node.create, request.shard.collection, request.shard.shard_id,
                                          config, request.exist_ok)
        return pb.CreateShardResponse(created=created)

    @rpc
    async def DropShard(self, request, context):
        dropped = await asyncio.to_thread(self.node.drop, request.collection, request.shard_id)
        return pb.DropShardResponse(dropped=dropped)

    @rpc
    async def ListShards(self, request, context):
        return pb.ListShardsResponse(shards=[
            convert.stats_to_proto(pb.ShardRef(collection=s.collection, shard_id=s.shard_id), await s.stats())
            for s in self.node.shards()])

    @rpc
    async def Upsert(self, request, context):
        ids = convert.ids_from_bytes(request.ids)
        vectors = convert.vectors_from_proto(request.vectors)
        n = await self._shard(request.shard).upsert(ids, vectors, list(request.payloads))
        return pb.ShardUpsertResponse(upserted=n)

    @rpc
    async def Delete(self, request, context):
        n = await self._shard(request.shard).delete(convert.ids_from_bytes(request.ids))
        return pb.ShardDeleteResponse(deleted=n)

    @rpc
    async def Retrieve(self, request, context):
        points = await self._shard(request.shard).retrieve(
            convert.ids_from_bytes(request.ids), request.with_payload, request.with_vector)
        return convert.shard_points_to_proto(points)

    @rpc
    async def Count(self, request, context):
        return pb.ShardCountResponse(count=await self._shard(request).count())

    @rpc
    async def Search(self, request, context):
        queries = convert.vectors_from_proto(request.queries, "queries")
        hits = await self._shard(request.shard).search(queries, convert.shard_search_from_proto(request))
        return pb.ShardSearchResponse(results=[convert.shard_points_to_proto(h) for h in hits])

    @rpc
    async def Stats(self, request, context):
        return convert.stats_to_proto(request, await self._shard(request).stats())


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


async def create_server(address: str, node: ShardNode, *, metrics: RpcMetrics | None = None,
                        health_servicer=None, max_message_mb: int = DEFAULT_MAX_MESSAGE_MB
                        ) -> tuple[grpc.aio.Server, int]:
    """Start a ShardNode server for ``node`` on ``address`` (port 0 = any free port).

    Returns ``(server, port)``. The caller owns ``node`` and closes it after
    stopping the server; pass ``health_servicer`` to flip it on shutdown.
    """
    metrics = metrics or RpcMetrics("shard")
    server = new_server(max_message_mb << 20)
    pb_grpc.add_ShardNodeServicer_to_server(ShardNodeServicer(node, metrics), server)
    await add_standard_services(server, [SERVICE_NAME], health_servicer)
    port = bind(server, address)
    await server.start()
    return server, port


async def _serve(address: str, data_dir: str, *, metrics_port: int | None, port_file: str | None, grace: float,
                 max_message_mb: int, search_threads: int) -> None:
    node = await asyncio.to_thread(ShardNode, data_dir, search_threads)
    metrics = RpcMetrics("shard")
    metrics.registry.register(ShardCollector(node))
    health = new_health()
    server, port = await create_server(address, node, metrics=metrics, health_servicer=health,
                                       max_message_mb=max_message_mb)
    httpd, mport = start_metrics(metrics_port, metrics.registry)
    log.info("shard node listening", extra={"address": address, "port": port, "metrics_port": mport,
                                            "data_dir": str(data_dir), "shards": len(node.shards())})
    if port_file:
        write_port_file(port_file, port=port, metrics_port=mport)
    await run_until_signal(server, health, grace=grace, on_stop=lambda: asyncio.to_thread(node.close),
                           metrics_httpd=httpd)


def serve(address: str, data_dir: str, *, metrics_port: int | None = None, port_file: str | None = None,
          grace: float = 10.0, max_message_mb: int = DEFAULT_MAX_MESSAGE_MB, search_threads: int = 0) -> None:
    """Run a shard node until SIGTERM; then drain in-flight calls and close every LMDB environment."""
    asyncio.run(_serve(address, data_dir, metrics_port=metrics_port, port_file=port_file, grace=grace,
                       max_message_mb=max_message_mb, search_threads=search_threads))
