"""The in-RAM side of a shard: codes by slot, the id -> slot map, the list layout.

A slot is a row of the code arrays. Deleted slots go on a free list and are
reused; the list layout (CSR of slots by list) is rebuilt lazily by a counting
sort when a search finds it stale, so a write costs O(batch) and a burst of
writes costs one O(n) rebuild.

Scans read a list's codes in slot order, so slots are kept grouped by list:
``compact`` renumbers every slot into list order (and drops the holes) once
writes have disturbed more than 1/16 of them. A scan then streams through
memory instead of jumping, which more than halves its time on cold caches.
"""

from __future__ import annotations

import numpy as np

from shard.held import byte_rows, int16_rows
from shard.kernels.idmap import idmap_get, idmap_pop, idmap_set, new_idmap
from shard.kernels.layout import build_lists, list_base, list_base8
from shard.memory import aligned_full


def _capacity(cap: int, blocked: bool) -> int:
    """Slots to allocate: a multiple of 8 for the blocked layout."""
    return (cap + 7) // 8 * 8 if blocked else cap


def record_dtype(code_width: int, code_dtype: np.dtype, n_factors: int) -> np.dtype:
    """The persisted code record of one point (little-endian, packed)."""
    fields = [("list", "<i4"), ("half_sqnorm", "<f4")]
    if n_factors:
        fields.append(("factors", "<f4", (n_factors,)))
    if code_width:
        fields.append(("code", np.dtype(code_dtype).newbyteorder("<"), (code_width,)))
    return np.dtype(fields)


