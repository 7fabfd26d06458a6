"""HNSW graph over code slots: the arrays, their growth, and the entry points
to the kernels in ``shard.kernels.graph``.

The graph links slots (rows of the code arrays). It never reads originals: a
node is scored through a view of its code (the quantizer's ``graph_view``):
int8 scalar codes of residuals, ``x = off[list] + b * codes[slot]`` (off =
centroids + lo, b = step; or float32 rows with off = 0, b = 1), or product
codes of residuals, ``x = centroids[list] + concat_j codebooks[j, codes[slot,
j]]`` (the view holds the codebooks transposed); so inserts and rebuilds need
only what is in RAM.
Deleted slots stay linked (they keep the graph navigable) and are never
returned; ``deleted_fraction`` tells the owner when a rebuild pays.

RAM: level 0 is 2m int32 links a node (128 bytes at m = 16), the upper levels
(1/m of the nodes) a few percent more.
"""

from __future__ import annotations

import io
import math
import threading
import zlib

import numpy as np

from shard.held import byte_rows, int16_rows
from shard.index.code_store import CodeStore
from shard.kernels.idmap import idmap_set
from shard.kernels.graph import graph_insert, graph_search
from shard.memory import aligned_copy, aligned_full

MAX_LEVEL = 15


class HnswGraph:
    def __init__(self, m: int = 16, ef_construct: int = 100, seed: int = 0, capacity: int = 1024):
        if m < 2:
            raise ValueError("m must be >= 2")
        self.m = int(m)
        self.m0 = 2 * self.m
        self.ef_construct = int(max(ef_construct, self.m0))
        self.rng = np.random.default_rng(seed + 31337)
        self.ml = 1.0 / math.log(self.m)
        cap = max(16, capacity)
        self.links0 = aligned_full((cap, self.m0), -1, np.int32)  # a row: 2 cache lines at m = 16
        self.deg0 = aligned_full(cap, 0, np.int32)
        self.levels = np.full(cap, -1, np.int8)  # -1: slot never inserted
        self.up_row = np.full(cap, -1, np.int32)
        self.up = np.full((MAX_LEVEL, 16, self.m), -1, np.int32)
        self.updeg = np.zeros((MAX_LEVEL, 16), np.int32)
        self.n_up = 0
        self.deleted = np.zeros(cap, np.bool_)
        self.state = np.array([-1, 0], np.int64)  # entry slot, top level
        self.n_deleted = 0
        self._local = threading.local()
        # The build kernel's own visited set (writes are serialised by the owner).
        self._build_visited = np.zeros(cap, np.uint16)
        self._build_gen = np.zeros(1, np.uint16)

    # -- capacity -------------------------------------------------------
    @property
    def capacity(self) -> int:
        return len(self.deg0)

    def _grow(self, need: int) -> None:
        cap = self.capacity
        if need <= cap:
            return
        new = max(need, 2 * cap)

        def grown(arr, fill):
            out = aligned_full((new,) + arr.shape[1:], fill, arr.dtype)
            out[:cap] = arr
            return out

        self.links0 = grown(self.links0, -1)
        self.deg0 = grown(self.deg0, 0)
        self.levels = grown(self.levels, -1)
        self.up_row = grown(self.up_row, -1)
        self.deleted = grown(self.deleted, False)
        self._build_visited = grown(self._build_visited, 0)

    def _grow_up(self, need: int) -> None:
        rows = self.up.shape[1]
        if need <= rows:
            return
        new = max(need, 2 * rows)
        up = np.full((MAX_LEVEL, new, self.m), -1, np.int32)
        up[:, :rows] = self.up
        updeg = np.zeros((MAX_LEVEL, new), np.int32)
        updeg[:, :rows] = self.updeg
        self.up, self.updeg = up, updeg

    # -- writes ---------------------------------------------------------
    def insert(self, slots, X, hsq_new, codes, off, lists, b, hsq, use_sqnorm: bool, chunk: int = 4096) -> None:
        """Link slots (n,) whose codes are already in ``codes`` (and lists in
        ``lists``); X (n, d) float32 their float vectors, hsq_new (n,) their
        0.5 ||x||^2. A slot already in the graph gets fresh out-links (an
        upsert); a new one draws its level."""
        slots = np.ascontiguousarray(slots, np.int64)
        if len(slots) == 0:
            return
        self._grow(int(slots.max()) + 1)
        fresh = slots[self.levels[slots] < 0]
        if len(fresh):
            lv = np.minimum(np.floor(-np.log(1.0 - self.rng.random(len(fresh))) * self.ml), MAX_LEVEL)
            self.levels[fresh] = lv.astype(np.int8)
            high = fresh[lv > 0]
            if len(high):
                self._grow_up(self.n_up + len(high))
                self.up_row[high] = np.arange(self.n_up, self.n_up + len(high), dtype=np.int32)
                self.n_up += len(high)
        self.n_deleted -= int(self.deleted[slots].sum())
        X = np.ascontiguousarray(X, np.float32)
        hsq_new = np.ascontiguousarray(hsq_new, np.float32)
        for s in range(0, len(slots), chunk):
            base = np.ascontiguousarray(X[s:s + chunk] @ off.T, np.float32)
            graph_insert(slots[s:s + chunk], X[s:s + chunk], base, hsq_new[s:s + chunk], self.levels, codes, off,
                         lists, b, hsq, bool(use_sqnorm), self.links0, self.deg0, self.up, self.updeg, self.up_row,
                         self.state, self.deleted, self.ef_construct, self._build_visited, self._build_gen)

    def mark_deleted(self, slots) -> None:
        slots = np.asarray(slots, np.int64)
        slots = slots[(slots < self.capacity)]
        slots = slots[(self.levels[slots] >= 0) & ~self.deleted[slots]]
        self.deleted[slots] = True
        self.n_deleted += len(slots)

    def deleted_fraction(self, n_live: int) -> float:
        return self.n_deleted / max(1, n_live + self.n_deleted)

    # -- search ---------------------------------------------------------
    def _visited(self):
        loc = self._local
        v = getattr(loc, "visited", None)
        if v is None or len(v) < self.capacity:
            v = loc.visited = np.zeros(self.capacity, np.uint16)
            loc.gen = np.zeros(1, np.uint16)
        return v, loc.gen

    def search(self, Q, b, offq, oscale, lists, codes, hsq, use_sqnorm: bool, ef: int, slot_ids,
               out_scores, out_ids, out_slots) -> np.ndarray:
        """Top-k (k = out_scores.shape[1]) of m queries Q (m, d) through the view
        (b, offsets ``offq * oscale``: see ``graph_search``). Returns counts (m,) int64."""
        visited, gen = self._visited()
        return graph_search(Q, b, offq, oscale, lists, codes, hsq, bool(use_sqnorm), self.links0, self.deg0,
                            self.up, self.updeg, self.up_row, self.state, self.deleted, int(ef), visited, gen,
                            slot_ids, out_scores, out_ids, out_slots)

    # -- persistence and renumbering ------------------------------------
    def renumber(self, order: np.ndarray) -> np.ndarray:
        """Move node ``order[i]`` to slot i (order: a permutation of [0, len(order)),
        every node of the graph among them); links follow. Returns new_of (old
        slot -> new slot, identity past len(order)). The caller excludes searches."""
        high = len(order)
        new_of = np.arange(self.capacity, dtype=np.int64)
        new_of[order] = np.arange(high)
        for name in ("links0", "deg0", "levels", "up_row", "deleted"):
            a = getattr(self, name)
            b = aligned_copy(a) if name in ("links0", "deg0") else a.copy()
            b[:high] = a[order]
            setattr(self, name, b)
        for links in (self.links0[:high], self.up[:, : self.n_up]):
            ok = links >= 0
            links[ok] = new_of[links[ok]]
        if self.state[0] >= 0:
            self.state[0] = new_of[self.state[0]]
        return new_of

    def ram_bytes(self) -> int:
        return int(sum(a.nbytes for a in (self.links0, self.deg0, self.levels, self.up_row, self.up, self.updeg,
                                          self.deleted, self._build_visited)))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"links0": self.links0, "deg0": self.deg0, "levels": self.levels, "up_row": self.up_row,
                "up": self.up[:, : self.n_up], "updeg": self.updeg[:, : self.n_up], "deleted": self.deleted,
                "state": self.state, "params": np.array([self.m, self.ef_construct, self.n_deleted], np.int64)}

    @classmethod
    def from_arrays(cls, arr: dict, seed: int = 0) -> "HnswGraph":
        m, efc, n_del = (int(x) for x in arr["params"])
        g = cls(m, efc, seed, capacity=len(arr["deg0"]))
        g.links0 = aligned_copy(arr["links0"], np.int32)
        g.deg0 = aligned_copy(arr["deg0"], np.int32)
        g.levels = np.ascontiguousarray(arr["levels"], np.int8)
        g.up_row = np.ascontiguousarray(arr["up_row"], np.int32)
        g.n_up = arr["up"].shape[1]
        g._grow_up(max(16, g.n_up))
        g.up[:, : g.n_up] = arr["up"]
        g.updeg[:, : g.n_up] = arr["updeg"]
        g.deleted = np.ascontiguousarray(arr["deleted"], np.bool_)
        g.state = np.ascontiguousarray(arr["state"], np.int64).copy()
        g.n_deleted = n_del
        g._build_visited = np.zeros(len(g.deg0), np.uint16)
        return g


