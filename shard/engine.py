"""The shard engine: one shard of one collection, usable in-process.

A search runs in three steps, each in one place:

1. candidates on the codes (``_candidates``): the probed lists of the IVF
   index are scanned by the quantizer's numba kernel, keeping
   ``ceil(limit * oversampling)`` per query (with ``config.hnsw`` set, an
   HNSW graph over the same codes finds them instead: ``_graph_candidates``);
2. rescoring (``_rescore``): those candidates' originals are read from LMDB in
   one read transaction and scored exactly, where they lie in the data file
   when the shard has a current table of their leaf nodes (``_node_table``);
3. rerank: candidates sorted by exact score; the shard returns all of them (the
   coordinator merges shards and takes the global head).

Scores are "higher is better" for every distance: cosine similarity, dot
product, and the *negated* L2 distance for euclid.

Concurrency: one writer at a time (``_write_lock``); searches run in parallel
with each other and with LMDB commits, and are excluded only while a write
mutates the in-RAM arrays or the LMDB map grows (``_rw``). One helper thread
at a time builds the table of where the originals lie (``_locate``); ``close``
waits for it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from shard.config import CollectionConfig, oversampled_top
from shard.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from shard.index import hnsw, ivf
from shard.index.code_store import CodeStore
from shard.kernels.exact import ROW_NOT_FINITE, ROW_ZERO, checked_rows, dot_rows, half_sqnorms, ranked_rows
from shard.kernels.kmeans import residual_rows
from shard.memory import batch_allocations, release_free_memory, tune_malloc
from shard.parallel import map_row_blocks
from shard.quantization import make_quantizer
from shard.rwlock import RWLock
from shard.storage.lmdb_store import LmdbVectorStore

log = logging.getLogger("quiver.shard")
tune_malloc()
#: Batches at least this large run under ``batch_allocations`` (their temporaries
#: reuse heap pages) and hand what they freed back to the OS when they end.
TRIM_AFTER_BATCH = 5_000
#: A batch's encoding runs in row blocks of at least this many rows, in threads.
ENCODE_BLOCK = 4096

#: From this many points a shard keeps where each original sits in the data file
#: (``ShardEngine._node_table``): rescoring then reads without B-tree descents.
LOCATE_MIN_POINTS = 2_048
#: After building that table, the next build waits this many times as long as the
#: build took: under a stream of writes (each makes the table stale) the builds
#: take at most ~1/(1 + LOCATE_PAUSE) of one core.
LOCATE_PAUSE = 10.0

#: The on-disk layout a shard is written in: 2 adds the product quantizer's
#: rotation to the index. Shards of format 1 open (their product codes load
#: unrotated and are rotated at the next retrain, which records format 2); a
#: shard of a format this code does not know is refused rather than misread.
FORMAT_VERSION = b"2"
READABLE_FORMATS = (b"1", b"2")
#: no 0.5 ||x||^2 to subtract (not euclid)
_NO_NORMS = np.zeros(0, np.float32)
#: ``residual_rows`` without a row selection
_ALL_ROWS = np.zeros(0, np.int64)


@dataclass
class Hits:
    """Search results for one query, best first."""

    ids: np.ndarray  # (k,) uint64
    scores: np.ndarray  # (k,) float32
    payloads: list | None = None
    vectors: np.ndarray | None = None  # (k, d) float32

    def __len__(self) -> int:
        return len(self.ids)

    def head(self, limit: int) -> "Hits":
        return Hits(self.ids[:limit], self.scores[:limit],
                    None if self.payloads is None else self.payloads[:limit],
                    None if self.vectors is None else self.vectors[:limit])


@dataclass
class Records:
    """Points fetched by id, in request order, only those found."""

    ids: np.ndarray
    payloads: list | None = None
    vectors: np.ndarray | None = None


class _Index:
    """What a search reads besides the codes: centroids and the trained quantizer.
    Replaced whole on retraining, so a search holds one consistent reference."""

    def __init__(self, centroids: np.ndarray, quantizer, trained_n: int, cosine: bool = False):
        self.centroids = np.ascontiguousarray(centroids, np.float32)
        sq = np.einsum("ij,ij->i", self.centroids, self.centroids)
        self.half_cnorm = (0.5 * sq).astype(np.float32)
        self.quantizer = quantizer
        if quantizer is not None and hasattr(quantizer, "bind"):
            quantizer.bind(self.centroids)
        self.trained_n = trained_n
        self.nlist = len(self.centroids)
        # Which lists a query probes. Euclidean: nearest centroid first, <q, c> - |c|^2 / 2.
        # Cosine (unit vectors): the centroid most aligned with the query first, <q, c> / |c|;
        # a short centroid (a spread-out list) is not penalised for its length. On docs384
        # at oversampling 3 this puts 97.1% of the true top 10 in the probed lists against
        # 96.6%, for the same number of points scanned.
        self.probe_scale = (1.0 / np.sqrt(np.maximum(sq, 1e-30))).astype(np.float32) if cosine else None
        self.probe_half = np.zeros_like(self.half_cnorm) if cosine else self.half_cnorm


def _encode_payloads(payloads, n: int) -> list[bytes | None] | None:
    if payloads is None:
        return None
    if len(payloads) != n:
        raise InvalidArgument(f"got {len(payloads)} payloads for {n} points; give one per point (or None)")
    out = []
    for i, p in enumerate(payloads):
        if p is None:
            out.append(None)
            continue
        if not isinstance(p, dict):
            raise InvalidArgument(f"payload of point {i} must be a JSON object, got {type(p).__name__}")
        try:
            out.append(json.dumps(p, separators=(",", ":"), allow_nan=False).encode())
        except (TypeError, ValueError, RecursionError) as e:
            raise InvalidArgument(f"payload of point {i} is not valid JSON: {e}") from None
    return out


def _per_query(counts, *outputs):
    """A candidate kernel's (m, k) outputs cut to each query's first counts[i]:
    a list of rows per output (with Python ints: numpy scalars made this ~8 us
    a query)."""
    if len(counts) == 1:
        c = int(counts[0])
        return tuple([out[0, :c]] for out in outputs)
    cs = counts.tolist()
    return tuple([out[i, :c] for i, c in enumerate(cs)] for out in outputs)


def _as_ids(ids) -> np.ndarray:
    try:
        arr = np.asarray(ids)
    except Exception:
        raise InvalidArgument("ids must be unsigned 64-bit integers") from None
    if arr.ndim != 1:
        raise InvalidArgument(f"ids must be a 1-d array, got shape {arr.shape}")
    if arr.size and arr.dtype.kind == "i" and arr.min() < 0:
        raise InvalidArgument("ids must be unsigned 64-bit integers; got a negative id")
    if arr.size and arr.dtype.kind not in "iu":
        raise InvalidArgument(f"ids must be unsigned 64-bit integers, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, np.uint64)


class ShardEngine:
    # -- lifecycle ------------------------------------------------------
    def __init__(self, path: str, config: CollectionConfig, store: LmdbVectorStore,
                 progress: Callable[[str, int, int], None] | None = None):
        self.path = path
        self.config = config
        self.dim = config.dim
        self.distance = config.distance
        self.use_sqnorm = config.distance == "euclid"
        self._cosine = config.distance == "cosine"
        self.store = store
        self.progress = progress or (lambda stage, done, total: log.debug("index %s %d/%d", stage, done, total))
        self._write_lock = threading.Lock()
        self._rw = store_rw = RWLock()
        store._exclusive = store_rw.exclusive
        self._index: _Index | None = None
        self._codes: CodeStore | None = None
        self.originals_read = 0
        self.searches = 0
        self._locator: threading.Thread | None = None
        self._locator_lock = threading.Lock()
        self._locate_after = 0.0  # time.monotonic() before which no new build starts
        self.node_tables_built = 0

    @classmethod
    def create(cls, path: str, config: CollectionConfig, **kw) -> "ShardEngine":
        if os.path.exists(os.path.join(path, "data.mdb")):
            raise AlreadyExists(f"a shard already exists at {path}")
        store = LmdbVectorStore(path, config.dim)
        store.put_meta({"config": json.dumps(config.to_dict()).encode(), "format": FORMAT_VERSION})
        return cls(path, config, store, **kw)

    @classmethod
    def open(cls, path: str, **kw) -> "ShardEngine":
        if not os.path.exists(os.path.join(path, "data.mdb")):
            raise NotFound(f"no shard at {path}")
        probe = LmdbVectorStore(path, 1)
        raw, fmt = probe.get_meta("config"), probe.get_meta("format")
        probe.close()
        if raw is None:
            raise NotFound(f"{path} holds no shard config")
        if fmt not in READABLE_FORMATS:
            raise FailedPrecondition(
                f"the shard at {path} is in format {fmt!r}, which this version of Quiver cannot read "
                f"(it reads {b', '.join(READABLE_FORMATS).decode()}): open it with the version that wrote it")
        config = CollectionConfig.from_dict(json.loads(raw))
        eng = cls(path, config, LmdbVectorStore(path, config.dim), **kw)
        eng._load()
        return eng

    def _load(self) -> None:
        raw = self.store.get_meta("index")
        if raw is None:
            return
        arrays = dict(np.load(io.BytesIO(raw)))
        quantizer = make_quantizer(self.config)
        if quantizer is not None:
            quantizer.load_state({k[2:]: v for k, v in arrays.items() if k.startswith("q_")})
        index = _Index(arrays["centroids"], quantizer, int(arrays["trained_n"]), self._cosine)
        codes = self._new_code_store(index)
        ids, recs = self.store.all_code_records(codes.record.itemsize)
        codes.load_records(ids, recs)
        codes.refresh()
        del ids, recs
        if self.config.hnsw is not None:
            blob = self.store.get_meta("graph")
            if blob is None or not hnsw.load_graph(codes, blob):
                self._rebuild_graph(index, codes)  # renumbers the slots in walk order
            else:  # records load in id order; walks read in walk order
                codes.reorder()
                codes.refresh()
        release_free_memory()
        self._index, self._codes = index, codes
        log.info("opened shard %s: %d points, %d lists", self.path, codes.n, index.nlist)

    def close(self) -> None:
        with self._write_lock:
            if self.config.hnsw is not None and self._codes is not None and not getattr(self.store, "closed", False):
                # reopening restores this graph if the codes still match (else rebuilds it)
                try:
                    self.store.put_meta({"graph": hnsw.save_graph(self._codes)})
                except Exception as e:  # the graph is a cache of the codes: closing must not fail on it
                    log.warning("shard %s: hnsw graph not saved (%s); the next open rebuilds it", self.path, e)
            with self._locator_lock:
                self._locate_after = math.inf  # no new builds
                locator = self._locator
            if locator is not None:
                locator.join()
            with self._rw.exclusive():
                self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- validation -----------------------------------------------------
    def _vectors(self, vectors, what: str = "vector") -> np.ndarray:
        try:
            x = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError):
            raise InvalidArgument(f"{what}s must be numeric arrays") from None
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            got = x.shape[-1] if x.ndim >= 1 else 0
            raise InvalidArgument(f"{what} dimension is {got}, the collection's is {self.dim}")
        out = np.empty(x.shape, np.float32)
        verdict, row = checked_rows(np.ascontiguousarray(x), self.distance == "cosine", out)
        if verdict == ROW_NOT_FINITE:
            raise InvalidArgument(f"{what} {row} contains NaN or Inf")
        if verdict == ROW_ZERO:
            raise InvalidArgument(f"{what} {row} is all zeros, which has no direction under cosine distance")
        return out

    # -- writes ---------------------------------------------------------
    def upsert(self, ids, vectors, payloads=None, *, encoded_payloads: bool = False) -> None:
        """Insert or replace points, atomically and durably.

        ids: (n,) uint64; vectors: (n, d) float32; payloads: one JSON object
        (dict) or None per point. Within a batch, the last occurrence of a
        repeated id wins. ``encoded_payloads``: payloads are JSON-object bytes
        as this store keeps them (b"" or None = none), e.g. another shard's
        export, and are stored as they are.
        """
        ids = _as_ids(ids)
        x = self._vectors(vectors)
        if len(x) != len(ids):
            raise InvalidArgument(f"got {len(ids)} ids for {len(x)} vectors")
        if encoded_payloads and payloads is not None:
            if len(payloads) != len(ids):
                raise InvalidArgument(f"got {len(payloads)} payloads for {len(ids)} points; give one per point")
            blobs = [bytes(b) if b else None for b in payloads]
        else:
            blobs = _encode_payloads(payloads, len(ids))
        if len(ids) == 0:
            return
        _, last = np.unique(ids[::-1], return_index=True)
        if len(last) != len(ids):  # repeated ids: keep each one's last occurrence
            keep = np.sort(len(ids) - 1 - last)
            ids, x = ids[keep], x[keep]
            blobs = None if blobs is None else [blobs[i] for i in keep]
        big = len(ids) >= TRIM_AFTER_BATCH
        with self._write_lock, (batch_allocations() if big else contextlib.nullcontext()):
            meta = None
            index = self._index
            if index is None:  # first write trains on the batch itself
                index = self._train(x, len(x))
                meta = self._index_meta(index)
            codes = self._codes if self._index is index else self._new_code_store(index)
            lists, code, factors, hsq = self._encode(index, x)
            self.store.put_points(ids, x, blobs, codes.make_records(lists, code, factors, hsq), meta)
            with self._rw.exclusive():
                codes.upsert(ids, lists, code, factors, hsq)
                if self.config.hnsw is not None:
                    # the graph mutates in place: searches wait (~0.3 ms a point)
                    off, b = index.quantizer.graph_view(index.centroids)
                    hnsw.link(codes, codes.slots_of(ids), index.quantizer.graph_points(x), hsq, off, b,
                              self.use_sqnorm)
                self._index, self._codes = index, codes
            ic = self.config.index
            if codes.n >= index.trained_n * ic.retrain_growth or (
                    index.nlist == 1 and ic.full_scan_threshold and codes.n >= ic.full_scan_threshold):
                try:
                    self._retrain()
                except ResourceExhausted as e:
                    # the batch is committed and served by the old index: failing the call
                    # would tell the client "nothing was kept"; the next write retries
                    log.warning("shard %s could not retrain after a write (kept): %s", self.path, e)

    def delete(self, ids) -> int:
        """Delete points by id; returns how many existed."""
        ids = np.unique(_as_ids(ids))
        if len(ids) == 0:
            return 0
        with self._write_lock:
            found = self.store.delete_points(ids)
            if self._codes is not None:
                with self._rw.exclusive():
                    self._codes.delete(ids[found])
                hc = self.config.hnsw
                if hc is not None and self._codes.graph.deleted_fraction(self._codes.n) > hc.rebuild_deleted:
                    self._rebuild_graph(self._index, self._codes)
            return int(found.sum())

    # -- training -------------------------------------------------------
    def _new_code_store(self, index: _Index) -> CodeStore:
        q = index.quantizer
        if q is None:
            return CodeStore(0, np.uint8, 0, index.nlist)
        hc = self.config.hnsw
        if hc is not None:
            return hnsw.GraphCodeStore(q.code_width, q.code_dtype, q.n_factors, index.nlist, m=hc.m,
                                       ef_construct=hc.ef_construct, seed=self.config.quantization.seed)
        return CodeStore(q.code_width, q.code_dtype, q.n_factors, index.nlist,
                         blocked=getattr(q, "blocked", False))

    def _rebuild_graph(self, index: _Index, codes) -> None:
        """A fresh graph over the live codes, built beside the old one (which
        searches keep using), then swapped in. Runs under the write lock."""
        off, b = index.quantizer.graph_view(index.centroids)
        graph = hnsw.rebuild(codes, off, b, self.use_sqnorm)
        with self._rw.exclusive():
            codes.graph = graph
            codes.reorder()
            codes.refresh()
        log.info("shard %s: hnsw graph rebuilt over %d points", self.path, codes.n)

    def _train(self, sample: np.ndarray, n_total: int) -> _Index:
        """Train centroids and quantizer on a sample (m, d) for a shard of n_total points."""
        sample = self._subsample(sample)
        centroids = self._train_centroids(sample, n_total)
        lists = None if self.config.quantization.kind == "none" else ivf.assign(sample, centroids)
        return self._fit_quantizer(sample, lists, centroids, n_total)

    def _subsample(self, sample: np.ndarray) -> np.ndarray:
        ic = self.config.index
        if len(sample) > ic.train_sample:
            rng = np.random.default_rng(self.config.quantization.seed)
            sample = sample[np.sort(rng.choice(len(sample), ic.train_sample, replace=False))]
        return sample

    def _train_centroids(self, sample: np.ndarray, n_total: int, init: np.ndarray | None = None,
                         labels: np.ndarray | None = None) -> np.ndarray:
        """Coarse centroids (nlist, d) for a shard of n_total points, from a sample
        (m, d); ``init``: the centroids of the index being replaced, a warm start
        used when the list count stays the same; ``labels`` (m,): the sample's
        lists under ``init``, as the shard holds them (k-means takes them for its
        first assignment: docs384, 25k points, 1,024 lists, 0.13 s saved)."""
        ic = self.config.index
        if n_total < max(ic.full_scan_threshold, 1):
            return sample.mean(axis=0, keepdims=True)
        nlist = ic.nlist or ivf.auto_nlist(n_total)
        # 40 points a list is enough for the coarse k-means (FAISS warns below 39)
        step = 1 if len(sample) <= 40 * nlist else int(np.ceil(len(sample) / (40 * nlist)))
        if init is not None and len(init) != nlist:
            init = None
        return ivf.kmeans(sample[::step], nlist, self.config.quantization.seed, self.progress, init=init,
                          labels=None if init is None or labels is None else labels[::step])

    def _fit_quantizer(self, sample: np.ndarray, lists: np.ndarray | None, centroids: np.ndarray,
                       n_total: int, previous: _Index | None = None) -> _Index:
        """The index for ``centroids``, its quantizer fitted on the residuals of a
        sample (m, d) whose lists (m,) under those centroids are ``lists``
        (starting from ``previous``'s quantizer, the index being replaced)."""
        quantizer = make_quantizer(self.config)
        if quantizer is not None:
            want = min(quantizer.fit_sample, len(sample))  # 0 for a binary quantizer: no residuals
            rows, of = _ALL_ROWS, lists
            if want < len(sample):
                rows = np.sort(np.random.default_rng(0).choice(len(sample), want, replace=False))
                of = lists[rows]
            fit_on = np.empty((want, self.dim), np.float32)
            residual_rows(np.ascontiguousarray(sample, np.float32), rows, centroids, of, fit_on)
            quantizer.fit(fit_on, None if previous is None else previous.quantizer)
        return _Index(centroids, quantizer, max(1, n_total), self._cosine)

    def _encode(self, index: _Index, x: np.ndarray, lists: np.ndarray | None = None):
        if lists is None:
            lists = ivf.assign(x, index.centroids)
        hsq = half_sqnorms(x)
        if index.quantizer is None:
            return lists, None, None, hsq
        q = index.quantizer

        def encode(lo: int, hi: int):
            r = np.empty((hi - lo, x.shape[1]), np.float32)
            residual_rows(x[lo:hi], _ALL_ROWS, index.centroids, lists[lo:hi], r)
            return q.encode(r, index.centroids[lists[lo:hi]] if q.needs_centroid_rows else None, lists[lo:hi])

        # the quantizers' encoders are numpy and numba, which release the GIL
        parts = map_row_blocks(encode, len(x), ENCODE_BLOCK)
        code, factors = parts[0] if len(parts) == 1 else (np.concatenate(a) for a in zip(*parts))
        return lists, code, factors, hsq

    def _index_meta(self, index: _Index) -> dict[str, bytes]:
        buf = io.BytesIO()
        state = {} if index.quantizer is None else index.quantizer.state()
        np.savez(buf, centroids=index.centroids, trained_n=np.int64(index.trained_n),
                 **{f"q_{k}": v for k, v in state.items()})
        return {"index": buf.getvalue(), "format": FORMAT_VERSION}

    def _retrain(self) -> None:
        """Retrain on a sample of the originals and re-encode every point.

        One pass over the originals, after the quantizer is fitted on the sample
        (whose lists are assigned the way every point's are): it assigns every
        point to the new lists and encodes it. k-means starts from the current
        centroids when the list count stays the same.

        Runs under the write lock; searches keep using the old index until the
        new one (and its persisted code records) are complete, then switch.
        """
        live = self._codes.live_ids()
        n = len(live)
        rng = np.random.default_rng(self.config.quantization.seed + n)
        pick = np.sort(rng.choice(live, min(n, self.config.index.train_sample), replace=False))
        with self.store.read_txn() as txn:
            found, sample = self.store.get_vectors(txn, pick)
        pick = pick[found]
        sample = np.ascontiguousarray(sample)
        self.progress("sample", len(sample), len(sample))
        old = self._index
        init = None if old is None or old.nlist == 1 else old.centroids
        held = None
        if init is not None and self._codes is not None:
            # init's nearest for every point a write assigned (by BLAS); a warm retrain's
            # near pass left the rest in their nearest list or a near one
            held = self._codes.lists_of(pick)
            if not (held >= 0).all():
                held = None
        # the sample is at most train_sample points: _subsample would keep all of it
        centroids = self._train_centroids(sample, n, init=init, labels=held)
        # warm start: the lists kept their numbers, so each point is compared only with
        # the centroids nearest its old list's (a full assignment of every point against
        # every centroid was a third of an ingest). On docs384 at 80k points 95 % land in
        # their nearest list and the rest in a near one; 1-bit recall@10 at oversampling
        # 3 went from 0.9525 to 0.9513, ingest from 14.9-18.2k to 17.2-20.5k vectors/s.
        warm = (old is not None and old.nlist == len(centroids) > ivf.NEIGHBOURS and self._codes is not None)
        near = ivf.centroid_neighbours(centroids, ivf.NEIGHBOURS)[0] if warm else None

        def lists_of(ids, x):
            prev = self._codes.lists_of(ids) if warm else None
            if warm and (prev >= 0).all():
                return ivf.near_assign(x, centroids, prev, near)
            return ivf.assign(x, centroids)

        # the sample's lists are what every point's would be (assignment is per point),
        # so the quantizer fits first and one pass over the originals assigns and encodes
        # (the sampled points take the lists found for them: at 20k points that is all of them)
        sample_lists = lists_of(pick, sample)
        index = self._fit_quantizer(sample, sample_lists, centroids, n, previous=old)

        def chunk_lists(ids, x):
            if not len(pick):
                return lists_of(ids, x)
            at = np.searchsorted(pick, ids).clip(0, len(pick) - 1)
            hit = pick[at] == ids
            out = np.empty(len(ids), np.int32)
            out[hit] = sample_lists[at[hit]]
            if not hit.all():
                out[~hit] = lists_of(ids[~hit], x[~hit])
            return out

        codes = self._new_code_store(index)
        recs = np.empty(n, codes.record)
        all_ids = []
        done = 0
        for chunk_ids, x in self.store.iter_vectors(chunk=16_384):
            m = len(chunk_ids)
            if done + m > n:  # only this writer writes; a guard
                raise RuntimeError(f"shard {self.path}: the originals changed during a retrain")
            recs[done:done + m] = codes.make_records(*self._encode(index, x, chunk_lists(chunk_ids, x)))
            all_ids.append(chunk_ids)
            done += m
            self.progress("encode", done, n)
        ids = np.concatenate(all_ids) if all_ids else np.zeros(0, np.uint64)
        if done != n or not np.array_equal(ids, np.sort(live)):
            raise RuntimeError(f"shard {self.path}: the originals changed during a retrain")
        del all_ids
        self.store.put_meta(self._index_meta(index), code_records=(ids, recs.view(np.uint8).reshape(len(ids), -1)))
        codes.load_records(ids, recs)
        codes.refresh()
        hc = self.config.hnsw
        if hc is not None:
            old = self._codes
            if old.graph.deleted_fraction(old.n) <= hc.rebuild_deleted:
                codes.graph = hnsw.carry_over(old, codes)  # the points did not move: keep their links
            else:
                off, b = index.quantizer.graph_view(index.centroids)
                codes.graph = hnsw.rebuild(codes, off, b, self.use_sqnorm)
            codes.reorder()  # not searched yet: no lock needed
            codes.refresh()
        with self._rw.exclusive():
            self._index, self._codes = index, codes
        del recs
        release_free_memory()
        log.info("shard %s retrained: %d points, %d lists", self.path, n, index.nlist)

    # -- reads ----------------------------------------------------------
    def count(self) -> int:
        return 0 if self._codes is None else self._codes.n

    def retrieve(self, ids, with_payload: bool = True, with_vector: bool = False) -> Records:
        ids = _as_ids(ids)
        with self._rw.shared(), self.store.read_txn() as txn:
            found, x = self.store.get_vectors(txn, ids)
            ids = ids[found]
            payloads = self._payloads(txn, ids) if with_payload else None
        return Records(ids, payloads, x.copy() if with_vector else None)

    def _payloads(self, txn, ids) -> list:
        return [None if b is None else json.loads(b) for b in self.store.get_payloads(txn, ids)]

    def search(self, query, limit: int, oversampling: float = 1.0, rescore: bool = True,
               ignore: bool = False, exact: bool = False, effort: int | None = None,
               with_payload: bool = False, with_vector: bool = False,
               score_threshold: float | None = None) -> Hits:
        q = np.asarray(query, dtype=np.float32) if not isinstance(query, np.ndarray) else query
        if q.ndim != 1:
            raise InvalidArgument(f"a query is one vector; got shape {q.shape} (use search_batch)")
        return self.search_batch(q[None, :], limit, oversampling, rescore, ignore, exact, effort,
                                 with_payload, with_vector, score_threshold)[0]

    def search_batch(self, queries, limit: int, oversampling: float = 1.0, rescore: bool = True,
                     ignore: bool = False, exact: bool = False, effort: int | None = None,
                     with_payload: bool = False, with_vector: bool = False,
                     score_threshold: float | None = None) -> list[Hits]:
        """Search m queries (m, d) at once; the batch shares one rotation, one
        probe selection, one kernel call and one LMDB read transaction."""
        k = oversampled_top(limit, oversampling)
        qx = np.asarray(queries, dtype=np.float32)
        if qx.ndim != 2:
            raise InvalidArgument(f"queries must be a 2-d array (m, {self.dim}), got shape {qx.shape}")
        Q = self._vectors(qx, "query")
        if effort is not None and (isinstance(effort, bool) or int(effort) < 1):
            raise InvalidArgument(f"effort (nprobe) must be >= 1, got {effort}")
        if score_threshold is not None and not math.isfinite(float(score_threshold)):
            raise InvalidArgument("score_threshold must be a finite number")
        self.searches += len(Q)
        if self._codes is not None and self._codes.stale:
            with self._rw.exclusive():
                renumbered = self._codes.refresh()
            if renumbered:  # the replaced arrays' blocks go back to the system
                release_free_memory()
        with self._rw.shared():
            index, codes = self._index, self._codes
            if index is None or codes.n == 0:
                return [Hits(np.zeros(0, np.uint64), np.zeros(0, np.float32),
                             [] if with_payload else None,
                             np.zeros((0, self.dim), np.float32) if with_vector else None) for _ in Q]
            with self.store.read_txn() as txn:
                if exact:
                    ids, ranks = self._exact_scan(txn, Q, k)
                elif self.config.hnsw is not None:
                    ef = int(effort) if effort else self.config.hnsw.ef
                    if ignore:  # originals only: rescore the whole beam
                        ids, ranks, slots = self._graph_candidates(index, codes, Q, max(ef, k), max(ef, k))
                        ids, ranks = self._rescore(txn, Q, ids, slots, codes)
                        ids, ranks = [i[:k] for i in ids], [r[:k] for r in ranks]
                    else:
                        ids, ranks, slots = self._graph_candidates(index, codes, Q, k, ef)
                        if rescore:
                            ids, ranks = self._rescore(txn, Q, ids, slots, codes)
                elif index.quantizer is not None and not ignore and self._one_call(index, codes, Q):
                    ids, ranks, slots = self._listed_candidates(index, codes, Q, k, effort)
                    if rescore:
                        ids, ranks = self._rescore(txn, Q, ids, slots, codes)
                else:
                    probes = self._probes(index, codes, Q, k, effort)
                    if index.quantizer is None or ignore:
                        ids, ranks = self._originals_scan(txn, index, codes, Q, probes, k)
                    else:
                        ids, ranks, slots = self._candidates(index, codes, Q, probes, k)
                        if rescore:
                            ids, ranks = self._rescore(txn, Q, ids, slots, codes)
                return self._finish(txn, Q, ids, ranks, with_payload, with_vector, score_threshold)

    # -- search steps ---------------------------------------------------
    def _probe_rule(self, index: _Index, k, effort) -> tuple[int, int]:
        """(nprobe, fewest candidates) of a search: ``effort`` lists when given;
        by default enough of the nearest lists to hold ``scan_factor * k`` points
        (at least the configured nprobe), since more candidates need a wider net
        to be right."""
        if effort:
            return int(effort), k
        ic = self.config.index
        return ic.nprobe or ivf.auto_nprobe(index.nlist), k * ic.scan_factor

    def _probes(self, index: _Index, codes: CodeStore, Q, k, effort):
        """Lists to probe (``_probe_rule``), nearest first, and the list terms."""
        _, _, sizes = codes.layout()
        coarse = index.quantizer is not None and index.quantizer.coarse_list_term
        qc = codes.query_base(index.centroids, Q, in_bytes=coarse)
        nprobe, want = self._probe_rule(index, k, effort)
        return ivf.select_probes(qc, index.probe_half, sizes, nprobe, want, index.probe_scale), qc

    def _one_call(self, index: _Index, codes: CodeStore, Q) -> bool:
        """Whether step 1 runs as one kernel call (``search_lists``): quantizers
        that have it, for batches small enough to read held centroids."""
        return (len(Q) <= codes.INT16_BASE_MAX_QUERIES and index.nlist > 1
                and hasattr(index.quantizer, "search_lists"))

    def _listed_candidates(self, index: _Index, codes: CodeStore, Q, k, effort):
        """Step 1 in one kernel call: list terms, probe choice and scan, as
        ``_probes`` then ``_candidates`` would do them. Returns lists of (ids,
        approx ranks, slots)."""
        offsets, members, sizes = codes.layout()
        nprobe, want = self._probe_rule(index, k, effort)
        out_s = np.empty((len(Q), k), np.float32)  # every row filled, its tail with sentinels
        out_i = np.empty((len(Q), k), np.int64)
        counts = index.quantizer.search_lists(
            Q, codes.held_centroids(index.centroids, in_bytes=True), index.probe_half,
            index.probe_scale, sizes, nprobe, want, offsets, members, codes.codes, codes.factors, codes.half_sqnorm,
            self.use_sqnorm, out_s, out_i)
        ranks, slots = _per_query(counts, out_s, out_i)
        return [codes.slot_ids[s] for s in slots], ranks, slots

    def _candidates(self, index: _Index, codes: CodeStore, Q, probes, k):
        """Step 1: top-k per query on the codes. Returns lists of (ids, approx
        ranks, slots)."""
        probe, qc = probes
        prepared, const = index.quantizer.prepare(Q)
        base = np.ascontiguousarray(qc + const[:, None], np.float32)
        offsets, members, _ = codes.layout()
        out_s = np.full((len(Q), k), -np.inf, np.float32)
        out_i = np.full((len(Q), k), -1, np.int64)
        counts = index.quantizer.scan(prepared, base, probe, offsets, members, codes.codes, codes.factors,
                                      codes.half_sqnorm, self.use_sqnorm, out_s, out_i)
        ranks, slots = _per_query(counts, out_s, out_i)
        return [codes.slot_ids[s] for s in slots], ranks, slots

    def _graph_candidates(self, index: _Index, codes, Q, k, ef):
        """Step 1 through the HNSW graph: top-k per query on the codes, with a
        beam of max(ef, k). Returns lists of (ids, approx ranks, slots)."""
        ids, scores, slots, counts = codes.search(index.quantizer, index.centroids, Q, k, ef, self.use_sqnorm)
        return _per_query(counts, ids, scores, slots)

    def _gather(self, txn, id_lists, slot_lists=None, codes=None):
        """Originals of the union of candidate ids, read once for the batch (by
        the leaf nodes of their slots when ``_node_table`` has them).

        Returns (ids per query that still exist, rows into the block per query, block).
        """
        table = None if slot_lists is None else self._node_table(txn, codes)

        def read(ids, slots):
            if table is None:
                return self.store.get_vectors(txn, ids)
            return self.store.get_vectors_at(txn, ids, slots, table)

        if len(id_lists) == 1:  # one query: its candidates are distinct already
            found, block = read(id_lists[0], None if table is None else slot_lists[0])
            self.originals_read += len(id_lists[0])
            return [id_lists[0][found]], [np.arange(len(block))], block
        allids = np.concatenate(id_lists) if id_lists else np.zeros(0, np.uint64)
        uniq, first, inverse = np.unique(allids, return_index=True, return_inverse=True)
        found, block = read(uniq, None if table is None else np.concatenate(slot_lists)[first])
        self.originals_read += len(uniq)
        row_of = np.cumsum(found) - 1
        out_ids, out_rows, start = [], [], 0
        for ids in id_lists:
            inv = inverse[start:start + len(ids)]
            start += len(ids)
            ok = found[inv]
            out_ids.append(ids[ok])
            out_rows.append(row_of[inv[ok]])
        return out_ids, out_rows, block

    def _node_table(self, txn, codes):
        """(cap,) int64, the leaf node in the data file of each slot's original as
        of txn's snapshot (-1: none), or None when no table is current.

        A table is good for one snapshot and one arrangement of slots: it lives on
        the code store (which drops it whenever slots change) tagged with the LMDB
        transaction id it was read in. When it is stale, a thread builds the next
        (``_locate``) while searches go on by descent.
        """
        held = codes.row_nodes
        if held is not None and held[0] == txn.id():
            return held[1]
        if codes.n >= LOCATE_MIN_POINTS and self._locator is None and time.monotonic() >= self._locate_after:
            with self._locator_lock:
                if self._locator is None and time.monotonic() >= self._locate_after:
                    self._locator = threading.Thread(target=self._locate, name="quiver-locate", daemon=True)
                    self._locator.start()
        return None

    def _locate(self) -> None:
        """Build the node table of the current snapshot and slots (a thread of
        ``_node_table``): one pass over the leaves, ~8 ms at 100k points.

        The pass holds only the store's map guard (no map growth under its read
        transaction), not the engine's lock, so writes are not held up by it; the
        keys are mapped to slots and the table published under the lock. A
        table is used only by transactions of the same snapshot id, and those
        see the slots it was mapped with: any write between the pass and the
        mapping commits a newer snapshot (see ``_node_table``).
        """
        t0 = time.monotonic()
        try:
            with self.store.map_guard.shared():
                if getattr(self.store, "closed", False):
                    return
                with self.store.read_txn() as txn:
                    tid = txn.id()
                    got = self.store.pages.nodes(txn)
            if got is None:
                return
            keys, nodes = got
            with self._rw.shared():
                codes = self._codes
                if codes is None:
                    return
                slots = codes.slots_of(keys)
                table = np.full(len(codes.slot_ids), -1, np.int64)
                ok = slots >= 0
                table[slots[ok]] = nodes[ok]
                codes.row_nodes = (tid, table)
                self.node_tables_built += 1
        except Exception:  # a cache: searches read by descent without it
            log.exception("shard %s: locating originals failed", self.path)
        finally:
            with self._locator_lock:
                self._locate_after = max(self._locate_after, time.monotonic() + LOCATE_PAUSE * (time.monotonic() - t0))
                self._locator = None

    def _rescore(self, txn, Q, id_lists, slot_lists=None, codes=None):
        """Step 2 and 3: exact ranks of the candidates, best first. Their slots in
        ``codes`` (when given) let the originals be read without descents."""
        if slot_lists is not None and len(Q) == 1:
            table = self._node_table(txn, codes)
            if table is not None:  # read and ranked in one pass where the values lie
                got = self.store.pages.ranks_at(table, slot_lists[0], id_lists[0], Q[0], self.use_sqnorm)
                if got is not None:
                    self.originals_read += len(id_lists[0])
                    return [got[0]], [got[1]]
        ids_l, rows_l, block = self._gather(txn, id_lists, slot_lists, codes)
        hsq = half_sqnorms(block) if self.use_sqnorm else _NO_NORMS
        out_ids, out_ranks = [], []
        for q, ids, rows in zip(Q, ids_l, rows_l):
            order, r = ranked_rows(block, rows, q, hsq)
            out_ids.append(ids[order])
            out_ranks.append(r)
        return out_ids, out_ranks

    def _originals_scan(self, txn, index, codes, Q, probes, k):
        """Every point of the probed lists scored exactly on its original."""
        probe, _ = probes
        offsets, members, _ = codes.layout()
        lists = [p[p >= 0] for p in probe]
        cand = [codes.slot_ids[members[np.concatenate([np.arange(offsets[l], offsets[l + 1]) for l in ls])]]
                for ls in lists]
        ids, ranks = self._rescore(txn, Q, cand)
        return [i[:k] for i in ids], [r[:k] for r in ranks]

    def _exact_scan(self, txn, Q, k):
        """Every original, scored exactly, streamed from LMDB in chunks."""
        best_ids = [np.zeros(0, np.uint64) for _ in Q]
        best_r = [np.zeros(0, np.float32) for _ in Q]
        for ids, x in self.store.iter_vectors(chunk=16_384):
            self.originals_read += len(ids)
            hsq = half_sqnorms(x) if self.use_sqnorm else None
            for i, q in enumerate(Q):
                r = dot_rows(x, q)
                if hsq is not None:
                    r -= hsq
                cand_r = np.concatenate([best_r[i], r])
                cand_i = np.concatenate([best_ids[i], ids])
                top = np.argsort(-cand_r, kind="stable")[:k]
                best_r[i], best_ids[i] = cand_r[top], cand_i[top]
        return best_ids, best_r

    def _finish(self, txn, Q, ids_l, ranks_l, with_payload, with_vector, score_threshold) -> list[Hits]:
        out = []
        qn2 = np.einsum("ij,ij->i", Q, Q) if self.use_sqnorm else None
        for i, (ids, ranks) in enumerate(zip(ids_l, ranks_l)):
            scores = self._scores(ranks, None if qn2 is None else qn2[i])
            if score_threshold is not None:
                keep = scores >= score_threshold
                ids, scores = ids[keep], scores[keep]
            ids = np.ascontiguousarray(ids, np.uint64)
            payloads = self._payloads(txn, ids) if with_payload else None
            vectors = None
            if with_vector:
                _, vectors = self.store.get_vectors(txn, ids)
                vectors = vectors.copy()
            out.append(Hits(ids, scores.astype(np.float32), payloads, vectors))
        return out

    def _scores(self, ranks, qn2):
        """API scores from internal ranks (inner product, or <o,q> - ||o||^2/2 for euclid)."""
        if qn2 is None:
            return np.asarray(ranks, np.float32)
        return -np.sqrt(np.maximum(qn2 - 2.0 * np.asarray(ranks, np.float64), 0.0)).astype(np.float32)

    # -- transfer and snapshots ----------------------------------------
    def iter_batches(self, batch_size: int = 1024):
        """Every point as (ids (n,) uint64, vectors (n, d) float32, payloads: n stored
        JSON-object bytes, b"" = none), ``batch_size`` at a time, from one LMDB read
        transaction (a consistent snapshot; writes go on meanwhile)."""
        with self._write_lock:
            # Room for as many bytes of writes as the shard holds now: pages the
            # export's snapshot pins cannot be reused meanwhile, and a map growth
            # would cut the export short (Unavailable: start over).
            self.store.reserve(self.store.disk_bytes())
            return self.store.iter_batches(batch_size)

    def copy_to(self, fd: int) -> int:
        """Write a compacted, consistent copy of the shard's LMDB environment to ``fd``.

        The environment is the whole shard (config, centroids, quantizer state
        and code records live in its ``meta`` and ``codes`` databases), so
        ``ShardEngine.open`` on a directory holding the copy as ``data.mdb``
        reopens it. Returns the copy's point count.
        """
        return self.store.copy_to(fd)

    # -- introspection --------------------------------------------------
    def stats(self) -> dict:
        codes = self._codes
        index = self._index
        ram = 0 if codes is None else codes.ram_bytes()
        if index is not None:
            ram += index.centroids.nbytes
        return {
            "points": self.count(),
            "ram_bytes": int(ram),
            "disk_bytes": self.store.disk_bytes(),
            "originals_read": int(self.originals_read),
            "searches": int(self.searches),
            "lists": 0 if index is None else index.nlist,
            "code_bytes_per_vector": 0 if index is None or index.quantizer is None else index.quantizer.code_bytes,
        }
