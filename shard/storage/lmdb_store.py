"""Original vectors, payloads, code records and metadata in one LMDB environment.

One environment per shard, four named databases:

- ``vectors``: id (8 bytes, big-endian) -> float32 vector bytes
- ``payloads``: id -> JSON bytes (absent when a point has no payload)
- ``codes``: id -> the point's fixed-size code record (list, factors, code),
  so a reopened shard loads its codes instead of re-encoding them
- ``meta``: name -> bytes (config, quantizer state, centroids)

Every write is one transaction: a batch is durable when ``commit`` returns
(``sync=True``) and atomic (all of it or none). The map grows by doubling when
full; growing needs no other transaction open in the process, so callers pass
an exclusive lock that readers hold in shared mode. Readers that keep a
transaction open for long (an export streaming to a slow client, a snapshot
copy) hold the store's own ``map_guard`` instead, only while they touch pages,
and growth takes it exclusively; growth invalidates their transactions (py-lmdb
does), so they check ``map_generation``.
"""

from __future__ import annotations

import contextlib
import os
from bisect import bisect_right
from itertools import islice
from operator import itemgetter
from typing import Iterator

import lmdb
import numpy as np

from shard.errors import ResourceExhausted, Unavailable
from shard.rwlock import RWLock
from shard.storage.pages import PageReader

DEFAULT_MAP_SIZE = 256 << 20
MAX_MAP_SIZE = 1 << 40
#: A failed write with less than this free on the store's filesystem is a full disk.
LOW_DISK_BYTES = 4 << 20
_first = itemgetter(0)
_second = itemgetter(1)


def id_keys(ids: np.ndarray) -> list[bytes]:
    """LMDB keys of uint64 ids: 8 bytes big-endian, so keys sort as ids do."""
    return np.ascontiguousarray(ids, dtype=">u8").view("V8").tolist()


def keys_to_ids(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=">u8").astype(np.uint64)


def row_bytes(a: np.ndarray) -> list[bytes]:
    """The rows of a 2-d C-contiguous array as bytes, in one call (no loop per row)."""
    a = np.ascontiguousarray(a)
    return a.view(f"V{a.shape[1] * a.itemsize}").reshape(-1).tolist() if a.shape[1] else [b""] * len(a)


def _unzip(pairs: list[tuple[bytes, bytes]]) -> tuple[list[bytes], list[bytes]]:
    return list(map(_first, pairs)), list(map(_second, pairs))


def _put_sorted(cur, keys: list[bytes], values: list[bytes]) -> None:
    """Put ascending, distinct keys through cursor ``cur``: those not past the
    database's last key as ordinary puts (replacing), the rest appended."""
    split = bisect_right(keys, cur.key()) if cur.last() else 0
    if split:
        cur.putmulti(zip(keys[:split], values[:split]))
    if split < len(keys):
        consumed, added = cur.putmulti(zip(keys[split:], values[split:]), append=True)
        if added != len(keys) - split:  # cannot happen for ascending keys; fail the transaction
            raise lmdb.Error(f"append of {len(keys) - split} keys stored {added}")


