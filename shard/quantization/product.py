"""Product quantization of residuals: k-means codebooks per subspace, LUT scoring.

Before a residual is cut into subspaces it is rotated (an orthogonal matrix
learned from the fit sample: the principal axes of the residuals, dealt out so
that every subspace holds a like share of the variance; Ge et al.'s "eigenvalue
allocation", the parametric form of optimized product quantization). Embedding
dimensions carry very unequal variance and are correlated; split as they come,
some subspaces' 256 codewords spend themselves on little spread while others
are starved. On docs384 (flat scan of the residual codes over 566 lists,
recall@10 after exact rescoring at oversampling 1/2/3/4):

===========  =======================  =======================
compression  dimensions as they come  rotated
===========  =======================  =======================
x8           0.949 0.999 1.000 1.000  0.962 0.999 0.999 0.999
x16          0.849 0.981 0.995 0.998  0.892 0.996 0.999 1.000
x32          0.692 0.859 0.913 0.940  0.778 0.938 0.975 0.986
x64          0.534 0.684 0.753 0.793  0.614 0.791 0.862 0.898
===========  =======================  =======================

A random rotation gained nothing (x32 0.696 / 0.961 at oversampling 1 / 4,
raw vectors), iterating the rotation as non-parametric OPQ does (Procrustes
steps between k-means steps) 8-32 times reached 0.70-0.76 at oversampling 1
for 1-7 s of training, where the allocation costs one 384 x 384 eigen
decomposition (~0.1 s). x4 (one dimension a subspace) is not rotated: each
dimension is coded on its own at the same 8 bits, so the total error does not
depend on the axes (0.986 as they come, 0.980 rotated).
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from shard.kernels.kmeans import lloyd_1d, pq_assign, pq_update
from shard.kernels.product import product_luts, product_scan
from shard.parallel import map_row_blocks, matmul_rows

#: float32 dimensions per one-byte subquantizer, by compression ratio.
SUBSPACE_DIMS = {"x4": 1, "x8": 2, "x16": 4, "x32": 8, "x64": 16}
#: k-means iterations from codewords drawn from the sample, and from a previous
#: quantizer's codebooks (a retrain). On docs384 (100k points, retrains at 20k and 80k)
#: 8 + 4 + 4 ranked as well as 12 + 12 + 12 (x16 recall@10 at oversampling 1/2/4
#: 0.814/0.944/0.978 against 0.812/0.942/0.978; x32 0.680/0.844/0.933 against
#: 0.678/0.845/0.932) and ingest went from 18k to 24k vectors/s (x16). The codebooks'
#: error still falls past 12 iterations, the ranking does not improve.
TRAIN_ITERATIONS = 8
WARM_ITERATIONS = 4
#: Two-dimensional subspaces (x8) train on fewer residuals: 256 codewords in 2
#: dimensions are settled by 12k points (47 a codeword). docs384 x8, recall@10 at
#: oversampling 1 / 4 without rescoring: 20k residuals 0.8796 / 0.9268, 12k 0.8798 /
#: 0.9280; ingest, interleaved, 20.8k -> 22.4k vectors/s (x8's 2-d subspaces cost the
#: most to assign a point). Wider subspaces keep 20k (x32 with 12k: 0.7494 against
#: 0.7519, and lower at oversampling 4).
NARROW_FIT_SAMPLE = 12_000


#: The rotation is learned from at most this many residuals of a fit's sample
#: (a 384 x 384 covariance is well settled by then), and a retrain keeps the
#: previous quantizer's rotation, and starts from its codebooks, when it was
#: learned from at least as many as the new sample offers (a growing shard's
#: first fits see a few thousand); a fresh rotation means fresh codebooks. The
#: axes move little as lists are added: a rotation learned on the residuals of
#: 141 lists coded those of 566 as well as their own (docs384 x32, 0.773 against
#: 0.778 at oversampling 1).
ROTATION_SAMPLE = 10_000


def allocate_axes(x: np.ndarray, M: int, dsub: int) -> np.ndarray:
    """The rotation (w, w) float32 of the residual sample x (n, w = M * dsub):
    x @ R are coordinates along x's principal axes, whose variances
    (eigenvalues) are dealt largest first, each to the subspace with the least
    log-variance so far among those with room, so each subspace's product of
    variances comes out alike. An orthogonal matrix: inner products and norms
    are unchanged."""
    n, w = x.shape
    cov = (x.T @ x).astype(np.float64) / max(n, 1)  # float32 product (BLAS), float64 decomposition
    var, axes = np.linalg.eigh(cov)
    order = np.argsort(-var, kind="stable")
    var = np.maximum(var[order], 1e-12)
    log_var = np.log(var / var.min())  # >= 0: an empty subspace is the emptiest
    heap = [(0.0, j) for j in range(M)]
    members: list[list[int]] = [[] for _ in range(M)]
    for i in range(w):
        total, j = heapq.heappop(heap)
        members[j].append(int(order[i]))
        if len(members[j]) < dsub:
            heapq.heappush(heap, (total + float(log_var[i]), j))
    return np.ascontiguousarray(axes[:, np.concatenate(members)], np.float32)


class ProductQuantizer:
    """M = ceil(d / dsub) subspaces of dsub dimensions, 256 codewords each.

    Each code byte stands for dsub float32 values, so compression is
    ``4 * dsub`` (x4 .. x64). Residuals are padded with zeros to ``M * dsub``
    and, from x8 on, rotated (``allocate_axes``); the codebooks, lookup tables
    and graph view live in the rotated coordinates.
    """

    code_dtype = np.dtype(np.uint8)
    n_factors = 0
    #: k-means per subspace on this many residuals at most
    fit_sample = 20_000
    #: the list term from float32 or int16 centroids only (not measured in bytes)
    coarse_list_term = False
    needs_centroid_rows = False

    def __init__(self, dim: int, compression: str = "x16", seed: int = 0):
        self.dim = dim
        self.dsub = SUBSPACE_DIMS[compression]
        self.M = int(math.ceil(dim / self.dsub))
        self.K = 256
        self.code_width = self.M
        self.code_bytes = self.M
        if self.dsub == 2:
            self.fit_sample = NARROW_FIT_SAMPLE
        self.seed = seed
        self.codebooks: np.ndarray | None = None  # (M, K, dsub) float32
        self.books_t: np.ndarray | None = None  # the same (M, dsub, K): lookup tables and graph view
        self.rotation: np.ndarray | None = None  # (M * dsub,) * 2 float32; None at x4
        self.rotation_n = 0  # residuals the rotation was learned from
        self._view: tuple[np.ndarray, np.ndarray] | None = None  # (centroids, rotated): graph_view's last

    def _pad(self, x: np.ndarray) -> np.ndarray:
        width = self.M * self.dsub
        if x.shape[1] == width:
            return np.ascontiguousarray(x, np.float32)
        out = np.zeros((len(x), width), np.float32)
        out[:, : x.shape[1]] = x
        return out

    def rotate(self, x: np.ndarray) -> np.ndarray:
        """x (n, d) in the coordinates the codes are in: padded to M * dsub, and
        rotated (n, M * dsub) float32."""
        xp = self._pad(x)
        if self.rotation is None:
            return xp
        return np.ascontiguousarray(xp @ self.rotation, np.float32)

    def fit(self, residuals: np.ndarray, previous=None) -> None:
        """Rotation and k-means per subspace on the residuals (n, d); from
        ``previous``'s rotation and codebooks when it is a fitted product
        quantizer of the same shape whose rotation is worth keeping (see the
        note above ``allocate_axes``)."""
        x = self._pad(residuals)
        n = len(x)
        warm = (isinstance(previous, ProductQuantizer) and previous.codebooks is not None
                and previous.codebooks.shape == (self.M, self.K, self.dsub)
                and (self.dsub == 1 or previous.rotation is not None  # (None: a shard from before rotations)
                     and previous.rotation_n >= min(n, ROTATION_SAMPLE)))
        if self.dsub == 1:
            self.rotation, self.rotation_n = None, 0
        elif warm:
            self.rotation, self.rotation_n = previous.rotation, previous.rotation_n
        else:
            learn = x[:: -(-n // ROTATION_SAMPLE)] if n > ROTATION_SAMPLE else x  # spread over the sample
            self.rotation, self.rotation_n = allocate_axes(learn, self.M, self.dsub), len(learn)
        if self.rotation is not None:
            x = matmul_rows(x, self.rotation)
        if warm:
            cb = previous.codebooks.copy()
            iterations = WARM_ITERATIONS
        else:
            rng = np.random.default_rng(self.seed + 104729)
            # initial codewords: distinct training rows (repeated if n < K)
            pick = rng.permutation(n)[: self.K] if n >= self.K else rng.integers(0, n, self.K)
            cb = x[pick].reshape(self.K, self.M, self.dsub).transpose(1, 0, 2)
            cb = np.ascontiguousarray(cb, np.float32)
            if n < self.K:  # jitter duplicates so they can split
                cb += rng.normal(0, 1e-4, cb.shape).astype(np.float32)
            iterations = TRAIN_ITERATIONS
        if self.dsub == 1:  # x4: each dimension's k-means on its sorted values (kmeans.lloyd_1d)
            cols = np.empty((self.M, n), np.float32)

            def sort_columns(lo: int, hi: int) -> None:
                # each thread copies its dimensions out and sorts them (numpy's sort releases
                # the GIL): 20k x 384 in 50-60 ms where np.sort(x.T, axis=1) took 130-175
                block = cols[lo:hi]
                block[...] = x[:, lo:hi].T
                block.sort(axis=1)

            map_row_blocks(sort_columns, self.M, 32)
            books = np.ascontiguousarray(cb[:, :, 0])
            map_row_blocks(lambda lo, hi: lloyd_1d(cols[lo:hi], books[lo:hi], iterations), self.M, 64)
            self._set_codebooks(books[:, :, None])
            return
        for _ in range(iterations):
            parts = map_row_blocks(lambda lo, hi: pq_assign(x[lo:hi], cb), n, 4096)  # the kernel releases the GIL
            codes = parts[0] if len(parts) == 1 else np.concatenate(parts)
            pq_update(x, codes, cb)
        self._set_codebooks(cb)

    def _set_codebooks(self, cb: np.ndarray) -> None:
        self._view = None  # set after the rotation (fit, load_state): the rotated centroids go stale
        self.codebooks = np.ascontiguousarray(cb, np.float32)
        self.books_t = np.ascontiguousarray(self.codebooks.transpose(0, 2, 1))

    def encode(self, residuals, centroids, lists=None):
        codes = pq_assign(self.rotate(residuals), self.codebooks)
        return codes, np.zeros((len(codes), 0), np.float32)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """The residuals (n, d) float32 that codes (n, M) stand for."""
        recon = self.codebooks[np.arange(self.M)[None, :], codes.astype(np.int64)].reshape(len(codes), -1)
        if self.rotation is not None:
            recon = recon @ self.rotation.T
        return np.ascontiguousarray(recon[:, : self.dim], np.float32)

    def prepare(self, queries):
        lut = product_luts(self.rotate(queries), self.books_t)
        return lut, np.zeros(len(queries), np.float32)

    def scan(self, prepared, base, probes, offsets, members, codes, factors,
             half_sqnorm, use_sqnorm, out_scores, out_slots):
        return product_scan(prepared, base, probes, offsets, members, codes,
                            half_sqnorm, use_sqnorm, out_scores, out_slots)

    def reference_scores(self, queries, lists, centroids, codes, factors):
        return queries @ (centroids[lists] + self.decode(codes)).T

    def graph_view(self, centroids):
        """(off, b) through which the HNSW kernels read a code of list l as
        ``off[l] + concat_j b[j, :, code[j]]``: the centroids (rotated, as the
        graph sees every vector: ``graph_points``) and the codebooks transposed
        (M, dsub, K), the layout a point's lookup table is built from. The
        rotated centroids are kept for the table they came from: every graph
        write asks again (nlist x w x w multiply-adds a call otherwise)."""
        if self._view is None or self._view[0] is not centroids:
            self._view = (centroids, self.rotate(centroids))
        return self._view[1], self.books_t

    def graph_points(self, x: np.ndarray) -> np.ndarray:
        """Vectors (points to link, queries) in the graph view's coordinates."""
        return self.rotate(x)

    def state(self):
        rotation = np.zeros((0, 0), np.float32) if self.rotation is None else self.rotation
        return {"codebooks": self.codebooks, "rotation": rotation, "rotation_n": np.int64(self.rotation_n)}

    def load_state(self, state) -> None:
        # shards written before the rotation hold codebooks of the dimensions as they come
        rotation = state.get("rotation")
        self.rotation = None if rotation is None or rotation.size == 0 else np.ascontiguousarray(rotation, np.float32)
        self.rotation_n = int(state.get("rotation_n", 0))
        self._set_codebooks(state["codebooks"])
