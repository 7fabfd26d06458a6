"""Snapshots of a collection (or one shard of it) and restoring them.

A snapshot is a stream of ``SnapshotPart`` messages (admin.proto): a header
holding the collection's record, then, shard by shard, the bytes of a
consistent copy of one active replica's LMDB environment (taken by the shard
node while writes go on) and the copy's size and SHA-256. The coordinator
checks each shard's checksum as the bytes pass, both ways: a snapshot whose
bytes changed in transit or on disk is refused before anything is replaced.

Restoring a whole-collection snapshot creates the collection (under its own
name or another) with the snapshot's config and shard count, placed on the
active nodes like any new collection, and fills every replica of each shard
from the stream; the collection serves once every shard is in. Restoring a
one-shard snapshot replaces that shard on every replica of an existing
collection with the same config and shard count (writes to that shard during
the restore may be lost: pause them).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time

from coordinator.placement import CollectionMeta
from quiver.convert import config_to_json
from quiver.v1 import admin_pb2 as apb
from quiver.v1 import shard_node_pb2 as spb
from shard.config import CollectionConfig
from shard.errors import FailedPrecondition, InvalidArgument, NotFound, QuiverError, Unavailable
from shard.node import check_name

log = logging.getLogger("quiver.coordinator")

FORMAT_VERSION = 1
#: Chunks buffered per replica while restoring (back-pressure on the client's stream).
QUEUE_CHUNKS = 8


def collection_json(meta: CollectionMeta) -> str:
    return json.dumps({"config": meta.config.to_dict(), "shard_number": meta.shard_number,
                       "replication_factor": meta.replication_factor,
                       "write_consistency": meta.write_consistency}, sort_keys=True)


async def snapshot(coord, name: str, shard_id: int | None = None):
    """The snapshot stream of collection ``name`` (or of one shard)."""
    meta = coord._meta(name)
    if shard_id is not None and not 0 <= shard_id < meta.shard_number:
        raise NotFound(f"collection {name!r} has shards 0 to {meta.shard_number - 1}, not {shard_id}")
    sids = list(range(meta.shard_number)) if shard_id is None else [shard_id]
    yield apb.SnapshotPart(header=apb.SnapshotHeader(
        format_version=FORMAT_VERSION, collection=name, collection_json=collection_json(meta), shard_ids=sids,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))
    for sid in sids:
        last: QuiverError | None = None
        for node in meta.readers(sid):
            h, size, points, claimed, started = hashlib.sha256(), 0, 0, None, False
            try:
                async for chunk in coord.pool.node(node).snapshot(name, sid):
                    if chunk.points:
                        points = chunk.points
                    if chunk.data:
                        started = True
                        h.update(chunk.data)
                        size += len(chunk.data)
                        yield apb.SnapshotPart(chunk=apb.SnapshotData(shard_id=sid, data=chunk.data))
                    if chunk.sha256:
                        claimed = (chunk.sha256, chunk.size)
            except Unavailable as e:
                if started:
                    raise
                last = e
                continue
            if claimed != (h.hexdigest(), size):
                raise Unavailable(f"the snapshot of shard {sid} of {name!r} from {node} arrived damaged "
                                  f"(checksum or size differs); take it again")
            yield apb.SnapshotPart(shard_end=apb.SnapshotShardEnd(shard_id=sid, size=size, sha256=h.hexdigest(),
                                                                  points=points))
            log.info("shard snapshot taken", extra={"collection": name, "shard": sid, "node": node,
                                                    "bytes": size, "points": points})
            break
        else:
            raise last or Unavailable(f"shard {sid} of {name!r} has no active replica to snapshot")


def _parse_header(part) -> tuple[apb.SnapshotHeader, dict]:
    if part is None or part.WhichOneof("part") != "header":
        raise InvalidArgument("a snapshot stream must start with its header")
    header = part.header
    if header.format_version != FORMAT_VERSION:
        raise InvalidArgument(f"snapshot format version {header.format_version} is not supported "
                              f"(this coordinator reads version {FORMAT_VERSION})")
    try:
        d = json.loads(header.collection_json)
        d["config"] = CollectionConfig.from_dict(d["config"])
        d["shard_number"] = int(d["shard_number"])
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidArgument(f"the snapshot header's collection record is unreadable: {e}") from None
    sids = list(header.shard_ids)
    if not sids or len(set(sids)) != len(sids) or not all(0 <= s < d["shard_number"] for s in sids):
        raise InvalidArgument(f"the snapshot header lists shards {sids} of a {d['shard_number']}-shard collection")
    return header, d


async def restore(coord, parts) -> str:
    """Restore from an async iterator of SnapshotPart; returns the collection's name."""
    it = parts.__aiter__()
    header, d = _parse_header(await anext(it, None))
    name = check_name(header.restore_as or header.collection)
    whole = len(header.shard_ids) == d["shard_number"]
    config = d["config"]
    if whole:
        meta = await coord.create_collection(name, config, d["shard_number"], int(d.get("replication_factor", 1)),
                                             int(d.get("write_consistency", 0)), hold=True)
    else:
        meta = coord._meta(name)
        if meta.config != config or meta.shard_number != d["shard_number"]:
            raise FailedPrecondition(f"collection {name!r} has another config or shard count than the snapshot; "
                                     "a one-shard snapshot restores only into its own kind of collection")
        if coord.ops is not None and coord.ops.busy(name, header.shard_ids[0]):
            raise FailedPrecondition(f"shard {header.shard_ids[0]} of {name!r} has a transfer running")
    try:
        points = await _restore_shards(coord, meta, it, list(header.shard_ids))
        if whole:
            await coord.finish_create(meta)
    except BaseException:
        if whole:
            try:
                await coord.delete_collection(name)
            except QuiverError as e:
                log.warning("could not clean up a failed restore", extra={"collection": name, "error": str(e)})
        raise
    log.info("snapshot restored", extra={"collection": name, "shards": list(header.shard_ids), "points": points})
    return name


