"""Product quantization of residuals: k-means codebooks per subspace, LUT scoring."""

from __future__ import annotations

import math

import numpy as np

from shard.kernels.kmeans import lloyd_1d, pq_assign, pq_update
from shard.kernels.product import product_luts, product_scan
from shard.parallel import map_row_blocks

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


class ProductQuantizer:
    """M = ceil(d / dsub) subspaces of dsub dimensions, 256 codewords each.

    Each code byte stands for dsub float32 values, so compression is
    ``4 * dsub`` (x4 .. x64). Residuals are padded with zeros to ``M * dsub``.
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
        self.seed = seed
        self.codebooks: np.ndarray | None = None  # (M, K, dsub) float32
        self.books_t: np.ndarray | None = None  # the same (M, dsub, K): lookup tables and graph view

    def _pad(self, x: np.ndarray) -> np.ndarray:
        width = self.M * self.dsub
        if x.shape[1] == width:
            return np.ascontiguousarray(x, np.float32)
        out = np.zeros((len(x), width), np.float32)
        out[:, : x.shape[1]] = x
        return out

    def fit(self, residuals: np.ndarray, previous=None) -> None:
        """k-means per subspace on the residuals (n, d); from ``previous``'s
        codebooks when it is a fitted product quantizer of the same shape."""
        x = self._pad(residuals)
        n = len(x)
        if (isinstance(previous, ProductQuantizer) and previous.codebooks is not None
                and previous.codebooks.shape == (self.M, self.K, self.dsub)):
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
            cols = np.sort(x.T, axis=1)
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
        self.codebooks = np.ascontiguousarray(cb, np.float32)
        self.books_t = np.ascontiguousarray(self.codebooks.transpose(0, 2, 1))

    def encode(self, residuals, centroids, lists=None):
        codes = pq_assign(self._pad(residuals), self.codebooks)
        return codes, np.zeros((len(codes), 0), np.float32)

    def prepare(self, queries):
        lut = product_luts(self._pad(queries), self.books_t)
        return lut, np.zeros(len(queries), np.float32)

    def scan(self, prepared, base, probes, offsets, members, codes, factors,
             half_sqnorm, use_sqnorm, out_scores, out_slots):
        return product_scan(prepared, base, probes, offsets, members, codes,
                            half_sqnorm, use_sqnorm, out_scores, out_slots)

    def reference_scores(self, queries, lists, centroids, codes, factors):
        recon = self.codebooks[np.arange(self.M)[None, :], codes.astype(np.int64)]  # (n, M, dsub)
        recon = recon.reshape(len(codes), -1)[:, : self.dim]
        return queries @ (centroids[lists] + recon).T

    def graph_view(self, centroids):
        """(off, b) through which the HNSW kernels read a code of list l as
        ``off[l] + concat_j b[j, :, code[j]]``: the centroids and the codebooks
        transposed (M, dsub, K), the layout a point's lookup table is built from."""
        return np.ascontiguousarray(centroids, np.float32), self.books_t

    def state(self):
        return {"codebooks": self.codebooks}

    def load_state(self, state) -> None:
        self._set_codebooks(state["codebooks"])