class CodeStore:
    def __init__(self, code_width: int, code_dtype, n_factors: int, nlist: int, capacity: int = 1024,
                 blocked: bool = False):
        self.code_width = code_width
        self.code_dtype = np.dtype(code_dtype)
        self.n_factors = n_factors
        self.nlist = nlist
        self.record = record_dtype(code_width, code_dtype, n_factors)
        cap = _capacity(max(16, capacity), blocked)
        # blocked codes (cap / 8, width, 8): for each 8 slots, their words side by side,
        # so a kernel scores 8 slots with one vector instruction a word (binary codes:
        # VPOPCNTQ) and a run of slots is one contiguous range of memory
        self.blocked = blocked
        # the arrays a query reads at random start on cache lines (aligned_full)
        self.codes = aligned_full((cap // 8, code_width, 8) if blocked else (cap, code_width), 0, self.code_dtype)
        self.factors = aligned_full((cap, n_factors), 0, np.float32)
        self.half_sqnorm = aligned_full(cap, 0, np.float32)
        self.list_of_slot = aligned_full(cap, -1, np.int32)
        self.slot_ids = np.zeros(cap, np.uint64)
        self.high = 0  # slots [0, high) have been used
        self.free = np.zeros(0, np.int64)
        self.idmap = new_idmap()
        self.n = 0
        self._layout = None
        self._disorder = 0  # slots written or freed since the last compaction
        self._cent_held = None  # (centroids, in_bytes, int16 or byte copy, per-dimension scale): see query_base
        # (LMDB snapshot id, (cap,) int64 leaf node of each slot's original): kept by
        # the engine (``ShardEngine._node_table``); any change of slots drops it
        self.row_nodes = None

    # -- records --------------------------------------------------------
    def make_records(self, lists, codes, factors, half_sqnorm) -> np.ndarray:
        rec = np.zeros(len(lists), self.record)
        rec["list"] = lists
        rec["half_sqnorm"] = half_sqnorm
        if self.n_factors:
            rec["factors"] = factors
        if self.code_width:
            rec["code"] = codes
        return rec

    def load_records(self, ids: np.ndarray, rec: np.ndarray) -> None:
        """Fill an empty store from persisted records."""
        rec = rec.view(self.record).reshape(-1) if rec.dtype != self.record else rec
        codes = rec["code"] if self.code_width else None
        factors = rec["factors"] if self.n_factors else None
        self.upsert(ids, rec["list"], codes, factors, rec["half_sqnorm"])

    # -- writes ---------------------------------------------------------
    #: the per-slot arrays and the fill of an unused row
    _SLOT_ARRAYS = (("codes", 0), ("factors", 0), ("half_sqnorm", 0), ("list_of_slot", -1), ("slot_ids", 0))

    def _reallocate(self, cap: int, take) -> None:
        """Replace every per-slot array by one of capacity ``cap`` whose first
        rows are ``old[take]`` (a slice to grow, a permutation to compact)."""
        self.row_nodes = None
        cap = _capacity(cap, self.blocked)
        for name, fill in self._SLOT_ARRAYS:
            a = getattr(self, name)
            if name == "codes" and self.blocked:
                b = aligned_full((cap // 8,) + a.shape[1:], fill, a.dtype)
                if isinstance(take, slice):  # growing: the blocks as they are
                    b[: a.shape[0]] = a
                else:
                    slots = np.asarray(take, np.int64)
                    kept = a[slots >> 3, :, slots & 7]
                    new = np.arange(len(slots))
                    b[new >> 3, :, new & 7] = kept
            else:
                kept = a[take]
                b = aligned_full((cap,) + kept.shape[1:], fill, kept.dtype)
                b[: len(kept)] = kept
            setattr(self, name, b)

    def _grow(self, need: int) -> None:
        cap = len(self.slot_ids)
        if need > cap:
            self._reallocate(max(need, cap * 2), slice(0, cap))

    def slots_of(self, ids) -> np.ndarray:
        """Slots of ids (n,) int64, -1 where absent."""
        return idmap_get(self.idmap, np.ascontiguousarray(ids, np.uint64).view(np.int64))

    def lists_of(self, ids) -> np.ndarray:
        """Lists of ids (n,) int32, -1 where absent."""
        slots = self.slots_of(ids)
        return np.where(slots >= 0, self.list_of_slot[np.maximum(slots, 0)], -1).astype(np.int32)

    def upsert(self, ids, lists, codes, factors, half_sqnorm) -> None:
        """Insert or replace points (ids unique within the call)."""
        self.row_nodes = None
        keys = np.ascontiguousarray(ids, np.uint64).view(np.int64)
        slots = idmap_get(self.idmap, keys)
        new = slots < 0
        n_new = int(new.sum())
        if n_new:
            reuse = self.free[-n_new:] if len(self.free) else self.free
            self.free = self.free[: len(self.free) - len(reuse)]
            fresh = np.arange(self.high, self.high + n_new - len(reuse), dtype=np.int64)
            self.high += len(fresh)
            self._grow(self.high)
            slots[new] = np.concatenate([reuse, fresh])
            idmap_set(self.idmap, keys[new], slots[new])
            self.n += n_new
        if self.code_width and self.blocked:
            self.codes[slots >> 3, :, slots & 7] = codes
        elif self.code_width:
            self.codes[slots] = codes
        if self.n_factors:
            self.factors[slots] = factors
        self.half_sqnorm[slots] = half_sqnorm
        self.list_of_slot[slots] = lists
        self.slot_ids[slots] = ids
        self._layout = None
        self._disorder += len(slots)

    def delete(self, ids) -> np.ndarray:
        """Remove points; returns a bool mask of the ids that were present."""
        self.row_nodes = None
        keys = np.ascontiguousarray(ids, np.uint64).view(np.int64)
        slots = idmap_pop(self.idmap, keys)
        found = slots >= 0
        gone = slots[found]
        self.list_of_slot[gone] = -1
        self.free = np.concatenate([self.free, gone])
        self.n -= len(gone)
        self._layout = None
        self._disorder += len(gone)
        return found

    # -- reads ----------------------------------------------------------
    def layout(self):
        """(offsets, members, list_sizes) of the current lists, rebuilt if stale."""
        lay = self._layout
        if lay is None:
            offsets, members = build_lists(self.list_of_slot[: self.high], self.nlist)
            lay = (offsets, members, np.diff(offsets))
            self._layout = lay
        return lay

    @property
    def stale(self) -> bool:
        return self._layout is None

    def _renumber_due(self) -> bool:
        """Writes have placed or freed enough slots (1/16 of them; any below 4,096
        points) that a refresh renumbers them."""
        return bool(self._disorder * 16 > self.n or (self.n < 4096 and self._disorder))

    def refresh(self) -> bool:
        """Rebuild the layout, compacting first when writes disordered the slots.
        Returns whether it renumbered (the old arrays were freed: worth a trim).

        Renumbers slots, so the caller must exclude every reader of slots.
        """
        renumber = self._renumber_due()
        if renumber:
            self.compact()
        self.layout()
        return renumber

    def compact(self) -> None:
        offsets, members = build_lists(self.list_of_slot[: self.high], self.nlist)
        n = len(members)
        self._reallocate(max(16, n + n // 4), members)
        idmap_set(self.idmap, self.slot_ids[:n].view(np.int64), np.arange(n, dtype=np.int64))
        self.high = n
        self.free = np.zeros(0, np.int64)
        self._disorder = 0
        self._layout = (offsets, np.arange(n, dtype=np.int32), np.diff(offsets))

    def live_ids(self) -> np.ndarray:
        live = self.list_of_slot[: self.high] >= 0
        return self.slot_ids[: self.high][live]

    #: Up to this many queries, ``query_base`` scores the held centroids in one pass
    #: each; a larger batch reuses them from cache and BLAS on float32 is faster.
    INT16_BASE_MAX_QUERIES = 8

    def query_base(self, centroids: np.ndarray, Q: np.ndarray, const: np.ndarray | None = None,
                   in_bytes: bool = False) -> np.ndarray:
        """(m, nlist) float32 ``Q @ centroids.T + const[:, None]``, the per-list
        term of a search's scores (and what picks the lists to probe). For a few
        queries it reads a copy of the centroids held in int16 (made on first use,
        again when the centroids change), or in one byte a dimension when
        ``in_bytes`` (quantizers whose own error dwarfs the ~1e-3 that costs; see
        ``layout.list_base8``): a query finds them evicted by the previous query's
        scan, and fewer bytes come from memory in less time."""
        if len(Q) > self.INT16_BASE_MAX_QUERIES:
            out = np.ascontiguousarray(Q @ centroids.T, np.float32)
            if const is not None:
                out += const[:, None]
            return out
        cq, scale = self.held_centroids(centroids, in_bytes)
        out = np.empty((len(Q), len(cq)), np.float32)
        const = np.zeros(len(Q), np.float32) if const is None else np.ascontiguousarray(const, np.float32)
        (list_base8 if in_bytes else list_base)(cq, np.ascontiguousarray(Q * scale, np.float32), const, out)
        return out

    def held_centroids(self, centroids: np.ndarray, in_bytes: bool) -> tuple[np.ndarray, np.ndarray]:
        """(held centroids, per-dimension scale): ``byte_rows`` or ``int16_rows``
        of ``centroids``, made on first use and again when they change."""
        held = self._cent_held
        if held is None or held[0] is not centroids or held[1] != in_bytes:
            rows = byte_rows(centroids) if in_bytes else int16_rows(centroids)
            held = self._cent_held = (centroids, in_bytes) + rows
        return held[2], held[3]

    def ram_bytes(self) -> int:
        arrays = (self.codes, self.factors, self.half_sqnorm, self.list_of_slot, self.slot_ids, self.free)
        layout = sum(a.nbytes for a in self._layout) if self._layout else 0
        held = 0 if self._cent_held is None else self._cent_held[2].nbytes + self._cent_held[3].nbytes
        nodes = self.row_nodes
        held += 0 if nodes is None else nodes[1].nbytes
        # numba's typed dict: ~16 bytes of entry plus index and hash per key
        return int(sum(a.nbytes for a in arrays) + layout + held + 48 * self.n)