async def _restore_shards(coord, meta: CollectionMeta, it, sids: list[int]) -> int:
    cfg = config_to_json(meta.config)
    total = 0
    for sid in sids:
        nodes = meta.writers(sid)
        queues = [asyncio.Queue(QUEUE_CHUNKS) for _ in nodes]

        async def feed(q: asyncio.Queue):
            while True:
                msg = await q.get()
                if msg is None:
                    return
                yield msg

        calls = [asyncio.ensure_future(coord.pool.node(n).restore(feed(q), meta.name, sid))
                 for n, q in zip(nodes, queues)]
        try:
            first = True
            h, size = hashlib.sha256(), 0
            while True:
                part = await anext(it, None)
                kind = None if part is None else part.WhichOneof("part")
                if kind == "chunk":
                    if part.chunk.shard_id != sid:
                        raise InvalidArgument(f"snapshot stream: chunk of shard {part.chunk.shard_id} where "
                                              f"shard {sid}'s data was expected")
                    h.update(part.chunk.data)
                    size += len(part.chunk.data)
                    msg = spb.SnapshotChunk(data=part.chunk.data)
                    if first:
                        msg.shard.collection, msg.shard.shard_id, msg.config_json = meta.name, sid, cfg
                        first = False
                    await _put_all(queues, calls, msg)
                elif kind == "shard_end" and part.shard_end.shard_id == sid:
                    end = part.shard_end
                    if (end.sha256, end.size) != (h.hexdigest(), size):
                        raise InvalidArgument(f"snapshot of shard {sid} is damaged: its data does not match its "
                                              f"checksum (sha256 {h.hexdigest()[:16]}... of {size} bytes, "
                                              f"expected {end.sha256[:16]}... of {end.size})")
                    msg = spb.SnapshotChunk(sha256=end.sha256, size=end.size)
                    if first:
                        msg.shard.collection, msg.shard.shard_id, msg.config_json = meta.name, sid, cfg
                    await _put_all(queues, calls, msg)
                    for q in queues:
                        await q.put(None)
                    got = await asyncio.gather(*calls)
                    total += got[0] if got else 0
                    break
                else:
                    raise InvalidArgument(f"snapshot stream ended or went on to something else before shard "
                                          f"{sid}'s end")
        except BaseException:
            for c in calls:
                c.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
            raise
    return total


async def _put_all(queues: list[asyncio.Queue], calls: list[asyncio.Future], msg) -> None:
    for q, c in zip(queues, calls):
        put = asyncio.ensure_future(q.put(msg))
        await asyncio.wait({put, c}, return_when=asyncio.FIRST_COMPLETED)
        if not put.done():  # the replica's call ended (refused) while its queue was full
            put.cancel()
        if c.done():
            c.result()  # raises the replica's error
            raise Unavailable("a replica ended the restore stream before its end")