# -- the engine's side: a code store whose slots the graph links ---------------
class GraphCodeStore(CodeStore):
    """A ``CodeStore`` that keeps an ``HnswGraph`` over its slots.

    A deleted slot is marked deleted in the graph before it goes on the free
    list, and relinked when it is reused. ``refresh`` renumbers the slots into
    walk order (``reorder``) once writes have placed more than 1/16 of them.
    """

    def __init__(self, *args, m: int = 16, ef_construct: int = 100, seed: int = 0, **kw):
        super().__init__(*args, **kw)
        self.graph = HnswGraph(m, ef_construct, seed)
        self._view = None  # (quantizer, centroids, b, offq, oscale): see search_view

    def search_view(self, quantizer, centroids: np.ndarray):
        """(b, offq, oscale): the quantizer's ``graph_view`` with its offsets held
        as ``graph_search`` reads them; made once for a quantizer and its
        centroids (again when a retrain replaces them).

        Offsets of product codes are held in bytes (``byte_rows``), of int8
        codes in int16 (``int16_rows``). A walk reads every offset once a query,
        mostly from memory (the walk evicts them): on docs384 x16 (566 lists,
        m 20) bytes made the query ~1.1x faster at equal recall@10 at
        oversampling 4 (0.9920 at beam 96; 0.8825 against 0.8835 at 1, beam 48),
        where the codes' own error dwarfs the offsets'. An int8 code scores
        finely enough that its offsets keep two bytes."""
        held = self._view
        if held is None or held[0] is not quantizer or held[1] is not centroids:
            off, b = quantizer.graph_view(centroids)
            held = self._view = (quantizer, centroids, b) + (byte_rows(off) if b.ndim == 3 else int16_rows(off))
        return held[2:]

    def search(self, quantizer, centroids, Q, k: int, ef: int, use_sqnorm: bool):
        """(ids (m, k) uint64, scores (m, k) float32, slots (m, k) int64, counts
        (m,)): the best k of each query Q (m, d) by code score, beam max(ef, k)."""
        b, offq, oscale = self.search_view(quantizer, centroids)
        Q = quantizer.graph_points(Q)
        out_s = np.empty((len(Q), k), np.float32)  # the first counts[i] of row i are written
        out_ids = np.empty((len(Q), k), np.uint64)
        out_slots = np.empty((len(Q), k), np.int64)
        counts = self.graph.search(Q, b, offq, oscale, self.list_of_slot, self.codes, self.half_sqnorm, use_sqnorm,
                                   max(int(ef), k), self.slot_ids, out_s, out_ids, out_slots)
        return out_ids, out_s, out_slots, counts

    def refresh(self) -> bool:
        renumber = self._renumber_due()
        if renumber:
            self.reorder()
        self._disorder = 0
        self.layout()
        return renumber

    def compact(self) -> None:
        self.refresh()

    def reorder(self) -> None:
        """Renumber slots in walk order: the nodes of the upper levels first
        (every search passes through them), then by list, as a node's links
        mostly lead to near lists. Reads of one walk then land closer together:
        the docs384 walk (int8, beam 96) ran 6-9 % faster than in insertion
        order. Deleted and free slots move too (the graph still links them);
        the caller excludes searches."""
        high = self.high
        if high < 2 or self.graph.state[0] < 0:  # nothing linked yet: nothing to follow
            return
        self.graph._grow(high)
        cap = len(self.slot_ids)
        levels = self.graph.levels[:high].astype(np.int64)
        order = np.lexsort((np.arange(high), self.list_of_slot[:high], -levels))
        new_of = self.graph.renumber(order)
        self._reallocate(cap, np.concatenate([order, np.arange(high, cap)]))
        live = np.flatnonzero(self.list_of_slot[:high] >= 0)
        idmap_set(self.idmap, self.slot_ids[live].view(np.int64), live.astype(np.int64))
        self.free = new_of[self.free]
        self._layout = None

    def delete(self, ids) -> np.ndarray:
        slots = self.slots_of(ids)
        self.graph.mark_deleted(slots[slots >= 0])
        return super().delete(ids)

    def live_slots(self) -> np.ndarray:
        return np.flatnonzero(self.list_of_slot[: self.high] >= 0)

    def ram_bytes(self) -> int:
        view = 0 if self._view is None else self._view[3].nbytes + self._view[4].nbytes
        return super().ram_bytes() + self.graph.ram_bytes() + view


