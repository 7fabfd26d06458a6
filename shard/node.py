"""The shard interface, its in-process implementation, and a node's set of shards.

A *shard* answers upsert / delete / retrieve / count / search / stats for one
shard of one collection. Two implementations share the interface
(:class:`Shard`): :class:`LocalShard` wraps a :class:`~shard.engine.ShardEngine`
in this process, and ``coordinator.shard_client.RemoteShard`` calls a shard
node over gRPC. Every method is a coroutine that returns the value or raises a
``shard.errors`` error, so the coordinator fans a call out to many shards with
``asyncio.gather``.

Across the interface, ids are uint64 arrays, vectors float32 (n, d) arrays and
payloads opaque JSON-object bytes (``b""`` = no payload): the coordinator never
parses a payload it only forwards.

A :class:`ShardNode` keeps the shards of one node, each an engine with its own
LMDB environment at ``<data_dir>/<collection>/<shard_id>/``, and reopens them
on restart.

Shard transfer, on the receiving node: ``begin_receive`` creates the shard in
*receive mode* under a token; from then on every live write (upsert, delete)
records its ids as *touched*, and ``import_points`` (the source's export)
writes only the ids not touched, so a live write always wins over the older
copy. Receive state is in memory only: a restarted node answers
``import_points`` / ``end_receive`` with FailedPrecondition and the transfer
starts over. Snapshots are compacted copies of a shard's LMDB environment,
staged under ``<data_dir>/.snapshots/``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np

from shard.config import CollectionConfig
from shard.engine import ShardEngine
from shard.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted

log = logging.getLogger("quiver.shard")

#: Collection names are directory names on the nodes and keys in the coordinator.
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Points per exported batch when the caller does not say.
EXPORT_BATCH = 1024
#: Vector bytes per exported batch at most, whatever the batch size asked
#: (keeps a message well under the 64 MiB gRPC cap at any dimension).
EXPORT_MAX_VECTOR_BYTES = 16 << 20
#: Bytes per snapshot chunk.
SNAPSHOT_CHUNK = 1 << 20
SNAPSHOT_DIR = ".snapshots"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidArgument(f"collection name {name!r} is invalid: use 1 to 64 of A-Z a-z 0-9 _ -")
    return name


@dataclass
class ShardPoints:
    """Points or hits of one shard, as columns.

    ids: uint64 (k,); scores: float32 (k,) for search hits, else None;
    payloads: k JSON-object bytes (b"" = none) when asked for, else None;
    vectors: float32 (k, d) when asked for, else None.
    """

    ids: np.ndarray
    scores: np.ndarray | None = None
    payloads: list[bytes] | None = None
    vectors: np.ndarray | None = None


@dataclass(frozen=True)
class ShardSearch:
    """Keyword arguments of ``ShardEngine.search_batch``, as one value."""

    limit: int
    oversampling: float = 1.0
    rescore: bool = True
    ignore: bool = False
    exact: bool = False
    effort: int | None = None
    with_payload: bool = False
    with_vector: bool = False
    score_threshold: float | None = None


class Shard(Protocol):
    """What the coordinator needs from one replica of one shard."""

    name: str  # "shard 1 of 'docs' on 10.0.0.7:6335", used in error messages

    async def upsert(self, ids: np.ndarray, vectors: np.ndarray, payloads: list[bytes] | None,
                     timeout: float | None = None) -> int: ...
    async def delete(self, ids: np.ndarray, timeout: float | None = None) -> int: ...
    async def retrieve(self, ids: np.ndarray, with_payload: bool, with_vector: bool,
                       timeout: float | None = None) -> ShardPoints: ...
    async def count(self, timeout: float | None = None) -> int: ...
    async def search(self, queries: np.ndarray, params: ShardSearch,
                     timeout: float | None = None) -> list[ShardPoints]: ...
    async def stats(self, timeout: float | None = None) -> dict: ...


def encode_payload(p: dict | None) -> bytes:
    return b"" if p is None else json.dumps(p, separators=(",", ":"), ensure_ascii=False).encode()


def decode_payload(b: bytes, i: int = 0) -> dict | None:
    """A payload's JSON bytes as a dict (None for b""); InvalidArgument unless it is a JSON object."""
    if not b:
        return None
    try:
        p = json.loads(b, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"payload of point {i} is not valid JSON: {e}") from None
    if not isinstance(p, dict):
        raise InvalidArgument(f"payload of point {i} must be a JSON object, got {type(p).__name__}")
    return p


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


