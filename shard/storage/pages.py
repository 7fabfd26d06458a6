"""Fixed-size values of one LMDB database read from the data file's pages.

``PageReader.read(txn, ids)`` returns what ``txn.get`` would for each id, read
by ``shard/kernels/lmdb_pages.py`` from a read-only map of ``data.mdb``. The
transaction's own snapshot is found through LMDB itself: the main database
holds each named database's record (depth, page counts, entries, root page) as
of the transaction, so the root is the one this transaction sees, and the
pages under it stay as they are while it is open. Anything unexpected (a page
out of the map, a value of another size, a record that disagrees with
``txn.stat``) returns None and the caller reads through py-lmdb.

Only read transactions come here: a write transaction's dirty pages are not
in the file yet.

``nodes(txn)`` lists where every value of the snapshot sits; a caller that
keeps that list (by slot, ``ShardEngine``) reads with ``read_at`` afterwards:
no descent, one round of misses for all rows. The list is only good for the
snapshot it came from (the same ``txn.id()``): any write moves pages.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading

import numpy as np

from shard.kernels.exact import located_ranks
from shard.kernels.lmdb_pages import leaf_nodes, lookup_rows, rows_at

#: MDB_db: pad u32, flags u16, depth u16, branch, leaf, overflow pages, entries, root (u64 each)
_DB_RECORD = struct.Struct("<IHHQQQQQ")
_P_INVALID = (1 << 64) - 1
_MDB_DUPSORT = 0x04


class PageReader:
    def __init__(self, env, db, name: bytes, data_file: str, row_bytes: int):
        self.db = db
        self.name = name
        self.data_file = data_file
        self.row_bytes = row_bytes
        self.psize = env.stat()["psize"]
        self._lock = threading.Lock()
        self._mem = np.zeros(0, np.uint8)
        self._views = (self._mem, self._mem.view(np.float32))  # the map, and as float32
        self._snap = (-1, -1)  # (transaction id, root page) last resolved
        self.fallbacks = 0  # reads that went through py-lmdb instead
        self.located_reads = 0  # reads by known nodes (``read_at``), no descent

    def _map(self, need: int) -> np.ndarray:
        """The data file mapped read-only, at least ``need`` bytes of it (re-mapped
        when the file has grown since)."""
        mem = self._mem
        if mem.shape[0] < need:
            with self._lock:
                mem = self._mem
                if mem.shape[0] < need:
                    size = os.path.getsize(self.data_file)
                    with open(self.data_file, "rb") as f:
                        m = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
                    mem = self._mem = np.frombuffer(m, np.uint8)
                    # one tuple, so a reader never pairs a map with another's float view
                    # (LMDB's file is whole pages: a multiple of 4 bytes)
                    self._views = (mem, mem[: len(mem) & ~3].view(np.float32))
        return mem

    def _mapped(self, read) -> int:
        """Run the kernel call ``read(mem, memf)`` (its result, negative when the
        pages did not hold what it needed) over the current map, and once more over
        a fresh one when it fails: a page or node past the map means the file grew
        after it was mapped. Returns the result; negative (counted as a fallback)
        when that fails too, and the caller reads through LMDB."""
        for attempt in range(2):
            if attempt:
                self._map(os.path.getsize(self.data_file))
            mem, memf = self._views
            got = read(mem, memf)
            if got >= 0:
                return got
        self.fallbacks += 1
        return got

    @staticmethod
    def _found_rows(out: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found as bool, the rows of out that were found)."""
        found = found.view(bool)
        return found, (out if found.all() else out[found])

    def close(self) -> None:
        """Drop the map (the store is closing: no read is in progress)."""
        with self._lock:
            self._mem = np.zeros(0, np.uint8)
            self._views = (self._mem, self._mem.view(np.float32))
            self._snap = (-1, -1)

    def _root(self, txn) -> tuple[int, int] | None:
        """(root page or -1 for an empty database, bytes the snapshot spans)."""
        tid = txn.id()
        snap = self._snap
        if snap[0] == tid:
            return snap[1]
        raw = txn.get(self.name)
        if raw is None or len(raw) != _DB_RECORD.size:
            return None
        _, flags, depth, branch, leaf, overflow, entries, root = _DB_RECORD.unpack(raw)
        st = txn.stat(self.db)
        if flags & _MDB_DUPSORT or (depth, branch, leaf, overflow, entries) != (
                st["depth"], st["branch_pages"], st["leaf_pages"], st["overflow_pages"], st["entries"]):
            return None
        root = -1 if root == _P_INVALID else root
        self._snap = (tid, root)
        return root

    def read(self, txn, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(found (n,) bool, values (n_found, row_bytes) uint8 in the order of ids),
        or None when the pages cannot be trusted (then read through LMDB)."""
        root = self._root(txn)
        if root is None:
            self.fallbacks += 1
            return None
        keys = np.ascontiguousarray(ids, np.uint64)
        n = keys.shape[0]
        if root < 0:  # empty database
            return np.zeros(n, bool), np.zeros((0, self.row_bytes), np.uint8)
        out = np.empty((n, self.row_bytes), np.uint8)
        found = np.empty(n, np.uint8)
        if self._mapped(lambda mem, memf: lookup_rows(mem, self.psize, root, keys, self.row_bytes, out, found)) < 0:
            return None
        return self._found_rows(out, found)

    def nodes(self, txn) -> tuple[np.ndarray, np.ndarray] | None:
        """(keys (n,) uint64, byte offsets of their leaf nodes (n,) int64) of every
        value in txn's snapshot, in key order; None when the pages cannot be trusted."""
        root = self._root(txn)
        if root is None:
            return None
        entries = txn.stat(self.db)["entries"]
        keys = np.empty(entries, np.uint64)
        nodes = np.empty(entries, np.int64)
        if root < 0:
            return keys, nodes
        n = leaf_nodes(self._map(os.path.getsize(self.data_file)), self.psize, root, keys, nodes)
        if n != entries:
            self.fallbacks += 1
            return None
        return keys, nodes

    def read_at(self, node_of: np.ndarray, slots: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """``read`` for points whose leaf nodes are known: ``node_of[slots[i]]``
        (from ``nodes`` of this same snapshot, -1 for absent) holds ids[i]. None
        when a node is not that id's (then read by descent)."""
        keys = np.ascontiguousarray(ids, np.uint64)
        n = keys.shape[0]
        out = np.empty((n, self.row_bytes), np.uint8)
        found = np.empty(n, np.uint8)
        slots = np.ascontiguousarray(slots, np.int64)
        if self._mapped(lambda mem, memf: rows_at(mem, self.psize, node_of, slots, keys, self.row_bytes,
                                                  out, found)) < 0:
            return None
        self.located_reads += 1
        return self._found_rows(out, found)

    def ranks_at(self, node_of: np.ndarray, slots: np.ndarray, ids: np.ndarray, q: np.ndarray,
                 use_sqnorm: bool) -> tuple[np.ndarray, np.ndarray] | None:
        """``read_at`` and exact ranking in one pass over the values where they lie
        (``exact.located_ranks``): (ids still present, best first; their ranks
        ``<x, q>``, minus ``0.5 ||x||^2`` with use_sqnorm), or None (read by descent)."""
        keys = np.ascontiguousarray(ids, np.uint64)
        slots = np.ascontiguousarray(slots, np.int64)
        out_keys = np.empty(len(keys), np.uint64)
        out_ranks = np.empty(len(keys), np.float32)
        n = self._mapped(lambda mem, memf: located_ranks(mem, memf, self.psize, node_of, slots, keys, q,
                                                        use_sqnorm, out_keys, out_ranks))
        if n < 0:
            return None
        self.located_reads += 1
        return out_keys[:n], out_ranks[:n]
