"""The cluster's metadata as the coordinator sees it: collections, nodes, operations.

Records are JSON values in a :class:`~coordinator.metastore.MetaBackend`
under three prefixes: ``collections/<name>``, ``nodes/<address>`` and
``operations/<id>``. Each coordinator keeps all of them in memory, loaded at
start and kept current by one watch, so the request path never reads the
store. Changes are compare-and-swap transactions on the record's
``mod_revision`` (:meth:`Metadata.update`), retried on conflict, so
coordinators sharing an etcd serialise their changes without a lock.

Each coordinator also registers itself under ``coordinators/<id>`` (a lease
deletes the key when it dies) with the last revision it has applied. A change
that others must act on before the next step (a transfer target that must
receive every write before the copy starts; a replica that must stop serving
reads before it is dropped) waits for every registered coordinator to reach
its revision: :meth:`Metadata.fence`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Callable

from coordinator.metastore import Event, MetaBackend
from coordinator.placement import CollectionMeta
from shard.errors import DeadlineExceeded, Unavailable

log = logging.getLogger("quiver.coordinator")

COLLECTIONS, NODES, OPERATIONS, COORDINATORS = "collections/", "nodes/", "operations/", "coordinators/"
#: Node states: active nodes receive new replicas; draining ones are being emptied.
NODE_ACTIVE, NODE_DRAINING = "active", "draining"
#: A coordinator's registration outlives it by this long (etcd lease TTL).
LEASE_TTL = 10
#: How many times an update retries after losing a compare-and-swap race.
CAS_ATTEMPTS = 50


@dataclass(frozen=True)
class NodeMeta:
    address: str
    state: str = NODE_ACTIVE

    def to_json(self) -> bytes:
        return json.dumps({"address": self.address, "state": self.state}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "NodeMeta":
        d = json.loads(raw)
        return cls(d["address"], d.get("state", NODE_ACTIVE))


def _decode(key: str, value: bytes):
    if key.startswith(COLLECTIONS):
        return CollectionMeta.from_json(value)
    if key.startswith(NODES):
        return NodeMeta.from_json(value)
    return json.loads(value)


def _encode(value) -> bytes:
    if isinstance(value, (CollectionMeta, NodeMeta)):
        return value.to_json()
    return json.dumps(value, sort_keys=True).encode()


class Metadata:
    """In-memory view of the metadata, kept current by a watch; changes by CAS."""

    def __init__(self, backend: MetaBackend, coordinator_id: str, address: str = ""):
        self.backend = backend
        self.id = coordinator_id
        self.address = address
        self.collections: dict[str, CollectionMeta] = {}
        self.nodes: dict[str, NodeMeta] = {}
        self.operations: dict[str, dict] = {}
        self.coordinators: dict[str, dict] = {}
        self._mod: dict[str, int] = {}  # key -> mod_revision of the value held
        self.revision = 0
        self._listeners: list[Callable[[str], None]] = []
        self._watch_task: asyncio.Task | None = None
        self._lease = 0
        self._ack_task: asyncio.Task | None = None
        self._ack_wanted = False
        self._inflight: dict[int, int] = {}  # revision a request was routed at -> requests in flight
        self.suspended = False  # our registration lapsed: take no writes until re-registered
        self._rejoin: asyncio.Task | None = None
        self._published = 0  # the revision our registration last said we had applied
        self._needed = 0  # the newest applied change other coordinators may fence on

    @property
    def kind(self) -> str:
        return type(self.backend).__name__.replace("Backend", "").lower()

    def on_change(self, fn: Callable[[str], None]) -> None:
        """Call ``fn(key)`` after each applied change (the service drops cached shard clients)."""
        self._listeners.append(fn)

    async def start(self) -> None:
        rev = await self._reload()
        self.revision = rev
        if hasattr(self.backend, "on_lease_lost"):
            self.backend.on_lease_lost = self._lease_lost
        self._lease = await self.backend.grant_lease(LEASE_TTL)
        await self._register()
        self._watch_task = asyncio.ensure_future(self._watch(rev + 1))

    def _lease_lost(self, lease: int) -> None:
        """Our registration is gone (or may be): other coordinators no longer wait for us in their
        fences, so a write we route could miss a replica they just added. Refuse writes until we
        hold a new lease and have reloaded everything."""
        if lease != self._lease or self.suspended:
            return
        log.error("this coordinator's registration in the metadata store lapsed; refusing writes until it "
                  "re-registers", extra={"coordinator_id": self.id})
        self.suspended = True
        self._rejoin = asyncio.ensure_future(self._reregister())

    async def _reregister(self) -> None:
        while True:
            try:
                self._lease = await self.backend.grant_lease(LEASE_TTL)
                rev = await self._reload()
                self._advance(rev, ack=False)
                self._needed = max(self._needed, rev)
                await self._register()
                self.suspended = False
                log.info("coordinator re-registered in the metadata store", extra={"coordinator_id": self.id})
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the store is still unreachable: try again
                log.warning("re-registering failed; retrying", extra={"error": str(e)})
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        for t in (self._watch_task, self._ack_task, self._rejoin):
            if t is not None:
                t.cancel()
                try:
                    await t
                except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                    pass
        if self._lease:
            try:
                await self.backend.revoke_lease(self._lease)
            except Exception as e:  # noqa: BLE001 - the lease expires on its own
                log.warning("could not revoke the coordinator's lease", extra={"error": str(e)})
        await self.backend.close()

    # ------------------------------------------------------------ applying

    def _apply(self, key: str, value: bytes | None, mod_revision: int) -> bool:
        """Apply one change if it is newer than what is held; True if applied."""
        held = self._mod.get(key, 0)  # deletes leave their revision here too (a tombstone)
        if mod_revision < held or (mod_revision == held and value is not None):
            return False
        found = self._table(key)
        if found is None:
            return False
        table, name = found
        if value is None:
            table.pop(name, None)
        else:
            table[name] = _decode(key, value)
        self._mod[key] = mod_revision
        for fn in self._listeners:
            fn(key)
        return True

    async def _watch(self, start: int) -> None:
        while True:
            try:
                async for batch in self.backend.watch("", start):
                    self._apply_events(batch)
                    start = self.revision + 1
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - reload and watch again
                log.warning("metadata watch failed; reloading", extra={"error": str(e)})
                await asyncio.sleep(0.5)
                try:
                    rev = await self._reload()
                except Exception:  # noqa: BLE001 - the store is down; retry
                    continue
                self._advance(rev)
                start = rev + 1

    def _table(self, key: str) -> tuple[dict, str] | None:
        """The in-memory table a key belongs to, and the record's name in it."""
        for prefix, table in ((COLLECTIONS, self.collections), (NODES, self.nodes),
                              (OPERATIONS, self.operations), (COORDINATORS, self.coordinators)):
            if key.startswith(prefix):
                return table, key[len(prefix):]
        return None

    def _held(self, key: str) -> bool:
        found = self._table(key)
        return found is not None and found[1] in found[0]

    async def _reload(self) -> int:
        """Replace the whole view with the store's current content; returns its revision."""
        kvs, rev = await self.backend.range("")
        keep = {kv.key for kv in kvs}
        for key in [k for k in self._mod if k not in keep and self._held(k)]:
            self._apply(key, None, rev)
        for kv in kvs:
            self._apply(kv.key, kv.value, kv.mod_revision)
        return rev

    def _apply_events(self, events: list[Event]) -> None:
        shared = False
        for e in events:
            if self._apply(e.key, e.value, e.mod_revision) and not e.key.startswith(COORDINATORS):
                shared = True
        self._advance(max(e.mod_revision for e in events), ack=shared)

    def _advance(self, revision: int, ack: bool = True) -> None:
        """Note that changes up to ``revision`` are applied. ``ack``: one of them matters to
        other coordinators' fences (not just a coordinator's registration), so publish it."""
        if revision > self.revision:
            self.revision = revision
        if ack and revision > self._needed:
            self._needed = revision
            self._maybe_ack()

    def _maybe_ack(self) -> None:
        # Publishing writes the store (a new revision), so only a change that others wait
        # for is acknowledged: acknowledging registrations would feed on itself.
        if self._published < self._needed and self.acked_revision() > self._published:
            self._schedule_ack()

    def _schedule_ack(self) -> None:
        """Publish the applied revision (coalesced: one write in flight at a time)."""
        self._ack_wanted = True
        if self._ack_task is None or self._ack_task.done():
            self._ack_task = asyncio.ensure_future(self._ack_loop())

    async def _ack_loop(self) -> None:
        while self._ack_wanted:
            self._ack_wanted = False
            try:
                await self._register()
            except Exception as e:  # noqa: BLE001 - the next change or the fence's wait retries
                log.warning("could not publish the applied metadata revision", extra={"error": str(e)})
                await asyncio.sleep(0.2)

    # ------------------------------------------------- requests in flight

    def begin(self) -> int:
        """A request is routed with the metadata as of now; returns the token for :meth:`end`."""
        rev = self.revision
        self._inflight[rev] = self._inflight.get(rev, 0) + 1
        return rev

    def end(self, rev: int) -> None:
        left = self._inflight[rev] - 1
        if left:
            self._inflight[rev] = left
            return
        del self._inflight[rev]
        if self._published < self._needed:
            self._maybe_ack()

    def acked_revision(self) -> int:
        """The newest revision every request still in flight was routed with (what the fence needs:
        a write routed with older placement could still land where the new one no longer looks)."""
        return min(self.revision, min(self._inflight)) if self._inflight else self.revision

    async def _register(self) -> None:
        acked = self.acked_revision()
        rec = {"id": self.id, "address": self.address, "revision": acked, "at": time.time()}
        self._published = max(self._published, acked)
        await self.backend.txn([], [(COORDINATORS + self.id, _encode(rec))], [], lease=self._lease)

    # ------------------------------------------------------------ changing

    async def update(self, key: str, fn: Callable[[object | None], object | None]) -> object | None:
        """Set ``key`` to ``fn(current)`` (None deletes) with compare-and-swap, retrying on conflict.

        ``fn`` gets the record as stored now (None if absent) and may raise
        (e.g. :class:`Conflict`, a QuiverError) to refuse. Returns the new
        value. The change is applied to this coordinator's view before return.
        """
        for _ in range(CAS_ATTEMPTS):
            kvs, _ = await self.backend.range(key)
            cur = next((kv for kv in kvs if kv.key == key), None)
            old = None if cur is None else _decode(key, cur.value)
            new = fn(old)
            if new is None and old is None:
                return None
            puts = [] if new is None else [(key, _encode(new))]
            rev = await self.backend.txn([(key, 0 if cur is None else cur.mod_revision)], puts,
                                         [key] if new is None else [])
            if rev is not None:
                self._apply(key, None if new is None else puts[0][1], rev)
                self._advance(rev, ack=False)  # our own change: only others need to acknowledge it
                return new
        raise Unavailable(f"metadata key {key!r} kept changing under {CAS_ATTEMPTS} attempts to update it")

    async def put_collection(self, meta: CollectionMeta) -> None:
        await self.update(COLLECTIONS + meta.name, lambda _: meta)

    async def fence(self, revision: int | None = None, timeout: float = 15.0) -> None:
        """Wait until every registered coordinator has applied ``revision`` (default: ours now)."""
        revision = self.revision if revision is None else revision
        deadline = time.monotonic() + timeout
        while self.acked_revision() < revision:  # our own requests routed before the change
            if time.monotonic() > deadline:
                raise DeadlineExceeded(f"requests routed before metadata revision {revision} still run "
                                       f"after {timeout:g} s")
            await asyncio.sleep(0.01)
        while True:
            kvs, _ = await self.backend.range(COORDINATORS)
            behind = []
            for kv in kvs:
                rec = json.loads(kv.value)
                if rec.get("id") != self.id and int(rec.get("revision", 0)) < revision:
                    behind.append(rec.get("address") or rec.get("id"))
            if not behind:
                return
            if time.monotonic() > deadline:
                raise DeadlineExceeded(f"coordinators {', '.join(map(str, behind))} have not applied metadata "
                                       f"revision {revision} within {timeout:g} s")
            await asyncio.sleep(0.05)

    def live_coordinators(self) -> list[dict]:
        return sorted(self.coordinators.values(), key=lambda r: str(r.get("id")))
