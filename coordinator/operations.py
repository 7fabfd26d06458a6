"""Long-running changes to where replicas live: shard transfers and what is built on them.

An *operation* (move, replicate, rebalance, remove-node, catch-up) is a list
of transfers, recorded under ``operations/<id>`` in the metadata and run by
the coordinator that owns it. One transfer copies one shard replica to a node
while writes go on:

1. the target node creates the shard empty and starts *receiving*
   (``BeginReceive``): from then on it remembers the ids that live writes touch;
2. the placement gains the target as a ``receiving`` replica, which every
   coordinator sends writes to (but no reads); the transfer waits until every
   coordinator has applied that change and finished the requests it routed
   before it (``Metadata.fence``);
3. the source streams its points from one consistent read (``ExportShard``)
   and the target imports them, skipping ids written live meanwhile, which are
   newer (``ImportPoints``);
4. one metadata transaction switches the target to ``active`` and, for a move,
   removes the source; after another fence the source's files are dropped.

If the target misses a live write during the copy (it is then marked dead),
restarts (it forgets its receive state), or the source fails, the transfer
starts over, up to ``TRANSFER_ATTEMPTS`` times, then rolls back (the target
replica is removed; the source was never touched). An operation whose
coordinator died is adopted by a live one (or by the same coordinator when it
restarts), which rolls back a half-done transfer and runs it again: no point
is lost, none duplicated (a point is one id in one shard; copying it twice
writes it twice).

The leader (the live coordinator with the smallest id) also looks for dead
replicas every ``repair_interval`` seconds and, once their node answers,
catches them up with a transfer from an active replica.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from coordinator.metadata import COLLECTIONS, NODE_ACTIVE, NODE_DRAINING, NODES, OPERATIONS, NodeMeta
from coordinator.placement import ACTIVE, DEAD, RECEIVING, CollectionMeta, Replica, replica_load
from quiver.convert import config_to_json
from shard.errors import (AlreadyExists, DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound,
                          QuiverError, Unavailable)

log = logging.getLogger("quiver.coordinator")

RUNNING, DONE, FAILED = "running", "done", "failed"
PENDING, COPYING = "pending", "copying"
#: Attempts of one transfer before its operation fails.
TRANSFER_ATTEMPTS = 3
#: Finished operations kept in the metadata (older ones are forgotten).
MAX_FINISHED = 50
#: Seconds between persisted progress updates of a running copy.
PROGRESS_EVERY = 1.0
#: Points per streamed batch of a copy.
COPY_BATCH = 1024
#: How long a node has to answer a health probe.
PROBE_TIMEOUT = 2.0
#: Repair rounds between sweeps for orphaned replicas (files no placement points to).
ORPHAN_SWEEP_ROUNDS = 10


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _transfer(collection: str, shard_id: int, from_node: str, to_node: str, move: bool) -> dict:
    return {"collection": collection, "shard_id": shard_id, "from_node": from_node, "to_node": to_node,
            "move": move, "state": PENDING, "points_copied": 0, "points_total": 0, "error": "", "token": ""}


class Operations:
    """Submits, runs, adopts and reports operations; runs the repair loop."""

    def __init__(self, coordinator):
        self.c = coordinator
        self.meta = coordinator.meta
        self.pool = coordinator.pool
        self._tasks: dict[str, asyncio.Task] = {}
        self._copied: dict[tuple[str, int], int] = {}  # (op id, transfer index) -> points copied, live
        self._repair_task: asyncio.Task | None = None
        self._plan = asyncio.Lock()  # one submission is validated and recorded at a time
        self._orphans: set[tuple[str, str, int]] = set()  # (node, collection, shard) seen orphaned last sweep
        self._rounds = 0

    async def start(self) -> None:
        await self._adopt()
        self._repair_task = asyncio.ensure_future(self._repair_loop())

    async def close(self) -> None:
        tasks = [t for t in (self._repair_task, *self._tasks.values()) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping; adopted on restart
                pass
        self._tasks.clear()

    # ------------------------------------------------------------ queries

    def _running(self) -> list[dict]:
        return [op for op in self.meta.operations.values() if op.get("state") == RUNNING]

    def busy(self, collection: str, shard_id: int | None = None) -> bool:
        return any(t["collection"] == collection and (shard_id is None or t["shard_id"] == shard_id)
                   for op in self._running() for t in op["transfers"] if t["state"] in (PENDING, COPYING))

    def get(self, op_id: str) -> dict:
        op = self.meta.operations.get(op_id)
        if op is None:
            raise NotFound(f"operation {op_id!r} does not exist (finished ones are kept for a while only)")
        return self._live(op)

    def list(self) -> list[dict]:
        return [self._live(op) for op in sorted(self.meta.operations.values(), key=lambda o: o.get("created", ""))]

    def _live(self, op: dict) -> dict:
        """The record with the progress this coordinator knows of and has not persisted yet."""
        out = dict(op, transfers=[dict(t) for t in op["transfers"]])
        for i, t in enumerate(out["transfers"]):
            n = self._copied.get((op["id"], i))
            if n is not None and t["state"] == COPYING:
                t["points_copied"] = max(t["points_copied"], n)
        return out

    # ---------------------------------------------------------- validation

    def _collection(self, name: str) -> CollectionMeta:
        m = self.meta.collections.get(name)
        if m is None or m.state != "ready":
            raise NotFound(f"collection {name!r} does not exist")
        return m

    def _shard(self, name: str, shard_id: int) -> CollectionMeta:
        m = self._collection(name)
        if not 0 <= shard_id < m.shard_number:
            raise NotFound(f"collection {name!r} has shards 0 to {m.shard_number - 1}, not {shard_id}")
        return m

    def _node(self, address: str, *, active: bool = True) -> NodeMeta:
        n = self.meta.nodes.get(address)
        if n is None:
            raise NotFound(f"node {address!r} is not registered (quiver admin nodes add {address})")
        if active and n.state != NODE_ACTIVE:
            raise FailedPrecondition(f"node {address!r} is {n.state}; it takes no new replicas")
        return n

    def _idle(self, name: str, shard_id: int) -> None:
        if self.busy(name, shard_id):
            raise FailedPrecondition(f"shard {shard_id} of {name!r} has a transfer running; "
                                     "wait for it (quiver admin operations list)")

    # ------------------------------------------------------------ submits

    async def move(self, collection: str, shard_id: int, from_node: str, to_node: str) -> dict:
        async with self._plan:
            m = self._shard(collection, shard_id)
            if from_node == to_node:
                raise InvalidArgument(f"shard {shard_id} of {collection!r} is already on {to_node}: "
                                      "moving it to the same node does nothing")
            if m.replica(shard_id, from_node) is None:
                raise NotFound(f"node {from_node!r} holds no replica of shard {shard_id} of {collection!r}")
            self._node(to_node)
            if m.replica(shard_id, to_node) is not None:
                raise AlreadyExists(f"node {to_node!r} already holds a replica of shard {shard_id} of {collection!r}")
            self._idle(collection, shard_id)
            return await self._submit("move", f"move shard {shard_id} of {collection!r} from {from_node} to "
                                      f"{to_node}", [_transfer(collection, shard_id, from_node, to_node, True)])

    async def replicate(self, collection: str, shard_id: int, to_node: str, from_node: str = "") -> dict:
        async with self._plan:
            m = self._shard(collection, shard_id)
            if from_node and from_node not in m.readers(shard_id):
                raise FailedPrecondition(f"node {from_node!r} holds no active replica of shard {shard_id} of "
                                         f"{collection!r} to copy from")
            self._node(to_node)
            if m.replica(shard_id, to_node) is not None:
                raise AlreadyExists(f"node {to_node!r} already holds a replica of shard {shard_id} of {collection!r}")
            self._idle(collection, shard_id)
            return await self._submit("replicate", f"copy shard {shard_id} of {collection!r} to {to_node}",
                                      [_transfer(collection, shard_id, from_node, to_node, False)])

    async def drop_replica(self, collection: str, shard_id: int, node: str) -> None:
        async with self._plan:
            self._shard(collection, shard_id)
            self._idle(collection, shard_id)

            def fn(m: CollectionMeta | None):
                if m is None or m.state != "ready":
                    raise NotFound(f"collection {collection!r} does not exist")
                r = m.replica(shard_id, node)
                if r is None:
                    raise NotFound(f"node {node!r} holds no replica of shard {shard_id} of {collection!r}")
                rest = tuple(x for x in m.replicas[shard_id] if x.node != node)
                if not any(x.state == ACTIVE for x in rest):
                    raise FailedPrecondition(f"refusing to drop the last active replica of shard {shard_id} of "
                                             f"{collection!r}: its points would be lost (move it instead)")
                return m.with_shard(shard_id, rest)

            await self.meta.update(COLLECTIONS + collection, fn)
        await self.meta.fence()
        await self._drop_quietly(node, collection, shard_id)
        log.info("replica dropped", extra={"collection": collection, "shard": shard_id, "node": node})

    async def rebalance(self, collection: str = "") -> dict:
        async with self._plan:
            if collection:
                self._collection(collection)
            nodes = self.c.nodes
            if not nodes:
                raise FailedPrecondition("there are no active nodes to balance over")
            cols = {n: m for n, m in self.meta.collections.items() if m.state == "ready"}
            load = replica_load(cols.values(), nodes)
            where = {(name, sid): set(m.placement[sid]) for name, m in cols.items() for sid in range(m.shard_number)}
            movable = [(name, sid, node) for name, m in sorted(cols.items()) if not collection or name == collection
                       for sid in range(m.shard_number) for node in m.placement[sid]
                       if node in load and not self.busy(name, sid)]
            plan = []
            for _ in range(10_000):
                hi = max(nodes, key=lambda n: (load[n], n))
                lo = min(nodes, key=lambda n: (load[n], n))
                if load[hi] - load[lo] <= 1:
                    break
                pick = next(((c, s, n) for c, s, n in movable if n == hi and lo not in where[(c, s)]), None)
                if pick is None:
                    break
                c, s, _ = pick
                movable.remove(pick)
                where[(c, s)].discard(hi)
                where[(c, s)].add(lo)
                load[hi] -= 1
                load[lo] += 1
                plan.append(_transfer(c, s, hi, lo, True))
            what = f"collection {collection!r}" if collection else "every collection"
            return await self._submit("rebalance", f"rebalance {what} over {len(nodes)} nodes", plan)

    async def add_node(self, address: str, allow_unreachable: bool = False) -> NodeMeta:
        host, sep, port = address.rpartition(":")
        if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
            raise InvalidArgument(f"node address must be host:port, got {address!r}")
        existing = self.meta.nodes.get(address)
        if existing is not None and existing.state == NODE_ACTIVE:
            raise AlreadyExists(f"node {address!r} is already registered")
        if not allow_unreachable:
            try:
                await self.pool.node(address).list_shards(PROBE_TIMEOUT, wait_for_ready=True)
            except QuiverError as e:
                raise Unavailable(f"node {address!r} does not answer ({e}); start it first, or add it with "
                                  "--allow-unreachable") from None
        node = NodeMeta(address, NODE_ACTIVE)
        await self.meta.update(NODES + address, lambda _: node)
        log.info("node added", extra={"node": address})
        return node

    async def remove_node(self, address: str) -> dict:
        async with self._plan:
            self._node(address, active=False)
            await self.meta.update(NODES + address, lambda old: NodeMeta(address, NODE_DRAINING) if old else None)
            targets = [n for n in self.c.nodes if n != address]
            load = replica_load(self.meta.collections.values(), targets)
            plan = []
            for name, m in sorted(self.meta.collections.items()):
                for sid in range(m.shard_number):
                    if address not in m.placement[sid]:
                        continue
                    free = [n for n in targets if n not in m.placement[sid]]
                    if not free:
                        await self.meta.update(NODES + address, lambda old: NodeMeta(address) if old else None)
                        raise FailedPrecondition(f"no other active node can take shard {sid} of {name!r} from "
                                                 f"{address} (add a node first)")
                    to = min(free, key=lambda n: (load[n], n))
                    load[to] += 1
                    plan.append(_transfer(name, sid, address, to, True))
            return await self._submit("remove-node", f"drain and remove node {address}", plan,
                                      extra={"node": address})

    async def _submit(self, kind: str, description: str, transfers: list[dict], extra: dict | None = None) -> dict:
        op_id = uuid.uuid4().hex[:12]
        op = {"id": op_id, "kind": kind, "state": RUNNING, "error": "", "description": description,
              "transfers": transfers, "owner": self.meta.id, "created": _now(), **(extra or {})}
        await self.meta.update(OPERATIONS + op_id, lambda _: op)
        self._start(op_id)
        log.info("operation started", extra={"operation": op_id, "kind": kind, "description": description,
                                             "transfers": len(transfers)})
        return op

    def _start(self, op_id: str) -> None:
        task = asyncio.ensure_future(self._run(op_id))
        self._tasks[op_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(op_id, None))

    # ------------------------------------------------------------ running

    async def _save(self, op_id: str, fn) -> dict:
        return await self.meta.update(OPERATIONS + op_id, lambda op: fn(op) if op is not None else None)

    async def _set_transfer(self, op_id: str, i: int, **fields) -> None:
        def fn(op):
            op["transfers"][i].update(fields)
            return op
        await self._save(op_id, fn)

    async def _run(self, op_id: str) -> None:
        error = ""
        try:
            op = self.meta.operations[op_id]
            for i, t in enumerate(op["transfers"]):
                if t["state"] == DONE:
                    continue
                if t["state"] == COPYING and t.get("token"):  # adopted half way: undo, then run again
                    await self._rollback(t, t["token"])
                await self._run_transfer(op_id, i, t)
            if op["kind"] == "remove-node":
                await self._forget_node(op["node"])
        except asyncio.CancelledError:
            raise
        except QuiverError as e:
            error = str(e)
        except Exception as e:  # noqa: BLE001 - recorded on the operation, not lost in a task
            log.exception("operation crashed", extra={"operation": op_id})
            error = f"internal error: {e!r}"
        finally:
            for k in [k for k in self._copied if k[0] == op_id]:
                self._copied.pop(k, None)

        def finish(op):
            op["state"] = FAILED if error else DONE
            op["error"] = error
            op["finished"] = _now()
            return op

        await self._save(op_id, finish)
        await self._prune()
        log.info("operation finished", extra={"operation": op_id, "state": FAILED if error else DONE,
                                              "error": error})

    async def _forget_node(self, address: str) -> None:
        if any(address in reps for m in self.meta.collections.values() for reps in m.placement):
            raise FailedPrecondition(f"node {address} still holds replicas; not removed")
        await self.meta.update(NODES + address, lambda _: None)
        log.info("node removed", extra={"node": address})

    async def _prune(self) -> None:
        done = sorted((op for op in self.meta.operations.values() if op.get("state") != RUNNING),
                      key=lambda o: o.get("finished", ""))
        for op in done[:max(0, len(done) - MAX_FINISHED)]:
            await self.meta.update(OPERATIONS + op["id"], lambda _: None)

    async def _run_transfer(self, op_id: str, i: int, t: dict) -> None:
        last: QuiverError | None = None
        for attempt in range(TRANSFER_ATTEMPTS):
            token = f"{op_id}.{i}.{attempt}.{uuid.uuid4().hex[:6]}"
            await self._set_transfer(op_id, i, state=COPYING, token=token, error="")
            try:
                await self._copy(op_id, i, t, token)
                await self._set_transfer(op_id, i, state=DONE, token="",
                                         points_copied=self._copied.get((op_id, i), 0))
                return
            except (FailedPrecondition, Unavailable, DeadlineExceeded, AlreadyExists) as e:
                last = e
                log.warning("transfer attempt failed; rolling back", extra={
                    "operation": op_id, "transfer": i, "attempt": attempt + 1, "error": str(e)})
                await self._rollback(t, token)
                await asyncio.sleep(0.2 * (attempt + 1))
            except QuiverError as e:
                await self._rollback(t, token)
                await self._set_transfer(op_id, i, state=FAILED, error=str(e))
                raise
        await self._set_transfer(op_id, i, state=FAILED, error=str(last))
        raise last

    async def _copy(self, op_id: str, i: int, t: dict, token: str) -> None:
        name, sid, dst = t["collection"], t["shard_id"], t["to_node"]
        key = COLLECTIONS + name
        meta = self._shard(name, sid)
        target = self.pool.node(dst)
        await target.begin_receive(name, sid, config_to_json(meta.config), token, replace=True)

        def receive(m: CollectionMeta | None):
            if m is None or m.state != "ready":
                raise NotFound(f"collection {name!r} was deleted during the transfer")
            r = m.replica(sid, dst)
            if r is not None and r.state == ACTIVE:
                raise AlreadyExists(f"node {dst!r} already holds an active replica of shard {sid} of {name!r}")
            new = Replica(dst, RECEIVING, token)
            reps = [new if x.node == dst else x for x in m.replicas[sid]] if r else [*m.replicas[sid], new]
            return m.with_shard(sid, tuple(reps))

        await self.meta.update(key, receive)
        await self.meta.fence()  # every coordinator now writes to the target too

        meta = self._shard(name, sid)
        sources = [n for n in [t["from_node"], *meta.readers(sid)] if n and n != dst and n in meta.readers(sid)]
        if not sources:
            raise Unavailable(f"shard {sid} of {name!r} has no active replica to copy from")
        copied, last_save = 0, time.monotonic()
        for src in dict.fromkeys(sources):
            try:
                total = await self.pool.shard(src, name, sid).count()
                await self._set_transfer(op_id, i, points_total=total, points_copied=0)
                async for batch in self.pool.node(src).export(name, sid, COPY_BATCH):
                    copied += await target.import_points(name, sid, token, batch)
                    self._copied[(op_id, i)] = copied
                    if time.monotonic() - last_save > PROGRESS_EVERY:
                        last_save = time.monotonic()
                        await self._set_transfer(op_id, i, points_copied=copied)
                break
            except Unavailable as e:
                if copied:  # the target holds part of this source's copy: start over
                    raise
                log.warning("transfer source unreachable; trying another replica",
                            extra={"source": src, "error": str(e)})
        else:
            raise Unavailable(f"no replica of shard {sid} of {name!r} could be read for the copy")
        await target.end_receive(name, sid, token)

        def switch(m: CollectionMeta | None):
            if m is None or m.state != "ready":
                raise NotFound(f"collection {name!r} was deleted during the transfer")
            r = m.replica(sid, dst)
            if r is None or r.state != RECEIVING or r.token != token:
                raise FailedPrecondition(f"{dst} missed a write during the copy of shard {sid} of {name!r}")
            reps = tuple(Replica(dst) if x.node == dst else x for x in m.replicas[sid]
                         if not (t["move"] and x.node == t["from_node"]))
            return m.with_shard(sid, reps)

        await self.meta.update(key, switch)
        log.info("transfer switched", extra={"collection": name, "shard": sid, "to": dst,
                                             "from": t["from_node"], "move": t["move"], "points": copied})
        if t["move"] and t["from_node"]:
            await self.meta.fence()  # no coordinator reads from the source any more
            await self._drop_quietly(t["from_node"], name, sid)

    async def _rollback(self, t: dict, token: str) -> None:
        """Undo a transfer attempt: the target replica leaves the placement (a replica being caught
        up goes back to dead) and its files are dropped. The source is untouched."""
        name, sid, dst = t["collection"], t["shard_id"], t["to_node"]
        was_dead = [False]

        def fn(m: CollectionMeta | None):
            if m is None:
                return None
            r = m.replica(sid, dst)
            if r is None or r.state == ACTIVE or (r.token and r.token != token):
                return m
            if t.get("catch_up"):
                was_dead[0] = True
                return m.with_shard(sid, tuple(Replica(dst, DEAD) if x.node == dst else x for x in m.replicas[sid]))
            return m.with_shard(sid, tuple(x for x in m.replicas[sid] if x.node != dst))

        try:
            m = await self.meta.update(COLLECTIONS + name, fn)
            if m is not None and m.replica(sid, dst) is None:
                await self.meta.fence()
                await self._drop_quietly(dst, name, sid)
        except QuiverError as e:
            log.warning("transfer rollback incomplete", extra={"collection": name, "shard": sid, "node": dst,
                                                               "error": str(e)})

    async def _drop_quietly(self, node: str, name: str, sid: int) -> None:
        try:
            await self.pool.node(node).drop_shard(name, sid)
        except QuiverError as e:
            log.warning("could not drop a replica's files; they stay on the node until it is wiped",
                        extra={"node": node, "collection": name, "shard": sid, "error": str(e)})

    # -------------------------------------------------- adoption and repair

    def _leader(self) -> bool:
        ids = [str(r.get("id")) for r in self.meta.live_coordinators()]
        return not ids or min(ids + [self.meta.id]) == self.meta.id

    async def _adopt(self) -> None:
        """Run operations whose owner is gone (or is this coordinator, restarted)."""
        live = {str(r.get("id")) for r in self.meta.live_coordinators()}
        for op in self._running():
            owner = op.get("owner")
            if op["id"] in self._tasks or (owner in live and owner != self.meta.id):
                continue

            def take(o, me=self.meta.id, was=owner):
                if o.get("state") != RUNNING or o.get("owner") != was:
                    raise FailedPrecondition("taken by another coordinator")
                o["owner"] = me
                return o

            try:
                await self._save(op["id"], take)
            except FailedPrecondition:
                continue
            log.info("operation adopted", extra={"operation": op["id"], "previous_owner": owner})
            self._start(op["id"])

    async def _repair_loop(self) -> None:
        while True:
            await asyncio.sleep(self.c.repair_interval)
            try:
                await self._adopt()
                if self._leader():
                    await self._repair_once()
                    self._rounds += 1
                    if self._rounds % ORPHAN_SWEEP_ROUNDS == 0:
                        await self._sweep_orphans()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - try again next round
                log.warning("repair round failed", extra={"error": str(e)})

    async def _repair_once(self) -> None:
        probed: dict[str, bool] = {}
        for name, m in sorted(self.meta.collections.items()):
            if m.state != "ready":
                continue
            for sid, reps in enumerate(m.replicas):
                for r in reps:
                    if r.state != DEAD or self.busy(name, sid) or not m.readers(sid):
                        continue
                    if r.node not in probed:
                        try:
                            await self.pool.node(r.node).list_shards(PROBE_TIMEOUT)
                            probed[r.node] = True
                        except QuiverError:
                            probed[r.node] = False
                    if probed[r.node]:
                        t = _transfer(name, sid, "", r.node, False)
                        t["catch_up"] = True
                        async with self._plan:
                            if not self.busy(name, sid):
                                await self._submit("catch-up", f"catch up shard {sid} of {name!r} on {r.node}",
                                                   [t])

    async def _sweep_orphans(self) -> None:
        """Drop replicas a node holds that no placement points to: what a node kept while it was
        unreachable when its replica was moved away or its collection deleted. A replica must
        look orphaned in two sweeps in a row (a transfer target exists on its node a moment
        before the placement names it; those of running operations are skipped anyway)."""
        seen: set[tuple[str, str, int]] = set()
        for node in sorted(self.meta.nodes):
            try:
                shards = await self.pool.node(node).list_shards(PROBE_TIMEOUT)
            except QuiverError:
                continue
            for st in shards:
                name, sid = st["collection"], st["shard_id"]
                m = self.meta.collections.get(name)
                if m is not None and (m.state == "creating" or (sid < m.shard_number and
                                                                 node in m.placement[sid])):
                    continue
                if self.busy(name, sid):
                    continue
                seen.add((node, name, sid))
        for node, name, sid in sorted(seen & self._orphans):
            log.warning("dropping an orphaned replica no placement points to",
                        extra={"node": node, "collection": name, "shard": sid})
            await self._drop_quietly(node, name, sid)
        self._orphans = seen - self._orphans