class LmdbVectorStore:
    def __init__(self, path: str, dim: int, map_size: int = DEFAULT_MAP_SIZE,
                 max_map_size: int = MAX_MAP_SIZE, exclusive=None):
        os.makedirs(path, exist_ok=True)
        self.path = path
        self.dim = dim
        self.row_bytes = 4 * dim
        self.max_map_size = max_map_size
        self._exclusive = exclusive or contextlib.nullcontext
        #: Held shared by long-lived readers while they touch pages (see iter_batches,
        #: copy_to) and exclusively by map growth, which remaps the file.
        self.map_guard = RWLock()
        self.map_generation = 0  # map growths so far: each invalidates every open transaction
        self.closed = False
        self.env = lmdb.open(path, map_size=map_size, max_dbs=8, subdir=True,
                             sync=True, metasync=True, lock=True, readahead=False,
                             max_readers=1024)
        self.env.set_mapsize(max(map_size, self.env.info()["map_size"]))
        self.vectors = self.env.open_db(b"vectors")
        self.payloads = self.env.open_db(b"payloads")
        self.codes = self.env.open_db(b"codes")
        self.meta = self.env.open_db(b"meta")
        self.pages = PageReader(self.env, self.vectors, b"vectors", os.path.join(path, "data.mdb"), self.row_bytes)

    # -- writes ---------------------------------------------------------
    def _write(self, fn):
        """Run fn(txn) in one write transaction, growing the map when full."""
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    return fn(txn)
            except lmdb.MapFullError:
                size = self.env.info()["map_size"]
                if size * 2 > self.max_map_size:
                    raise ResourceExhausted(
                        f"shard storage at {self.path} is full ({size >> 20} MiB map, "
                        f"limit {self.max_map_size >> 20} MiB); nothing from this write was kept") from None
                # map_guard first: waiting for a snapshot copy must not hold
                # searches out (the engine's lock is writer-preferring)
                with self.map_guard.exclusive(), self._exclusive():
                    self.env.set_mapsize(size * 2)
                    self.map_generation += 1
            except lmdb.Error as e:
                # ENOSPC is DiskError; but a write that runs out of room part way through a
                # page flush is a short write, which LMDB reports as EIO (a plain lmdb.Error)
                if not isinstance(e, lmdb.DiskError) and self.free_disk_bytes() >= LOW_DISK_BYTES:
                    raise
                raise ResourceExhausted(f"disk full or failing under {self.path}: {e} "
                                        f"({self.free_disk_bytes() >> 10} KiB free); "
                                        "nothing from this write was kept") from None

    def put_points(self, ids: np.ndarray, vectors: np.ndarray, payloads: list[bytes | None] | None,
                   code_records: np.ndarray, meta: dict[str, bytes] | None = None) -> None:
        """Upsert points (ids distinct): vectors, payloads (None removes a stored
        payload) and code records, plus optional metadata, in one transaction.

        Written in key order, and the keys past a database's last key in append
        mode: no tree search, and leaf pages filled instead of split in half (an
        ingest in id order takes half the pages, and half the bytes to sync).
        """
        ids = np.asarray(ids, np.uint64)
        vectors = np.ascontiguousarray(vectors, np.float32)
        code_records = np.ascontiguousarray(code_records)
        if len(ids) > 1 and not (ids[1:] > ids[:-1]).all():
            order = np.argsort(ids, kind="stable")
            ids, vectors, code_records = ids[order], vectors[order], code_records[order]
            payloads = None if payloads is None else [payloads[i] for i in order]
        keys = id_keys(ids)
        vec_rows = row_bytes(vectors)
        code_rows = row_bytes(code_records.view(np.uint8).reshape(len(ids), code_records.nbytes // max(len(ids), 1)))

        def fn(txn):
            _put_sorted(txn.cursor(self.vectors), keys, vec_rows)
            _put_sorted(txn.cursor(self.codes), keys, code_rows)
            pc = txn.cursor(self.payloads)
            # payloads to remove: only keys up to the last stored one can have one
            stored = bisect_right(keys, pc.key()) if pc.last() else 0
            if payloads is None:
                gone = keys[:stored]
            else:
                gone = [k for k, p in zip(keys[:stored], payloads) if p is None]
                _put_sorted(pc, *_unzip([(k, p) for k, p in zip(keys, payloads) if p is not None]))
            for k in gone:
                if pc.set_key(k):
                    pc.delete()
            for name, value in (meta or {}).items():
                txn.put(name.encode(), value, db=self.meta)

        self._write(fn)

    def delete_points(self, ids: np.ndarray) -> np.ndarray:
        """Delete points; returns a bool mask of which ids existed."""
        keys = id_keys(ids)

        def fn(txn):
            found = np.zeros(len(keys), bool)
            for i, k in enumerate(keys):
                found[i] = txn.delete(k, db=self.vectors)
                txn.delete(k, db=self.codes)
                txn.delete(k, db=self.payloads)
            return found

        return self._write(fn)

    def put_meta(self, items: dict[str, bytes], code_records: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Write metadata and, optionally, replace every code record, atomically."""

        def fn(txn):
            for k, v in items.items():
                txn.put(k.encode(), v, db=self.meta)
            if code_records is not None:
                ids, recs = code_records
                txn.drop(self.codes, delete=False)
                txn.cursor(self.codes).putmulti(zip(id_keys(ids), row_bytes(recs)), append=True)

        self._write(fn)

    # -- reads ----------------------------------------------------------
    def get_meta(self, key: str) -> bytes | None:
        with self.env.begin() as txn:
            v = txn.get(key.encode(), db=self.meta)
            return bytes(v) if v is not None else None

    def read_txn(self):
        return self.env.begin(buffers=False)

    def get_vectors(self, txn, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectors of ids in one read transaction (from ``read_txn``): (found (n,)
        bool, vectors (n_found, d) float32). Read from the data file's pages
        (``PageReader``), or through py-lmdb when those cannot be trusted."""
        got = self.pages.read(txn, ids)
        if got is not None:
            return got[0], got[1].view(np.float32)
        return self.get_vectors_lmdb(txn, ids)

    def get_vectors_at(self, txn, ids: np.ndarray, slots: np.ndarray, node_of: np.ndarray):
        """``get_vectors`` for ids whose leaf nodes are known: ``node_of[slots]``,
        from ``pages.nodes`` of txn's own snapshot. No descents; reads by descent
        when a node turns out not to be its id's."""
        got = self.pages.read_at(node_of, slots, ids)
        if got is not None:
            return got[0], got[1].view(np.float32)
        return self.get_vectors(txn, ids)

    def get_vectors_lmdb(self, txn, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``get_vectors`` through py-lmdb's own reads."""
        keys = id_keys(ids)
        got = txn.cursor(self.vectors).getmulti(keys)
        if len(got) == len(keys):
            found = np.ones(len(keys), bool)
        else:
            present = set(map(_first, got))
            found = np.fromiter((k in present for k in keys), bool, len(keys))
        blob = b"".join(map(_second, got))
        return found, np.frombuffer(blob, np.float32).reshape(-1, self.dim)

    def get_payloads(self, txn, ids: np.ndarray) -> list[bytes | None]:
        db = self.payloads
        return [txn.get(k, db=db) for k in id_keys(ids)]

    def iter_vectors(self, chunk: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All (ids, vectors) in id order, ``chunk`` points at a time, in one read snapshot.

        Read from the data file's pages where every value sits (``PageReader.nodes``,
        then ``read_at`` a chunk at a time: no Python step per point; docs384's 80k
        vectors in 16k chunks ~3x faster than the cursor), through the cursor from
        the first chunk the pages cannot vouch for. The caller holds off map growth
        (a search's shared lock, a retrain's write lock), as for every page read."""
        with self.env.begin() as txn:
            start = bytes(8)  # keys are 8 bytes: set_range(0) = the first key
            located = self.pages.nodes(txn)
            if located is not None:
                keys, nodes = located
                for lo in range(0, len(keys), chunk):
                    hi = min(lo + chunk, len(keys))
                    got = self.pages.read_at(nodes, np.arange(lo, hi), keys[lo:hi])
                    if got is None or not got[0].all():
                        start = id_keys(keys[lo:lo + 1])[0]
                        break
                    yield keys[lo:hi], got[1].view(np.float32).reshape(-1, self.dim)
                else:
                    return
            cur = txn.cursor(self.vectors)
            if not cur.set_range(start):
                return
            items = cur.iternext()
            while True:
                block = list(islice(items, chunk))
                if not block:
                    return
                ids = keys_to_ids(b"".join(map(_first, block)))
                yield ids, np.frombuffer(b"".join(map(_second, block)), np.float32).reshape(-1, self.dim)

    def iter_batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, list[bytes]]]:
        """Every point as (ids (n,) uint64, vectors (n, d) float32, payloads: n stored
        JSON bytes, b"" = none), in id order, ``batch_size`` at a time, all from ONE
        read transaction, begun now: a consistent snapshot while writes go on.

        The transaction stays open between batches (the consumer may be a slow
        network stream). Map growth invalidates every open transaction (py-lmdb
        does so, since a remap moves every page); an export that outlives one
        fails with Unavailable and must start over. ``reserve`` first makes that
        unlikely.
        """
        batch_size = max(1, int(batch_size))
        with self.map_guard.shared():
            if self.closed:
                raise Unavailable(f"shard storage at {self.path} is closed")
            txn = self.env.begin()
            generation = self.map_generation
        return self._batches(txn, generation, batch_size)

    def _batches(self, txn, generation: int, batch_size: int):
        try:
            start = bytes(8)  # keys are 8 bytes: set_range(0) = the first key
            while start is not None:
                with self.map_guard.shared():  # no growth while we touch pages
                    if self.closed:
                        raise Unavailable(f"shard storage at {self.path} was closed during the export")
                    if self.map_generation != generation:
                        raise Unavailable(f"the export of {self.path} was cut short: the storage map grew "
                                          "meanwhile (writes outpaced the reserve); start the export again")
                    cur = txn.cursor(self.vectors)
                    if not cur.set_range(start):
                        return
                    block = list(islice(cur.iternext(), batch_size))
                    keys = list(map(_first, block))
                    got = txn.cursor(self.payloads).getmulti(keys)
                if len(got) == len(keys):
                    payloads = list(map(_second, got))
                else:
                    stored = dict(got)
                    payloads = [stored.get(k, b"") for k in keys]
                last = int.from_bytes(keys[-1], "big")
                start = None if len(keys) < batch_size or last == 0xFFFF_FFFF_FFFF_FFFF else \
                    (last + 1).to_bytes(8, "big")
                ids = keys_to_ids(b"".join(keys))
                vectors = np.frombuffer(b"".join(map(_second, block)), np.float32).reshape(-1, self.dim)
                del block, got
                yield ids, vectors, payloads
        finally:
            with self.map_guard.shared():
                if not self.closed and self.map_generation == generation:
                    txn.abort()

    def reserve(self, free_bytes: int) -> None:
        """Grow the map now, if needed, so that ``free_bytes`` more fit (within the
        limit). The caller keeps writers out (the engine's write lock)."""
        size = new = self.env.info()["map_size"]
        used = self.disk_bytes()
        while new - used < free_bytes and new * 2 <= self.max_map_size:
            new *= 2
        if new != size:
            with self.map_guard.exclusive(), self._exclusive():
                self.env.set_mapsize(new)
                self.map_generation += 1

    def copy_to(self, fd: int) -> int:
        """Write a compacted, consistent copy of the environment to ``fd``; returns the
        number of points in it (counted in the same read transaction)."""
        with self.map_guard.shared():
            if self.closed:
                raise Unavailable(f"shard storage at {self.path} is closed")
            with self.env.begin() as txn:
                points = txn.stat(self.vectors)["entries"]
                self.env.copyfd(fd, compact=True, txn=txn)
        return int(points)

    def all_code_records(self, record_bytes: int) -> tuple[np.ndarray, np.ndarray]:
        """Every (id, code record) as (ids (n,) uint64, records (n, record_bytes) uint8)."""
        with self.env.begin() as txn:
            cur = txn.cursor(self.codes)
            keys = b"".join(cur.iternext(keys=True, values=False))
            vals = b"".join(cur.iternext(keys=False, values=True))
        ids = keys_to_ids(keys)
        recs = np.frombuffer(vals, np.uint8).reshape(len(ids), record_bytes) if record_bytes else \
            np.zeros((len(ids), 0), np.uint8)
        return ids, recs

    def free_disk_bytes(self) -> int:
        """Bytes free for this process on the filesystem holding the store."""
        st = os.statvfs(self.path)
        return int(st.f_bavail * st.f_frsize)

    def disk_bytes(self) -> int:
        info = self.env.info()
        stat = self.env.stat()
        return int((info["last_pgno"] + 1) * stat["psize"])

    def close(self) -> None:
        with self.map_guard.exclusive():  # waits for a batch read or copy in progress
            self.closed = True
            self.pages.close()
            self.env.close()