def decode(codes: GraphCodeStore, slots: np.ndarray, off: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The vectors of ``slots`` through the view (n, d) float32."""
    c = codes.codes[slots]
    if b.ndim == 1:
        rest = b[None, :] * c.astype(np.float32)
    else:
        rest = b[np.arange(b.shape[0])[None, :], :, c.astype(np.int64)].reshape(len(slots), -1)[:, : off.shape[1]]
    return np.ascontiguousarray(off[codes.list_of_slot[slots]] + rest, np.float32)


def link(codes: GraphCodeStore, slots, X, hsq_new, off, b, use_sqnorm: bool, graph: HnswGraph | None = None) -> None:
    """Insert slots (their codes already stored) into ``graph`` (default: the store's)."""
    g = codes.graph if graph is None else graph
    g.insert(slots, X, hsq_new, codes.codes, off, codes.list_of_slot, b, codes.half_sqnorm, use_sqnorm)


def rebuild(codes: GraphCodeStore, off, b, use_sqnorm: bool, chunk: int = 8192) -> HnswGraph:
    """A fresh graph over the live slots, built on their decoded codes (no
    originals needed), in slot order; the store's graph is not touched."""
    old = codes.graph
    g = HnswGraph(old.m, old.ef_construct, seed=0, capacity=max(16, codes.high))
    live = codes.live_slots()
    for s in range(0, len(live), chunk):
        sl = live[s:s + chunk]
        link(codes, sl, decode(codes, sl, off, b), codes.half_sqnorm[sl], off, b, use_sqnorm, graph=g)
    return g


# -- persistence: the graph saved by point id, valid only for identical codes --
def _fingerprint(codes: GraphCodeStore, slots: np.ndarray) -> int:
    """crc32 of the ids, codes, lists and norms of ``slots`` (already in id order)."""
    crc = 0
    for a in (codes.slot_ids[slots], codes.codes[slots], codes.list_of_slot[slots], codes.half_sqnorm[slots]):
        crc = zlib.crc32(np.ascontiguousarray(a).tobytes(), crc)
    return crc


def _live_in_id_order(codes: GraphCodeStore) -> np.ndarray:
    live = codes.live_slots()
    return live[np.argsort(codes.slot_ids[live], kind="stable")]


def save_graph(codes: GraphCodeStore) -> bytes:
    """The graph as bytes, nodes named by point id (deleted nodes, which have
    no id any more, carry their codes). ``load_graph`` accepts it only for a
    store holding exactly the same points and codes."""
    g = codes.graph
    high = min(codes.high, g.capacity)
    live = _live_in_id_order(codes)
    in_graph = np.flatnonzero(g.levels[:high] >= 0)
    dead = in_graph[g.deleted[in_graph] & (codes.list_of_slot[in_graph] < 0)]
    arrays = g.arrays()
    buf = io.BytesIO()
    np.savez(buf, fingerprint=np.int64(_fingerprint(codes, live)), n_live=np.int64(len(live)), high=np.int64(high),
             old_slots=np.concatenate([live, dead]).astype(np.int64),
             dead_codes=codes.codes[dead], dead_lists=np.zeros(len(dead), np.int32),
             dead_hsq=codes.half_sqnorm[dead],
             **{f"g_{k}": v for k, v in arrays.items()})
    return buf.getvalue()


def load_graph(codes: GraphCodeStore, blob: bytes) -> bool:
    """Restore a saved graph into a store just loaded from the same records
    (slots in id order); False (store untouched) when it does not match."""
    arr = dict(np.load(io.BytesIO(blob)))
    live = _live_in_id_order(codes)
    if int(arr["n_live"]) != len(live) or int(arr["fingerprint"]) != _fingerprint(codes, live):
        return False
    dead_codes = arr["dead_codes"]
    n_dead = len(dead_codes)
    if n_dead:  # dead nodes come back as freed slots holding their old codes
        taken = set(codes.slot_ids[live].tolist())
        fake = np.array([v for v in range(2**64 - 1, 2**64 - 1 - 4 * n_dead - 16, -1) if v not in taken][:n_dead],
                        np.uint64)
        CodeStore.upsert(codes, fake, arr["dead_lists"], dead_codes, np.zeros((n_dead, codes.n_factors), np.float32),
                         arr["dead_hsq"])
        dead_slots = codes.slots_of(fake)
        CodeStore.delete(codes, fake)
    else:
        dead_slots = np.zeros(0, np.int64)
    old = arr["old_slots"]
    high = int(arr["high"])
    new_of = np.full(max(high, 1), -1, np.int64)
    new_of[old] = np.concatenate([live, dead_slots])
    ga = {k[2:]: v for k, v in arr.items() if k.startswith("g_")}
    src = HnswGraph.from_arrays(ga)
    g = HnswGraph.from_arrays({k: v.copy() for k, v in ga.items()})
    g._grow(int(new_of.max()) + 1 if len(old) else 16)

    def remap(links):
        out = aligned_copy(links, np.int32)
        ok = links >= 0
        out[ok] = new_of[links[ok]]
        return out

    for name, fill in (("links0", -1), ("deg0", 0), ("levels", -1), ("up_row", -1), ("deleted", False)):
        a = getattr(g, name)
        a[:] = fill
        a[new_of[old]] = getattr(src, name)[old]
    g.links0 = remap(g.links0)
    g.up[:, : g.n_up] = remap(src.up[:, : g.n_up])
    if g.state[0] >= 0:
        g.state[0] = new_of[src.state[0]]
    g._build_visited = np.zeros(g.capacity, np.uint16)
    codes.graph = g
    return True


def _remapped(links: np.ndarray, degs: np.ndarray, new_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Link rows (r, w) with their first degs valid, through new_of (-1: the
    node is gone), dropped links squeezed out. Returns (links, degs)."""
    w = links.shape[1]
    valid = (np.arange(w)[None, :] < degs[:, None]) & (links >= 0)
    mapped = np.where(valid, new_of[np.where(valid, links, 0)], -1)
    order = np.argsort(mapped < 0, axis=1, kind="stable")
    out = np.take_along_axis(mapped, order, axis=1).astype(np.int32)
    return out, (out >= 0).sum(axis=1).astype(np.int32)


def carry_over(old: GraphCodeStore, new: GraphCodeStore) -> HnswGraph:
    """The old store's graph over the new store's slots (same points, new
    codes: a retraining). Links follow the point ids; deleted nodes are
    dropped. The vectors did not move, so neither do their neighbours."""
    g = old.graph
    high = min(old.high, g.capacity)
    live = old.live_slots()
    live = live[live < high]
    new_of = np.full(max(high, 1), -1, np.int64)
    new_of[live] = new.slots_of(old.slot_ids[live])
    ng = HnswGraph(g.m, g.ef_construct, seed=0, capacity=max(16, new.high))
    dst = new_of[live]
    ng.levels[dst] = g.levels[live]
    ng.up_row[dst] = g.up_row[live]
    links, degs = _remapped(g.links0[live], g.deg0[live], new_of)
    ng.links0[dst] = links
    ng.deg0[dst] = degs
    ng.n_up = g.n_up
    ng._grow_up(max(16, g.n_up))
    for lc in range(g.up.shape[0]):
        ng.up[lc, : g.n_up], ng.updeg[lc, : g.n_up] = _remapped(g.up[lc, : g.n_up], g.updeg[lc, : g.n_up], new_of)
    entry = int(g.state[0])
    if entry >= 0 and entry < high and new_of[entry] >= 0:
        ng.state[:] = (new_of[entry], g.state[1])
    elif len(dst):  # the entry point was deleted: the highest live node takes over
        top = int(np.argmax(ng.levels[dst]))
        ng.state[:] = (dst[top], ng.levels[dst[top]])
    return ng
