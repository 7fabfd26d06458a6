"""The coordinator's logic, in plain Python types (the gRPC server is a thin layer on top).

Collections and their shard placement live in the metadata store. A point
goes to shard ``shard_of(id)``; a search goes to every shard at once and the
candidates are merged by score (``merge_from_shards``), which is exact as long
as shards return exact (rescored) scores, and close when they return the
codes' estimates, which the engine puts on the exact scale.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import uuid
from dataclasses import dataclass, field

import numpy as np

from coordinator.fanout import FAILOVER, first_error, read_shards, settle, write_shards
from coordinator.merge import merge_from_shards
from coordinator.metadata import COLLECTIONS, NODE_ACTIVE, NODES, Metadata, NodeMeta
from coordinator.metastore import LmdbBackend, MetaBackend
from coordinator.operations import Operations
from coordinator.placement import ACTIVE, DEAD, CollectionMeta, Replica, place_shards, replica_load, shard_of
from coordinator.shard_client import NodePool, RemoteShard
from quiver.convert import SearchSpec, config_to_json
from quiver.ids import UUID_PAYLOAD_KEY, IdBatch, is_uuid_id
from shard.config import CollectionConfig, oversampled_top
from shard.errors import (AlreadyExists, DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound, QuiverError,
                          Unavailable)
from shard.node import ShardPoints, ShardSearch, check_name, decode_payload, encode_payload

log = logging.getLogger("quiver.coordinator")

#: Ask the shards for payloads / vectors along with the search when they
#: return at most this many candidates per winner in total; above it, search
#: without them and fetch the winners' afterwards (one more round trip, but
#: payloads and vectors of losing candidates never travel).
INLINE_FETCH_FACTOR = 2

#: Deepest nesting of objects and arrays a payload may have. Deeper documents are
#: refused with INVALID_ARGUMENT: they are never data anyone needs, and around
#: 1,000 levels Python's JSON parser and serializer hit the recursion limit.
MAX_PAYLOAD_DEPTH = 64

#: What valid JSON text may hold that a shard cannot store: a UTF-16 surrogate
#: escape (\ud800-\udfff; a lone one is not a Unicode character) or a number
#: that overflows float64 to Infinity (1e400). Only payloads matching this (rare:
#: a digit before e/E, or 300 digits in a row) pay for the re-encoding check.
_SUSPECT_PAYLOAD = re.compile(rb"\\u[dD][89a-fA-F]|[0-9][eE]|[0-9]{300}")


@dataclass
class Points:
    """Points (or one query's hits) as the coordinator returns them, as columns.

    ids: engine ids uint64 (k,); uuids: None, or k strings with the UUID at
    UUID positions and "" elsewhere; scores float32 (k,) for hits;
    payloads: k JSON bytes (b"" = none) when asked for; vectors (k, d).
    """

    ids: np.ndarray
    uuids: list[str] | None = None
    scores: np.ndarray | None = None
    payloads: list[bytes] | None = None
    vectors: np.ndarray | None = None


@dataclass
class ReplicaStatus:
    shard_id: int
    node: str
    stats: dict | None = None
    error: str = ""
    state: str = ACTIVE


@dataclass
class CollectionStatus:
    meta: CollectionMeta
    replicas: list[ReplicaStatus] = field(default_factory=list)

    @property
    def status(self) -> str:
        """green: every shard has replication_factor active replicas answering; yellow: every
        shard has at least one; red: some shard has none (its reads fail)."""
        up = {}
        for r in self.replicas:
            up.setdefault(r.shard_id, []).append(r.stats is not None and r.state == ACTIVE)
        if all(sum(v) >= self.meta.replication_factor for v in up.values()):
            return "green"
        return "yellow" if all(any(v) for v in up.values()) else "red"

    @property
    def points(self) -> int:
        seen: dict[int, int] = {}
        for r in self.replicas:
            if r.stats is not None and r.state == ACTIVE:
                seen.setdefault(r.shard_id, r.stats["points"])
        return sum(seen.values())


def _claim(cur: CollectionMeta | None, expected: CollectionMeta | None, new: CollectionMeta) -> CollectionMeta:
    """Compare-and-swap body of a create: another coordinator may have created the name meanwhile."""
    if cur is not None and (expected is None or cur.state != "creating"):
        raise AlreadyExists(f"collection {new.name!r} already exists")
    return new


def _parse_payload(b: bytes, i: int) -> dict | None:
    """``decode_payload`` plus what every shard must be able to store, checked here so a
    batch is refused whole: nesting at most MAX_PAYLOAD_DEPTH levels, strings that are
    valid Unicode (a lone surrogate would make the point's payload unencodable on every
    read) and finite numbers (a shard refuses Infinity: only its part would be lost)."""
    try:
        p = decode_payload(b, i)
    except RecursionError:  # the parser's own recursion limit, far above ours
        raise InvalidArgument(f"payload of point {i} is nested deeper than {MAX_PAYLOAD_DEPTH} levels") from None
    if p is None:
        return None
    if b.count(b"[") + b.count(b"{") > MAX_PAYLOAD_DEPTH and _depth_exceeds(p, MAX_PAYLOAD_DEPTH):
        raise InvalidArgument(f"payload of point {i} is nested deeper than {MAX_PAYLOAD_DEPTH} levels")
    if _SUSPECT_PAYLOAD.search(b):
        try:
            json.dumps(p, allow_nan=False, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise InvalidArgument(f"payload of point {i} holds a lone UTF-16 surrogate escape (\\ud800-\\udfff), "
                                  "which is not a Unicode character") from None
        except ValueError:
            raise InvalidArgument(f"payload of point {i} holds a number too large for a float64 "
                                  "(it would be Infinity, which is not JSON)") from None
    return p


def _depth_exceeds(value, limit: int) -> bool:
    """True if ``value`` (parsed JSON) nests objects and arrays more than ``limit`` deep (no recursion)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if d > limit:
            return True
        children = v.values() if isinstance(v, dict) else v
        stack.extend((c, d + 1) for c in children if isinstance(c, (dict, list)))
    return False


class ShardSet:
    """One collection's replicas as clients, per shard: who serves reads, who takes writes."""

    __slots__ = ("meta", "readers", "writers")

    def __init__(self, meta: CollectionMeta, pool: NodePool):
        self.meta = meta
        self.readers: list[list[RemoteShard]] = []
        self.writers: list[list[RemoteShard]] = []
        for sid, reps in enumerate(meta.replicas):
            shards = {r.node: pool.shard(r.node, meta.name, sid) for r in reps}
            self.readers.append([shards[n] for n in meta.readers(sid)])
            self.writers.append([shards[n] for n in meta.writers(sid)])


class Coordinator:
    """Holds collections and placement; routes writes, fans out reads, merges.

    Create it in the event loop that serves it and ``await start()`` before
    use (``coordinator.server.create_server`` does).
    """

    def __init__(self, data_dir: str, shard_nodes: list[str], *, shard_timeout: float = 10.0,
                 write_timeout: float = 300.0, max_message_bytes: int = 64 << 20,
                 metadata: MetaBackend | None = None, coordinator_id: str = "", address: str = "",
                 hedge_after: float | None = None, repair_interval: float = 1.0):
        """shard_timeout caps each read call to a shard, write_timeout each write or
        shard create/drop (a write may retrain the shard's index); a client's
        shorter deadline wins over both. ``metadata``: the store shared with other
        coordinators (etcd); default, this coordinator's own LMDB under data_dir.
        ``shard_nodes`` are added to the node registry at start (if absent).
        ``hedge_after``: seconds after which a read also asks a second replica.
        ``repair_interval``: seconds between checks for dead replicas to catch up."""
        self.seed_nodes = [n.strip() for n in shard_nodes if n.strip()]
        self.pool = NodePool(max_message_bytes, shard_timeout, write_timeout)
        shared = metadata is not None
        self.meta = Metadata(metadata if shared else LmdbBackend(data_dir),
                             coordinator_id or (uuid.uuid4().hex[:12] if shared else "local"), address)
        self.hedge_after = hedge_after
        self.repair_interval = repair_interval
        self._sets: dict[str, ShardSet] = {}
        self._admin = asyncio.Lock()  # create / delete
        self._uuid_writes: dict[str, asyncio.Lock] = {}
        self._turn = itertools.count()
        self.ops: Operations | None = None
        self._started = False

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.meta.on_change(self._changed)
        await self.meta.start()
        for addr in self.seed_nodes:
            if addr not in self.meta.nodes:
                await self.meta.update(NODES + addr, lambda old, a=addr: old or NodeMeta(a))
        self.ops = Operations(self)
        await self.ops.start()
        log.info("coordinator ready", extra={"collections": sorted(self.meta.collections), "nodes": self.nodes,
                                             "metadata": self.meta.kind, "coordinator_id": self.meta.id})

    async def close(self) -> None:
        if self.ops is not None:
            await self.ops.close()
        await self.pool.close()
        await self.meta.close()

    # ---------------------------------------------------------- metadata

    @property
    def nodes(self) -> list[str]:
        """Active nodes (new replicas go there): the seed nodes in their order, then the rest."""
        rank = {n: i for i, n in enumerate(self.seed_nodes)}
        active = [a for a, n in self.meta.nodes.items() if n.state == NODE_ACTIVE]
        return sorted(active, key=lambda a: (rank.get(a, len(rank)), a))

    def _changed(self, key: str) -> None:
        if key.startswith(COLLECTIONS):
            self._sets.pop(key[len(COLLECTIONS):], None)

    def _meta(self, name: str) -> CollectionMeta:
        meta = self.meta.collections.get(name)
        if meta is None or meta.state != "ready":
            raise NotFound(f"collection {name!r} does not exist")
        return meta

    def _set_of(self, meta: CollectionMeta) -> ShardSet:
        """The collection's replicas as clients, from its current record (``meta`` may be one a
        request fetched before an await: a stale copy must not be cached as the routing)."""
        st = self._sets.get(meta.name)
        if st is None:
            st = self._sets[meta.name] = ShardSet(self.meta.collections.get(meta.name, meta), self.pool)
        return st

    def _shards(self, meta: CollectionMeta) -> list[list[RemoteShard]]:
        """Each shard's replicas that serve reads."""
        return self._set_of(meta).readers

    async def _set(self, meta: CollectionMeta | None, name: str) -> None:
        await self.meta.update(COLLECTIONS + name, lambda _: meta)

    def list_collections(self) -> list[str]:
        return sorted(n for n, m in self.meta.collections.items() if m.state == "ready")

    async def create_collection(self, name: str, config: CollectionConfig, shard_number: int = 0,
                                replication_factor: int = 0, write_consistency: int = 0,
                                hold: bool = False) -> CollectionMeta:
        """Create a collection: place its shards, create them on their nodes, then record it ready.

        ``hold``: leave it "creating" (not serving) for the caller to fill and
        then ``finish_create`` (a restore does).

        A create that fails half way leaves the record "creating" only if some
        shard could not be rolled back; creating it again resumes, deleting it
        cleans up.
        """
        check_name(name)
        shard_number = int(shard_number) or max(1, len(self.nodes))
        replication_factor = int(replication_factor) or 1
        write_consistency = int(write_consistency)
        if not 0 <= write_consistency <= replication_factor:
            raise InvalidArgument(f"write_consistency must be in [0, replication_factor={replication_factor}] "
                                  f"(0 = every live replica), got {write_consistency}")
        async with self._admin:
            old = self.meta.collections.get(name)
            if old is not None and old.state != "creating":
                raise AlreadyExists(f"collection {name!r} already exists")
            resume = (old is not None and old.config == config and old.shard_number == shard_number
                      and old.replication_factor == replication_factor)
            if old is not None and not resume:
                await self._drop_shards(old)
            if resume:
                placement = old.placement
            else:
                placement = place_shards(shard_number, replication_factor, self.nodes,
                                         replica_load(self.meta.collections.values()))
            meta = CollectionMeta.placed(name, config, replication_factor, placement, "creating", write_consistency)
            await self.meta.update(COLLECTIONS + name, lambda cur: _claim(cur, old, meta))
            cfg = config_to_json(config)
            err = first_error(await asyncio.gather(*(
                settle(self.pool.node(addr).create_shard(name, sid, cfg, exist_ok=resume))
                for sid, addrs in enumerate(placement) for addr in addrs)))
            if err is not None:
                try:
                    await self._drop_shards(meta)
                    await self._set(None, name)
                except QuiverError as e:
                    log.warning("create rollback incomplete", extra={"collection": name, "error": str(e)})
                raise err
            if not hold:
                meta = meta.with_state("ready")
                await self._set(meta, name)
        log.info("collection created", extra={"collection": name, "placement": [list(p) for p in placement]})
        return meta

    async def finish_create(self, meta: CollectionMeta) -> None:
        """Let a collection created with ``hold`` serve."""
        def fn(cur):
            if cur is None or cur.state != "creating":
                raise NotFound(f"collection {meta.name!r} is no longer being created")
            return cur.with_state("ready")
        await self.meta.update(COLLECTIONS + meta.name, fn)

    async def _drop_shards(self, meta: CollectionMeta) -> None:
        err = first_error(await asyncio.gather(*(
            settle(self.pool.node(addr).drop_shard(meta.name, sid))
            for sid, addrs in enumerate(meta.placement) for addr in addrs)))
        if err is not None:
            raise err

    async def delete_collection(self, name: str) -> None:
        """Drop every shard, then forget the collection. If a node is down the
        collection stays "deleting" (invisible) and deleting again finishes."""
        async with self._admin:
            meta = self.meta.collections.get(name)
            if meta is None:
                raise NotFound(f"collection {name!r} does not exist")
            if self.ops is not None and self.ops.busy(name):
                raise FailedPrecondition(f"collection {name!r} has a shard transfer running; "
                                         "wait for it (quiver admin operations list) and delete again")
            await self._set(meta.with_state("deleting"), name)
            await self.meta.fence()  # no coordinator routes to it any more
            await self._drop_shards(meta)
            await self._set(None, name)
        log.info("collection deleted", extra={"collection": name})

    async def collection_status(self, name: str, timeout: float | None = None) -> CollectionStatus:
        meta = self._meta(name)
        pairs = [(sid, rep) for sid, reps in enumerate(meta.replicas) for rep in reps]
        got = await asyncio.gather(*(settle(self.pool.shard(rep.node, name, sid).stats(timeout))
                                     for sid, rep in pairs))
        out = CollectionStatus(meta)
        for (sid, rep), r in zip(pairs, got):
            if isinstance(r, QuiverError):
                out.replicas.append(ReplicaStatus(sid, rep.node, None, str(r), rep.state))
            else:
                out.replicas.append(ReplicaStatus(sid, rep.node, r, "", rep.state))
        return out

    # -------------------------------------------------------- validation

    @staticmethod
    def _check_vectors(meta: CollectionMeta, x: np.ndarray, what: str) -> np.ndarray:
        if x.ndim != 2 or (x.size and x.shape[1] != meta.config.dim):
            got = x.shape[1] if x.ndim == 2 else x.shape
            raise InvalidArgument(f"{what} dimension is {got}, collection {meta.name!r} has {meta.config.dim}")
        finite = np.isfinite(x).all(axis=1)
        if not finite.all():
            raise InvalidArgument(f"{what} {int(np.argmin(finite))} contains NaN or Inf")
        if meta.config.distance == "cosine":
            zero = ~(x != 0).any(axis=1)
            if zero.any():
                raise InvalidArgument(f"{what} {int(np.argmax(zero))} is all zeros, "
                                      "which has no direction under cosine distance")
        return x

    @staticmethod
    def _check_payloads(payloads: list[bytes] | None, ids: IdBatch) -> list[bytes] | None:
        """Validate every payload (a JSON object, no reserved key); add the UUID key to UUID points."""
        n = len(ids)
        if payloads is not None and len(payloads) not in (0, n):
            raise InvalidArgument(f"got {len(payloads)} payloads for {n} points; give one per point or none")
        if not payloads:
            if ids.uuids is None:
                return None
            payloads = [b""] * n
        out = list(payloads)
        for i, b in enumerate(payloads):
            p = _parse_payload(b, i)
            if p is not None and UUID_PAYLOAD_KEY in p:
                raise InvalidArgument(f"payload of point {i} uses the reserved key {UUID_PAYLOAD_KEY!r}")
            if ids.uuids is not None and ids.uuids[i]:
                p = p or {}
                p[UUID_PAYLOAD_KEY] = ids.uuids[i]
                out[i] = encode_payload(p)
        return out

    # ------------------------------------------------------------- points

    @staticmethod
    def _route(ids: np.ndarray, shard_number: int) -> dict[int, np.ndarray]:
        """shard index -> rows of ``ids`` it holds (in request order)."""
        if shard_number == 1:
            return {0: np.arange(len(ids))} if len(ids) else {}
        sid = shard_of(ids, shard_number)
        order = np.argsort(sid, kind="stable")
        bounds = np.searchsorted(sid[order], np.arange(shard_number + 1))
        return {s: order[bounds[s]:bounds[s + 1]] for s in range(shard_number) if bounds[s + 1] > bounds[s]}

    async def upsert(self, name: str, ids: IdBatch, vectors: np.ndarray, payloads: list[bytes] | None,
                     timeout: float | None = None) -> int:
        """Validate the whole batch, then write each shard's part to all its replicas in parallel."""
        meta = self._meta(name)
        n = len(ids)
        if len(vectors) != n and not (n == 0 and vectors.size == 0):
            raise InvalidArgument(f"got {n} ids for {len(vectors)} vectors")
        if n == 0:
            return 0
        self._check_vectors(meta, vectors, "vector")
        payloads = self._check_payloads(payloads, ids)

        def write(shard, rows):
            return shard.upsert(ids.ids[rows], vectors[rows],
                                None if payloads is None else [payloads[i] for i in rows], timeout)

        routes = self._route(ids.ids, meta.shard_number)
        rev = self.meta.begin()
        try:
            if ids.uuids is None:
                await self._write(meta, write, routes)
            else:  # the collision check and the write must not interleave with another UUID write
                async with self._uuid_writes.setdefault(name, asyncio.Lock()):
                    await self._check_uuid_collisions(meta, ids, timeout)
                    await self._write(meta, write, routes)
        finally:
            self.meta.end(rev)
        return n

    async def _write(self, meta: CollectionMeta, call, routes: dict) -> dict[int, list]:
        """Send each shard's part to every replica that takes writes; enforce write_consistency.

        A shard's write is acknowledged when at least one active replica applied
        it and: (write_consistency 0) every replica that could be reached
        applied it, or (write_consistency n) n replicas did. Replicas that
        failed while another applied the write missed it: they are marked dead
        (before the acknowledgement, so they serve no stale reads) and caught
        up later. Returns shard -> outcome per writing replica.
        """
        if self.meta.suspended:
            raise Unavailable("this coordinator lost its registration in the metadata store (etcd unreachable?) "
                              "and takes no writes until it re-registers; retry, or use another coordinator")
        st = self._set_of(meta)
        writers, meta = st.writers, st.meta
        outcomes = await write_shards(writers, call, routes)
        dead, error = [], None
        for s, per in outcomes.items():
            failed = [(r, o) for r, o in zip(writers[s], per) if isinstance(o, QuiverError)]
            if not failed:
                continue
            active = set(meta.readers(s))
            if not any(r.node in active and not isinstance(o, QuiverError) for r, o in zip(writers[s], per)):
                error = error or next((o for r, o in failed if r.node in active), failed[0][1])
                continue  # no active replica took it: not acknowledged, nothing diverged that reads see
            dead += [(s, r.node) for r, _ in failed]
            applied = len(per) - len(failed)
            if meta.write_consistency and applied < meta.write_consistency:
                error = error or Unavailable(
                    f"shard {s} of {meta.name!r}: {applied} of the {meta.write_consistency} replicas that "
                    f"write_consistency requires applied the write; {failed[0][1]}")
            elif not meta.write_consistency:
                refused = [o for _, o in failed if not isinstance(o, FAILOVER)]
                error = error or (refused[0] if refused else None)
        if dead:
            await self._mark_dead(meta.name, dead)
        if error is not None:
            raise error
        return outcomes

    async def _mark_dead(self, name: str, pairs: list[tuple[int, str]]) -> None:
        """Mark replicas that missed a write dead (never a shard's last active replica)."""
        def fn(m: CollectionMeta | None):
            if m is None:
                return None
            for s, node in pairs:
                new = tuple(Replica(r.node, DEAD) if r.node == node else r for r in m.replicas[s])
                if any(r.state == ACTIVE for r in new):
                    m = m.with_shard(s, new)
            return m

        await self.meta.update(COLLECTIONS + name, fn)
        log.warning("replicas marked dead: they missed a write and will be caught up",
                    extra={"collection": name, "replicas": [f"{s}@{n}" for s, n in pairs]})

    async def _check_uuid_collisions(self, meta: CollectionMeta, ids: IdBatch, timeout: float | None) -> None:
        want: dict[int, str] = {}
        for i, u in zip(ids.ids.tolist(), ids.uuids):
            if u and want.setdefault(i, u) != u:
                raise AlreadyExists(f"UUIDs {want[i]} and {u} hash to the same 63-bit id; "
                                    "one collection cannot hold both (use another UUID)")
        stored = self._with_uuids(await self._fetch(meta, np.fromiter(want, np.uint64, len(want)), True, False,
                                                    timeout))
        for i, have in zip(stored.ids.tolist(), stored.uuids or ()):
            if have != want[i]:
                raise AlreadyExists(f"UUID {want[i]} hashes to the same 63-bit id as stored point {have}; "
                                    "one collection cannot hold both (use another UUID)")

    async def _fetch(self, meta: CollectionMeta, ids: np.ndarray, with_payload: bool, with_vector: bool,
                     timeout: float | None) -> ShardPoints:
        """Retrieve distinct ids from their shards in parallel: the found ones, in the order given."""
        routes = self._route(ids, meta.shard_number)
        rev = self.meta.begin()
        try:
            got = await read_shards(self._shards(meta),
                                    lambda sh, rows: sh.retrieve(ids[rows], with_payload, with_vector, timeout),
                                    routes, start=next(self._turn), hedge_after=self.hedge_after)
        finally:
            self.meta.end(rev)
        err = first_error(got.values())
        if err is not None:
            raise err
        parts = [got[s] for s in routes]
        if not parts:
            return ShardPoints(np.zeros(0, np.uint64), None, [] if with_payload else None,
                               np.zeros((0, meta.config.dim), np.float32) if with_vector else None)
        found = np.concatenate([p.ids for p in parts])
        by_id = np.argsort(ids, kind="stable")
        order = np.argsort(by_id[np.searchsorted(ids[by_id], found)], kind="stable")
        payloads = None
        if with_payload:
            flat = [b for p in parts for b in p.payloads]
            payloads = [flat[i] for i in order.tolist()]
        vectors = np.concatenate([p.vectors for p in parts])[order] if with_vector else None
        return ShardPoints(found[order], None, payloads, vectors)

    @staticmethod
    def _with_uuids(got: ShardPoints, with_payload: bool = False) -> Points:
        """Read UUID points' strings from their payloads and hide the reserved key.

        ``got.payloads`` must be present when any id is a UUID id.
        """
        uuid_rows = np.flatnonzero(is_uuid_id(got.ids))
        if not len(uuid_rows):
            return Points(got.ids, None, got.scores, got.payloads if with_payload else None, got.vectors)
        uuids = [""] * len(got.ids)
        payloads = list(got.payloads)
        for r in uuid_rows.tolist():
            p = decode_payload(payloads[r]) or {}
            uuids[r] = p.pop(UUID_PAYLOAD_KEY, "")
            payloads[r] = encode_payload(p) if p else b""
        return Points(got.ids, uuids, got.scores, payloads if with_payload else None, got.vectors)

    async def _verified(self, meta: CollectionMeta, ids: IdBatch, with_payload: bool, with_vector: bool,
                        timeout: float | None) -> Points:
        """The distinct points of ``ids`` that exist, in order of first appearance.

        A UUID id counts as existing only if the point stored under its hash
        holds that very UUID.
        """
        _, first = np.unique(ids.ids, return_index=True)
        keep = np.sort(first)
        got = self._with_uuids(await self._fetch(meta, ids.ids[keep], with_payload or ids.uuids is not None,
                                                 with_vector, timeout), with_payload)
        if ids.uuids is None or got.uuids is None:
            return got
        want = {i: u for i, u in zip(ids.ids.tolist(), ids.uuids) if u}
        ok = np.array([want.get(i, "") == u for i, u in zip(got.ids.tolist(), got.uuids)], bool)
        if ok.all():
            return got
        return Points(got.ids[ok], [u for u, k in zip(got.uuids, ok) if k], None,
                      None if got.payloads is None else [p for p, k in zip(got.payloads, ok) if k],
                      None if got.vectors is None else got.vectors[ok])

    async def get_points(self, name: str, ids: IdBatch, with_payload: bool, with_vector: bool,
                         timeout: float | None = None) -> Points:
        """Points found, each once, in order of first request."""
        return await self._verified(self._meta(name), ids, with_payload, with_vector, timeout)

    async def delete_points(self, name: str, ids: IdBatch, timeout: float | None = None) -> int:
        """Delete points on every replica; returns how many existed."""
        meta = self._meta(name)
        qids = np.unique(ids.ids)
        if ids.uuids is not None:  # delete a UUID id only if it holds that very UUID
            uuid_ids = is_uuid_id(qids)
            ok = (await self._verified(meta, ids, False, False, timeout)).ids
            qids = np.concatenate([qids[~uuid_ids], np.intersect1d(qids[uuid_ids], ok)])
        rev = self.meta.begin()
        try:
            outcomes = await self._write(meta, lambda sh, rows: sh.delete(qids[rows], timeout),
                                         self._route(qids, meta.shard_number))
        finally:
            self.meta.end(rev)
        return sum(max((o for o in per if not isinstance(o, QuiverError)), default=0) for per in outcomes.values())

    async def count(self, name: str, timeout: float | None = None) -> int:
        meta = self._meta(name)
        rev = self.meta.begin()
        try:
            got = await read_shards(self._shards(meta), lambda sh, _: sh.count(timeout), start=next(self._turn),
                                    hedge_after=self.hedge_after)
        finally:
            self.meta.end(rev)
        err = first_error(got.values())
        if err is not None:
            raise err
        return int(sum(got.values()))

    # ------------------------------------------------------------- search

    async def search(self, name: str, queries: np.ndarray, spec: SearchSpec,
                     timeout: float | None = None) -> tuple[list[Points], int, int, list[str]]:
        """Search every shard in parallel and merge: (hits per query, shards answered, shards
        total, why each missing shard is missing: only with allow_partial)."""
        meta = self._meta(name)
        if queries.ndim != 2 or len(queries) == 0:
            raise InvalidArgument("give at least one query vector")
        self._check_vectors(meta, queries, "query")
        if spec.offset < 0:
            raise InvalidArgument(f"offset must be >= 0, got {spec.offset}")
        k = spec.limit + spec.offset
        try:
            per_shard = oversampled_top(k, spec.oversampling)
        except InvalidArgument as e:
            raise InvalidArgument(f"{e} (limit {spec.limit} + offset {spec.offset})" if spec.offset else str(e)
                                  ) from None
        replicas = self._shards(meta)
        total = len(replicas)
        inline = total == 1 or total * per_shard <= INLINE_FETCH_FACTOR * k
        params = ShardSearch(limit=k, oversampling=spec.oversampling, rescore=spec.rescore, ignore=spec.ignore,
                             exact=spec.exact, effort=spec.effort, with_payload=inline and spec.with_payload,
                             with_vector=inline and spec.with_vector, score_threshold=spec.score_threshold)
        rev = self.meta.begin()
        try:
            got = await read_shards(replicas, lambda sh, _: sh.search(queries, params, timeout),
                                    start=next(self._turn), hedge_after=self.hedge_after)
        finally:
            self.meta.end(rev)
        answered = [s for s in range(total) if not isinstance(got[s], QuiverError)]
        if len(answered) < total:
            err = first_error(got.values())
            if not (spec.allow_partial and answered and isinstance(err, (Unavailable, DeadlineExceeded))):
                raise err
            log.warning("partial search", extra={"collection": name, "answered": len(answered), "total": total,
                                                  "error": str(err)})
        hits = []
        for qi in range(len(queries)):
            lists = [got[s][qi] for s in answered]
            m = merge_from_shards([h.ids for h in lists], [h.scores for h in lists], spec.limit, spec.offset,
                                  spec.score_threshold)
            h = ShardPoints(m.ids, m.scores)
            src = list(zip(m.shard.tolist(), m.row.tolist()))
            if params.with_payload:
                h.payloads = [lists[s].payloads[r] for s, r in src]
            if params.with_vector:
                h.vectors = np.stack([lists[s].vectors[r] for s, r in src]) if src else \
                    np.zeros((0, meta.config.dim), np.float32)
            hits.append(h)
        if not inline and (spec.with_payload or spec.with_vector):
            await self._fetch_for_winners(meta, hits, spec.with_payload, spec.with_vector, timeout)
        elif not spec.with_payload:
            await self._fetch_for_winners(meta, hits, False, False, timeout)  # UUID strings only, if any
        return [self._with_uuids(h, spec.with_payload) if h.payloads is not None else
                Points(h.ids, None, h.scores, None, h.vectors) for h in hits], len(answered), total, \
            [str(got[s]) for s in range(total) if isinstance(got[s], QuiverError)]

    async def _fetch_for_winners(self, meta: CollectionMeta, hits: list[ShardPoints], with_payload: bool,
                                 with_vector: bool, timeout: float | None) -> None:
        """Fill in the winners' payloads and vectors (and the payloads that hold UUID strings)
        with one retrieve per shard, in parallel. Winners deleted meanwhile are dropped."""
        every = with_payload or with_vector
        asked = [np.ones(len(h.ids), bool) if every else is_uuid_id(h.ids) for h in hits]
        if not any(a.any() for a in asked):  # the common case: numeric ids, nothing to fetch
            return
        ask = np.unique(np.concatenate([h.ids[a] for h, a in zip(hits, asked)]))
        need_payload = with_payload or bool(is_uuid_id(ask).any())
        got = await self._fetch(meta, ask, need_payload, with_vector, timeout)
        row = {i: r for r, i in enumerate(got.ids.tolist())}
        for h, a in zip(hits, asked):
            ids = h.ids.tolist()
            present = np.array([not x or i in row for i, x in zip(ids, a.tolist())], bool)
            if not present.all():
                h.ids, h.scores = h.ids[present], h.scores[present]
                if h.vectors is not None:
                    h.vectors = h.vectors[present]
                ids = h.ids.tolist()
            if need_payload:
                h.payloads = [got.payloads[row[i]] if i in row else b"" for i in ids]
            if with_vector:
                h.vectors = got.vectors[[row[i] for i in ids]] if ids else np.zeros((0, meta.config.dim),
                                                                                    np.float32)
