"""Where the coordinator keeps its metadata: a small key-value store with revisions.

Two backends behind one interface (:class:`MetaBackend`):

* :class:`LmdbBackend`, the coordinator's own LMDB environment: the embedded
  default, for one coordinator;
* ``coordinator.etcd.EtcdBackend``: etcd, for clusters, where several
  stateless coordinators share the metadata, learn of each other's changes
  through watches and serialise changes with transactions.

The model is etcd's, reduced to what the coordinator uses: string keys, bytes
values, a store-wide revision that every committed change increments, each
key's ``mod_revision`` (the revision that last wrote it), a transaction that
commits its puts and deletes only if every compared key still has the
expected ``mod_revision`` (0 = the key must be absent), and a watch that
delivers every change under a prefix after a given revision, in order.
Leases tie a key to its writer's liveness (a coordinator's registration
disappears when it stops renewing).
"""

from __future__ import annotations

import abc
import asyncio
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

import lmdb

#: LMDB map size of the metadata store: a collection record is ~1 KB.
META_MAP_SIZE = 64 << 20


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int


@dataclass(frozen=True)
class Event:
    """One change seen by a watch: ``value`` is None for a delete."""

    key: str
    value: bytes | None
    mod_revision: int


class MetaBackend(abc.ABC):
    """The interface both backends implement (all coroutines run in the coordinator's loop)."""

    @abc.abstractmethod
    async def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` (sorted by key) and the store's revision at that read."""

    @abc.abstractmethod
    async def txn(self, compares: list[tuple[str, int]], puts: list[tuple[str, bytes]],
                  deletes: list[str], lease: int = 0) -> int | None:
        """Commit ``puts`` and ``deletes`` if each ``(key, mod_revision)`` in ``compares`` still
        holds (0: the key is absent). Returns the new revision, or None if a compare failed
        (nothing written). ``lease`` (0 = none) is attached to the puts."""

    @abc.abstractmethod
    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[list[Event]]:
        """Changes under ``prefix`` with ``mod_revision >= start_revision``, in commit order,
        grouped as committed; runs until the backend closes (or the iterator is closed)."""

    @abc.abstractmethod
    async def grant_lease(self, ttl_seconds: int) -> int:
        """A lease kept alive by the backend until ``revoke_lease`` or ``close``; keys put under it
        are deleted when it expires (the process died)."""

    @abc.abstractmethod
    async def revoke_lease(self, lease: int) -> None:
        """End a lease now, deleting its keys."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop watches and lease renewals and release the connection or environment."""


_REV = struct.Struct("<Q")
_REVISION_KEY = b"\x00revision"


class LmdbBackend(MetaBackend):
    """The metadata in the coordinator's own LMDB (``<data_dir>/meta``), for one coordinator.

    Every value is stored with its mod_revision in front (8 bytes); the store's
    revision is a counter under a reserved key. A transaction is one LMDB write
    transaction, so it is atomic and durable on return. Watches are fed in
    process after each commit. Leases are accepted but never expire on their own
    (the only writer is this process; ``revoke_lease`` and ``close`` delete
    their keys).
    """

    def __init__(self, data_dir: str | os.PathLike):
        path = Path(data_dir) / "meta"
        path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(path), map_size=META_MAP_SIZE, max_dbs=2, subdir=True)
        self.db = self.env.open_db(b"kv")
        self._watchers: list[tuple[str, asyncio.Queue]] = []
        self._leases: dict[int, set[str]] = {}
        self._next_lease = 1
        self._closed = False

    def _revision(self, txn) -> int:
        raw = txn.get(_REVISION_KEY, db=self.db)
        return _REV.unpack(raw)[0] if raw else 0

    async def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        out = []
        p = prefix.encode()
        with self.env.begin(db=self.db) as txn:
            rev = self._revision(txn)
            cur = txn.cursor()
            if cur.set_range(p):
                for k, v in cur:
                    if not k.startswith(p):
                        break
                    if k == _REVISION_KEY:  # the store's own counter, not a key of the caller's
                        continue
                    out.append(KeyValue(k.decode(), bytes(v[8:]), _REV.unpack(v[:8])[0]))
        return out, rev

    async def txn(self, compares, puts, deletes, lease: int = 0) -> int | None:
        events = []
        with self.env.begin(db=self.db, write=True) as txn:
            for key, want in compares:
                raw = txn.get(key.encode())
                have = _REV.unpack(raw[:8])[0] if raw else 0
                if have != want:
                    return None
            rev = self._revision(txn) + 1
            for key, value in puts:
                txn.put(key.encode(), _REV.pack(rev) + value)
                events.append(Event(key, value, rev))
            for key in deletes:
                if txn.delete(key.encode()):
                    events.append(Event(key, None, rev))
            txn.put(_REVISION_KEY, _REV.pack(rev))
        # as in etcd, a put attaches its key to its lease (or to none), detaching it from
        # any lease it was under, and a deleted key belongs to no lease
        for key in [k for k, _ in puts] + list(deletes):
            for keys in self._leases.values():
                keys.discard(key)
        if lease:
            self._leases.setdefault(lease, set()).update(k for k, _ in puts)
        self._publish(events)
        return rev

    def _publish(self, events: list[Event]) -> None:
        for prefix, queue in self._watchers:
            mine = [e for e in events if e.key.startswith(prefix)]
            if mine:
                queue.put_nowait(mine)

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[list[Event]]:
        queue: asyncio.Queue = asyncio.Queue()
        entry = (prefix, queue)
        self._watchers.append(entry)
        try:
            # Changes committed between the caller's read and now were not queued: LMDB keeps
            # no history, so replay the current value of keys changed since start_revision
            # (deletes in that gap are invisible here; the one writer is this process, which
            # subscribes before it writes).
            current, _ = await self.range(prefix)
            missed = [Event(kv.key, kv.value, kv.mod_revision) for kv in current
                      if kv.mod_revision >= start_revision]
            if missed:
                yield sorted(missed, key=lambda e: e.mod_revision)
            while not self._closed:
                batch = await queue.get()
                if batch is None:
                    return
                batch = [e for e in batch if e.mod_revision >= start_revision]
                if batch:
                    yield batch
        finally:
            if entry in self._watchers:
                self._watchers.remove(entry)

    async def grant_lease(self, ttl_seconds: int) -> int:
        lease = self._next_lease
        self._next_lease += 1
        self._leases[lease] = set()
        return lease

    async def revoke_lease(self, lease: int) -> None:
        keys = self._leases.pop(lease, set())
        if keys and not self._closed:
            await self.txn([], [], sorted(keys))

    async def close(self) -> None:
        if self._closed:
            return
        for lease in list(self._leases):
            await self.revoke_lease(lease)
        self._closed = True
        for _, queue in self._watchers:
            queue.put_nowait(None)
        self.env.close()
