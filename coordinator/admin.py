"""The coordinator's QuiverAdmin servicer: nodes, replicas, operations, snapshots.

A thin layer: placement changes are ``coordinator.operations``, snapshots
``coordinator.snapshots``; this module converts to and from admin.proto.
"""

from __future__ import annotations

import asyncio

from coordinator import snapshots
from coordinator.operations import PROBE_TIMEOUT
from coordinator.placement import replica_load
from coordinator.service import Coordinator
from quiver.serving import RpcMetrics, rpc
from quiver.v1 import admin_pb2 as pb
from quiver.v1 import admin_pb2_grpc as pb_grpc
from shard.errors import QuiverError

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["QuiverAdmin"].full_name

_TRANSFER_FIELDS = ("collection", "shard_id", "from_node", "to_node", "move", "state", "points_copied",
                    "points_total", "error")


def operation_to_proto(op: dict) -> pb.Operation:
    return pb.Operation(id=op["id"], kind=op["kind"], state=op["state"], error=op.get("error", ""),
                        description=op.get("description", ""),
                        transfers=[pb.Transfer(**{k: t[k] for k in _TRANSFER_FIELDS}) for t in op["transfers"]])


async def node_infos(coord: Coordinator) -> list[pb.NodeInfo]:
    """Every registered node, probed now (in parallel), with what the placement puts on it."""
    addrs = sorted(coord.meta.nodes)
    placed = replica_load(coord.meta.collections.values(), addrs)

    async def probe(a: str):
        try:
            return await coord.pool.node(a).list_shards(PROBE_TIMEOUT)
        except QuiverError as e:
            return e

    got = await asyncio.gather(*(probe(a) for a in addrs))
    out = []
    for a, r in zip(addrs, got):
        info = pb.NodeInfo(address=a, state=coord.meta.nodes[a].state, shards=placed[a])
        if isinstance(r, QuiverError):
            info.healthy, info.error = False, str(r)
        else:
            info.healthy = True
            info.points = sum(s["points"] for s in r)
            info.ram_bytes = sum(s["ram_bytes"] for s in r)
            info.disk_bytes = sum(s["disk_bytes"] for s in r)
        out.append(info)
    return out


class AdminServicer(pb_grpc.QuiverAdminServicer):
    def __init__(self, coordinator: Coordinator, metrics: RpcMetrics, collection_info):
        self.coord = coordinator
        self.metrics = metrics
        self._collection_info = collection_info  # CollectionStatus -> quiver.v1.CollectionInfo

    @property
    def ops(self):
        return self.coord.ops

    @rpc
    async def ClusterStatus(self, request, context):
        names = self.coord.list_collections()
        statuses = await asyncio.gather(*(self.coord.collection_status(n, context.time_remaining())
                                          for n in names), return_exceptions=True)
        return pb.ClusterStatusResponse(
            nodes=await node_infos(self.coord),
            collections=[self._collection_info(s) for s in statuses if not isinstance(s, BaseException)],
            operations=[operation_to_proto(op) for op in self.ops.list() if op["state"] == "running"],
            metadata_backend=self.coord.meta.kind,
            coordinators=[str(r.get("address") or r.get("id")) for r in self.coord.meta.live_coordinators()])

    @rpc
    async def ListNodes(self, request, context):
        return pb.ListNodesResponse(nodes=await node_infos(self.coord))

    @rpc
    async def AddNode(self, request, context):
        await self.ops.add_node(request.address, request.allow_unreachable)
        return next(n for n in await node_infos(self.coord) if n.address == request.address)

    @rpc
    async def RemoveNode(self, request, context):
        return operation_to_proto(await self.ops.remove_node(request.address))

    @rpc
    async def MoveShard(self, request, context):
        return operation_to_proto(await self.ops.move(request.collection, request.shard_id, request.from_node,
                                                      request.to_node))

    @rpc
    async def ReplicateShard(self, request, context):
        return operation_to_proto(await self.ops.replicate(request.collection, request.shard_id, request.to_node,
                                                           request.from_node))

    @rpc
    async def DropReplica(self, request, context):
        await self.ops.drop_replica(request.collection, request.shard_id, request.node)
        return pb.DropReplicaResponse()

    @rpc
    async def Rebalance(self, request, context):
        return operation_to_proto(await self.ops.rebalance(request.collection))

    @rpc
    async def GetOperation(self, request, context):
        return operation_to_proto(self.ops.get(request.id))

    @rpc
    async def ListOperations(self, request, context):
        return pb.ListOperationsResponse(operations=[operation_to_proto(op) for op in self.ops.list()])

    @rpc
    async def Snapshot(self, request, context):
        async for part in snapshots.snapshot(self.coord, request.collection,
                                             request.shard_id if request.HasField("shard_id") else None):
            yield part

    @rpc
    async def Restore(self, request_iterator, context):
        name = await snapshots.restore(self.coord, request_iterator)
        return self._collection_info(await self.coord.collection_status(name, context.time_remaining()))