class LocalShard:
    """A shard in this process: a ShardEngine behind the Shard interface.

    The ``*_now`` methods are the synchronous calls the shard node's handler
    threads make. The coroutines (the Shard interface) run reads inline and
    writes in a worker thread: an upsert may retrain the index for seconds,
    and searches go on meanwhile (the engine lets them).
    """

    def __init__(self, engine: ShardEngine, collection: str, shard_id: int, receive_token: str | None = None):
        self.engine = engine
        self.collection = collection
        self.shard_id = shard_id
        self.name = f"shard {shard_id} of {collection!r}"
        # Receive mode only ever starts with the shard (before anyone can write
        # to it) and ends once, so a write that sees None needs no lock.
        self._receive: _Receive | None = None if receive_token is None else _Receive(receive_token)
        self._receive_lock = threading.Lock()

    async def upsert(self, ids, vectors, payloads, timeout=None) -> int:
        return await asyncio.to_thread(self.upsert_now, ids, vectors, payloads)

    def upsert_now(self, ids, vectors, payloads) -> int:
        dicts = None if not payloads else [decode_payload(b, i) for i, b in enumerate(payloads)]
        self._live_write(ids, lambda: self.engine.upsert(ids, vectors, dicts))
        return len(ids)

    async def delete(self, ids, timeout=None) -> int:
        return await asyncio.to_thread(self.delete_now, ids)

    def delete_now(self, ids) -> int:
        return self._live_write(ids, lambda: self.engine.delete(ids))

    def _live_write(self, ids, write):
        """Run a live write; in receive mode, record its ids as touched.

        The write and the record happen under the receive lock, which
        ``import_points`` holds across its check and its write: an import never
        lands between a live write and its record, so the live value wins. Ids
        are recorded only once the write may have reached storage (InvalidArgument
        and ResourceExhausted keep nothing), so a rejected write does not make
        the import skip the source's older, still valid copy of a point.
        """
        if self._receive is None:
            return write()
        with self._receive_lock:
            try:
                result = write()
            except (InvalidArgument, ResourceExhausted):
                raise
            except BaseException:
                self._touch(ids)
                raise
            self._touch(ids)
            return result

    def _touch(self, ids) -> None:
        rec = self._receive
        if rec is not None:
            rec.touched.update(np.asarray(ids, np.uint64).tolist())

    # -- receive mode (the target of a shard transfer) --------------------
    def _receiving(self, token: str) -> "_Receive":
        rec = self._receive
        if rec is None or not token or rec.token != token:
            raise FailedPrecondition(
                f"{self.name} is not receiving a transfer under token {token!r} on this node (it was ended, "
                "replaced, or the node restarted and forgot it); begin the transfer again")
        return rec

    def import_points(self, token: str, points: ShardPoints) -> tuple[int, int]:
        """Write the exported ``points`` whose ids no live write touched since
        ``begin_receive``, in one transaction. Returns (imported, skipped)."""
        ids = np.asarray(points.ids, np.uint64)
        with self._receive_lock:
            rec = self._receiving(token)
            hit = rec.touched.intersection(ids.tolist())
            if hit:
                keep = ~np.isin(ids, np.fromiter(hit, np.uint64, len(hit)))
                ids = ids[keep]
                vectors = points.vectors[keep]
                payloads = None if not points.payloads else [b for b, k in zip(points.payloads, keep) if k]
            else:
                vectors, payloads = points.vectors, points.payloads or None
            if len(ids):
                self.engine.upsert(ids, vectors, payloads, encoded_payloads=True)
        return len(ids), len(points.ids) - len(ids)

    def end_receive(self, token: str) -> int:
        """Leave receive mode (forgetting the touched ids); returns the point count."""
        with self._receive_lock:
            self._receiving(token)
            self._receive = None
        return self.engine.count()

    @property
    def receiving(self) -> bool:
        return self._receive is not None

    def export_batches(self, batch_size: int = 0) -> Iterator[ShardPoints]:
        """Every point (ids, vectors, stored payload bytes; no scores), ``batch_size``
        at a time (0 = EXPORT_BATCH), from one consistent read snapshot."""
        batch_size = int(batch_size) or EXPORT_BATCH
        batch_size = max(1, min(batch_size, EXPORT_MAX_VECTOR_BYTES // (4 * self.engine.dim)))
        for ids, vectors, payloads in self.engine.iter_batches(batch_size):
            yield ShardPoints(ids, None, payloads, vectors)

    async def retrieve(self, ids, with_payload, with_vector, timeout=None) -> ShardPoints:
        return self.retrieve_now(ids, with_payload, with_vector)

    def retrieve_now(self, ids, with_payload, with_vector) -> ShardPoints:
        r = self.engine.retrieve(ids, with_payload=with_payload, with_vector=with_vector)
        payloads = None if r.payloads is None else [encode_payload(p) for p in r.payloads]
        return ShardPoints(r.ids, None, payloads, r.vectors)

    async def count(self, timeout=None) -> int:
        return self.engine.count()

    async def search(self, queries, params: ShardSearch, timeout=None) -> list[ShardPoints]:
        return self.search_now(queries, params)

    def search_now(self, queries, p: ShardSearch) -> list[ShardPoints]:
        hits = self.engine.search_batch(
            queries, p.limit, oversampling=p.oversampling, rescore=p.rescore, ignore=p.ignore,
            exact=p.exact, effort=p.effort, with_payload=p.with_payload, with_vector=p.with_vector,
            score_threshold=p.score_threshold)
        return [ShardPoints(h.ids, h.scores,
                            None if h.payloads is None else [encode_payload(x) for x in h.payloads],
                            h.vectors) for h in hits]

    async def stats(self, timeout=None) -> dict:
        return self.engine.stats()

    def close(self) -> None:
        self._receive = None
        self.engine.close()


@dataclass
class _Receive:
    """A shard's receive mode: the transfer's token and the ids written live since.

    ``touched`` is a Python set of ints (about 70 bytes an id), updated per
    batch from ``ids.tolist()`` and intersected per imported batch, both in C.
    """

    token: str
    touched: set = field(default_factory=set)


class ShardSnapshot:
    """A compacted, consistent copy of one shard's LMDB environment, in a temp file
    under ``<data_dir>/.snapshots/`` until :meth:`close` (idempotent, thread-safe)."""

    def __init__(self, path: Path, collection: str, shard_id: int, config: CollectionConfig, points: int):
        self.path = path
        self.collection = collection
        self.shard_id = shard_id
        self.config = config
        self.points = points
        self.size = path.stat().st_size

    def chunks(self, chunk_bytes: int = SNAPSHOT_CHUNK) -> Iterator[tuple[bytes, str | None]]:
        """The file as (data, sha256) pairs, ``chunk_bytes`` at a time; sha256 (hex,
        of all data) is None except on the last chunk. At least one chunk."""
        digest = hashlib.sha256()
        sent = 0
        with open(self.path, "rb") as f:
            while True:
                data = f.read(chunk_bytes)
                digest.update(data)
                sent += len(data)
                last = sent >= self.size or not data
                yield data, digest.hexdigest() if last else None
                if last:
                    return

    def close(self) -> None:
        self.path.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ShardRestore:
    """A snapshot being received: :meth:`write` the data, then :meth:`finish` with
    the sender's size and sha256 to check it and replace the shard. Leaving the
    ``with`` block unfinished (an error, a client gone) deletes what was received."""

    def __init__(self, node: "ShardNode", collection: str, shard_id: int, config: CollectionConfig):
        self.node = node
        self.collection = check_name(collection)
        self.shard_id = int(shard_id)
        self.config = config
        self.staging = node.snapshot_dir / f"restore-{uuid.uuid4().hex}"
        self.staging.mkdir(parents=True)
        self._file = open(self.staging / "data.mdb", "wb")
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._digest.update(data)
        self.size += len(data)

    def finish(self, size: int, sha256: str) -> int:
        """Check size and checksum, then replace (or create) the shard; returns its point count.
        InvalidArgument, with nothing replaced, when the data is not what was sent."""
        self._file.close()
        if not sha256:
            raise InvalidArgument("snapshot stream ended without a checksum (sha256 on its last chunk); "
                                  "was it cut short? nothing was restored")
        if size != self.size:
            raise InvalidArgument(f"snapshot size mismatch: received {self.size} bytes, the sender says {size}; "
                                  "nothing was restored")
        got = self._digest.hexdigest()
        if got != sha256.lower():
            raise InvalidArgument(f"checksum mismatch: received data has sha256 {got}, the sender says {sha256}; "
                                  "nothing was restored")
        try:  # a shard that does not open, or holds another config, replaces nothing either
            probe = ShardEngine.open(str(self.staging))
        except Exception as e:  # noqa: BLE001 - lmdb errors of a corrupt file
            raise InvalidArgument(f"the snapshot is not a shard that opens: {e}; nothing was restored") from None
        try:
            if probe.config != self.config:
                raise InvalidArgument(
                    f"the snapshot holds a shard of config {json.dumps(probe.config.to_dict(), sort_keys=True)}, "
                    f"not the one given ({json.dumps(self.config.to_dict(), sort_keys=True)}); "
                    "nothing was restored")
        finally:
            probe.close()
        (self.staging / "lock.mdb").unlink(missing_ok=True)
        return self.node._replace_shard(self.collection, self.shard_id, self.staging)

    def abort(self) -> None:
        self._file.close()
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.abort()  # after finish: the staging folder is gone or empty


class ShardNode:
    """The shards one node hosts, at ``<data_dir>/<collection>/<shard_id>/``."""

    def __init__(self, data_dir: str | os.PathLike):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # guards _shards; creates and drops are rare
        self._shards: dict[tuple[str, int], LocalShard] = {}
        self.snapshot_dir = self.data_dir / SNAPSHOT_DIR
        shutil.rmtree(self.snapshot_dir, ignore_errors=True)  # leftovers of a crash mid-snapshot
        self._open_existing()

    def _open_existing(self) -> None:
        for cdir in sorted(p for p in self.data_dir.iterdir() if p.is_dir() and NAME_RE.match(p.name)):
            for sdir in sorted(p for p in cdir.iterdir() if p.is_dir() and p.name.isdigit()):
                try:
                    engine = ShardEngine.open(str(sdir))
                except NotFound:
                    log.warning("skipping %s: no shard there", sdir)
                    continue
                key = (cdir.name, int(sdir.name))
                self._shards[key] = LocalShard(engine, *key)
                log.info("opened shard", extra={"collection": key[0], "shard": key[1], "points": engine.count()})

    def path(self, collection: str, shard_id: int) -> Path:
        return self.data_dir / check_name(collection) / str(int(shard_id))

    def get(self, collection: str, shard_id: int) -> LocalShard:
        shard = self._shards.get((collection, shard_id))
        if shard is None:
            raise NotFound(f"shard {shard_id} of collection {collection!r} is not on this node")
        return shard

    def shards(self) -> list[LocalShard]:
        with self._lock:
            return list(self._shards.values())

    def create(self, collection: str, shard_id: int, config: CollectionConfig, exist_ok: bool = False,
               receive_token: str | None = None) -> bool:
        """Create a shard; True if created, False if it existed with the same config and ``exist_ok``.
        With ``receive_token`` the shard starts in receive mode (see ``begin_receive``)."""
        path = self.path(collection, shard_id)
        with self._lock:
            existing = self._shards.get((collection, shard_id))
            if existing is not None:
                if exist_ok and existing.engine.config == config:
                    return False
                raise AlreadyExists(f"shard {shard_id} of collection {collection!r} already exists on this node")
            if path.exists():  # leftover of a failed create or drop
                shutil.rmtree(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            engine = ShardEngine.create(str(path), config)
            self._shards[(collection, shard_id)] = LocalShard(engine, collection, shard_id, receive_token)
        log.info("created shard", extra={"collection": collection, "shard": shard_id})
        return True

    def drop(self, collection: str, shard_id: int) -> bool:
        """Close and delete a shard's files; False if it was not here."""
        path = self.path(collection, shard_id)
        with self._lock:
            shard = self._shards.pop((collection, shard_id), None)
        if shard is not None:
            shard.close()  # waits for in-flight writes and searches
        if path.exists():
            shutil.rmtree(path)
        try:
            path.parent.rmdir()  # the collection folder, once its last shard is gone
        except OSError:
            pass
        if shard is not None:
            log.info("dropped shard", extra={"collection": collection, "shard": shard_id})
        return shard is not None

    def close(self) -> None:
        """Close every shard (forgetting receive modes); snapshots in progress are left to their callers."""
        with self._lock:
            shards, self._shards = list(self._shards.values()), {}
        for s in shards:
            s.close()

    # -- shard transfer -------------------------------------------------
    def export_batches(self, collection: str, shard_id: int, batch_size: int = 0) -> Iterator[ShardPoints]:
        """Every point of a shard as ShardPoints (ids, vectors, stored payload bytes), from one
        consistent read snapshot; see LocalShard.export_batches."""
        return self.get(collection, shard_id).export_batches(batch_size)

    def begin_receive(self, collection: str, shard_id: int, config: CollectionConfig, token: str,
                      replace: bool = False) -> None:
        """Create the shard in receive mode under ``token``. ``replace``: drop what is here
        first; otherwise an existing shard is AlreadyExists."""
        if not token:
            raise InvalidArgument("a transfer token is required")
        check_name(collection)
        if replace:
            self.drop(collection, shard_id)
        self.create(collection, shard_id, config, receive_token=token)
        log.info("receiving shard", extra={"collection": collection, "shard": shard_id})

    def _receiving_shard(self, collection: str, shard_id: int, token: str) -> LocalShard:
        shard = self._shards.get((collection, shard_id))
        if shard is None:
            raise FailedPrecondition(
                f"shard {shard_id} of collection {collection!r} is not receiving a transfer under token {token!r} "
                "on this node (it is not here: dropped, or never begun); begin the transfer again")
        return shard

    def import_points(self, collection: str, shard_id: int, token: str, points: ShardPoints) -> tuple[int, int]:
        """Write exported points the live writes did not touch; (imported, skipped).
        FailedPrecondition unless the shard receives under ``token``."""
        return self._receiving_shard(collection, shard_id, token).import_points(token, points)

    def end_receive(self, collection: str, shard_id: int, token: str) -> int:
        """Leave receive mode; returns the shard's point count. FailedPrecondition on a wrong token."""
        n = self._receiving_shard(collection, shard_id, token).end_receive(token)
        log.info("received shard", extra={"collection": collection, "shard": shard_id, "points": n})
        return n

    # -- snapshots --------------------------------------------------------
    def snapshot(self, collection: str, shard_id: int) -> ShardSnapshot:
        """A consistent, compacted copy of a shard's LMDB environment, taken while writes
        go on, in a temp file the caller closes (``with node.snapshot(...) as snap``)."""
        shard = self.get(collection, shard_id)
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        path = self.snapshot_dir / f"snapshot-{uuid.uuid4().hex}.mdb"
        try:
            with open(path, "wb") as f:
                points = shard.engine.copy_to(f.fileno())
            return ShardSnapshot(path, collection, shard_id, shard.engine.config, points)
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def restore(self, collection: str, shard_id: int, config: CollectionConfig) -> ShardRestore:
        """Receive a snapshot for a shard (``with node.restore(...) as r: r.write(...); r.finish(size, sha)``)."""
        return ShardRestore(self, collection, shard_id, config)

    def _replace_shard(self, collection: str, shard_id: int, staging: Path) -> int:
        """Make the checked environment in ``staging`` the shard, replacing any; its point count.
        Calls meanwhile see NotFound; if the new shard fails to open, the old one comes back."""
        path = self.path(collection, shard_id)
        trash = self.snapshot_dir / f"replaced-{uuid.uuid4().hex}"
        with self._lock:
            old = self._shards.pop((collection, shard_id), None)
            if old is not None:
                old.close()  # waits for in-flight writes and searches
            if path.exists():
                os.replace(path, trash)
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, path)
            try:
                engine = ShardEngine.open(str(path))
            except BaseException:
                shutil.rmtree(path, ignore_errors=True)
                if trash.exists():
                    os.replace(trash, path)
                    self._shards[(collection, shard_id)] = LocalShard(ShardEngine.open(str(path)), collection,
                                                                      shard_id)
                raise
            self._shards[(collection, shard_id)] = LocalShard(engine, collection, shard_id)
        shutil.rmtree(trash, ignore_errors=True)
        log.info("restored shard", extra={"collection": collection, "shard": shard_id, "points": engine.count()})
        return engine.count()
