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
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from shard.config import CollectionConfig
from shard.engine import ShardEngine
from shard.errors import AlreadyExists, InvalidArgument, NotFound

log = logging.getLogger("quiver.shard")

#: Collection names are directory names on the nodes and keys in the coordinator.
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


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

    def __init__(self, engine: ShardEngine, collection: str, shard_id: int):
        self.engine = engine
        self.collection = collection
        self.shard_id = shard_id
        self.name = f"shard {shard_id} of {collection!r}"

    async def upsert(self, ids, vectors, payloads, timeout=None) -> int:
        return await asyncio.to_thread(self.upsert_now, ids, vectors, payloads)

    def upsert_now(self, ids, vectors, payloads) -> int:
        dicts = None if not payloads else [decode_payload(b, i) for i, b in enumerate(payloads)]
        self.engine.upsert(ids, vectors, dicts)
        return len(ids)

    async def delete(self, ids, timeout=None) -> int:
        return await asyncio.to_thread(self.engine.delete, ids)

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
        self.engine.close()


class ShardNode:
    """The shards one node hosts, at ``<data_dir>/<collection>/<shard_id>/``."""

    def __init__(self, data_dir: str | os.PathLike):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # guards _shards; creates and drops are rare
        self._shards: dict[tuple[str, int], LocalShard] = {}
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

    def create(self, collection: str, shard_id: int, config: CollectionConfig, exist_ok: bool = False) -> bool:
        """Create a shard; True if created, False if it existed with the same config and ``exist_ok``."""
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
            self._shards[(collection, shard_id)] = LocalShard(engine, collection, shard_id)
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
        with self._lock:
            shards, self._shards = list(self._shards.values()), {}
        for s in shards:
            s.close()
