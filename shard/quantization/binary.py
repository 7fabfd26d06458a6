"""Binary codes of rotated residuals with a RaBitQ-style unbiased estimator.

A point o in list l has residual r = o - c_l. Its unit direction u = r / ||r||
is rotated by a fixed random matrix P (D x d, orthonormal columns, D a multiple
of 64) and each rotated coordinate is held at one level ``xbar_j``:

- ``one_bit``: the sign, xbar_j in {-1, +1};
- ``one_and_half_bits``: the sign over D = 1.5 d rotated coordinates (1.5 bits
  per original dimension, the same trick Qdrant's TurboQuant uses);
- ``two_bits``: four uniform levels {-1.5, -0.5, 0.5, 1.5} * step.

The inner product with a query is estimated as

    <q, o> = <c_l, q> + <r, c_l> + <r, q - c_l>
    <r, q - c_l> ~ f * <xbar, P (q - c_l)>,   f = ||r|| / <xbar, P u>
                 = f * <xbar, P q> - f * <xbar, P c_l>

so two float32 factors per vector, ``<r, c_l> - f <xbar, P c_l>`` and ``f``,
carry everything list-specific, and only ``P q`` is held at 1, 4 or 8 bits
(the query encodings ``binary``, ``scalar4bits``, ``scalar8bits``), once per
query rather than once per probed list. Dividing by
``<xbar, P u>`` removes the bias of the plain sign estimate (RaBitQ, Gao and
Long, SIGMOD 2024), so scores sit on the exact scale and stay comparable across
shards without rescoring.
"""

from __future__ import annotations

import math

import numpy as np

from shard.kernels.binary import binary_ivf_search, binary_scan
from shard.kernels.binary_encode import binary_codes, unit_rows
from shard.held import int16_rows
from shard.kernels.layout import list_base

_NO_SCALE = np.zeros(0, np.float32)
QUERY_BITS = {"binary": 1, "scalar4bits": 4, "scalar8bits": 8}
# Step of the optimal uniform 4-level quantizer of a unit Gaussian (Max, 1960).
_TWO_BIT_STEP = 0.9957


def _levels(encoding: str) -> tuple[np.ndarray, float]:
    """Plane weights and offset: xbar = w0 + sum_p w[p] * bit_p."""
    if encoding == "two_bits":
        return np.array([1.0, 2.0], np.float32), -1.5
    return np.array([2.0], np.float32), -1.0


class BinaryQuantizer:
    code_dtype = np.dtype(np.uint64)
    n_factors = 2
    #: the rotation is random, not learned: ``fit`` needs no residuals
    fit_sample = 0
    #: ``encode`` reads each point's centroid (the engine passes those rows; the
    #: other quantizers get None)
    needs_centroid_rows = True
    #: the scan kernel reads codes in blocks of 8 slots (CodeStore: codes[slot >> 3, word, slot & 7])
    blocked = True
    #: the list term may come from centroids held in bytes: its ~1e-3 rounding is
    #: far below a 1-bit estimate's own error (docs384: recall@10 within 3e-4)
    coarse_list_term = True
    #: Up to this many queries, ``prepare`` rotates them with the rotation held in
    #: int16 (``layout.list_base``: half the float32 matrix's bytes, which a query
    #: finds evicted by the previous query's scan); BLAS beyond. In one byte
    #: (``list_base8``) it cost docs384 ~1e-3 of recall@10.
    HELD_ROTATION_MAX_QUERIES = 8

    def __init__(self, dim: int, encoding: str = "one_bit", query_encoding: str = "scalar4bits", seed: int = 0):
        self.dim = dim
        self.encoding = encoding
        self.query_bits = QUERY_BITS[query_encoding]
        expand = 1.5 if encoding == "one_and_half_bits" else 1.0
        self.D = int(math.ceil(dim * expand / 64.0)) * 64
        self.plane_w, self.w0 = _levels(encoding)
        self.n_planes = len(self.plane_w)
        self.W = self.D // 64
        self.code_width = self.n_planes * self.W
        self.code_bytes = self.code_width * 8 + 4 * self.n_factors
        self.seed = seed
        self.rotation: np.ndarray | None = None  # (D, d) float32
        self._crot: np.ndarray | None = None  # the bound centroid table, rotated (nlist, D)
        self._rot16: tuple[np.ndarray, np.ndarray] | None = None  # the rotation in int16 (int16_rows)

    # -- training -------------------------------------------------------
    def fit(self, residuals: np.ndarray, previous=None) -> None:
        """Draw the random rotation. It does not depend on the data: centring
        happens through the list centroids, which the engine trains."""
        rng = np.random.default_rng(self.seed + 7919)
        g = rng.standard_normal((self.D, self.dim))
        q, r = np.linalg.qr(g)  # (D, d), orthonormal columns
        q *= np.sign(np.diag(r))[None, :]
        self.rotation = np.ascontiguousarray(q, np.float32)
        self._crot = None
        self._rot16 = None

    # -- encoding -------------------------------------------------------
    def _level_index(self, up: np.ndarray) -> np.ndarray:
        """Level index k (n, D) uint8 of rotated unit residuals up (n, D)."""
        if self.encoding == "two_bits":
            step = _TWO_BIT_STEP / math.sqrt(self.D)
            return np.clip(np.floor(up / step) + 2, 0, 3).astype(np.uint8)
        return (up > 0).astype(np.uint8)

    def bind(self, centroids: np.ndarray) -> None:
        """Rotate the centroid table once (nlist, D): encoding looks rows up
        instead of rotating each point's centroid again."""
        self._crot = np.ascontiguousarray(centroids @ self.rotation.T, np.float32)

    def encode(self, residuals, centroids, lists=None):
        """Codes (n, code_width) uint64 and factors (n, 2) float32 of residuals
        (n, d) to their centroids (n, d) (rows ``lists`` of the bound table)."""
        r = np.ascontiguousarray(residuals, np.float32)
        c = np.ascontiguousarray(centroids, np.float32)
        n = len(r)
        u = np.empty_like(r)
        norm = np.empty(n, np.float64)
        rc = np.empty(n, np.float64)
        unit_rows(r, c, u, norm, rc)
        up = u @ self.rotation.T
        if lists is not None and self._crot is not None:
            crot, rows = self._crot, np.ascontiguousarray(lists, np.int64)
        else:
            crot, rows = np.ascontiguousarray(c @ self.rotation.T, np.float32), np.arange(n, dtype=np.int64)
        codes = np.empty((n, self.code_width), np.uint64)
        factors = np.empty((n, 2), np.float32)
        step = _TWO_BIT_STEP / math.sqrt(self.D) if self.encoding == "two_bits" else 0.0
        binary_codes(up, crot, rows, norm, rc, self.plane_w, np.float32(self.w0), np.float32(step), codes, factors)
        return codes, factors

    def reference_encode(self, residuals, centroids, lists=None):
        """``encode`` in numpy (what the kernels are held to)."""
        r = np.ascontiguousarray(residuals, np.float32)
        norm = np.sqrt(np.einsum("ij,ij->i", r, r))
        rc = np.einsum("ij,ij->i", r, centroids)
        safe = np.where(norm > 0, norm, 1.0)
        up = (r / safe[:, None]) @ self.rotation.T
        k = self._level_index(up)
        xbar = self.w0 + sum(self.plane_w[p] * ((k >> p) & 1) for p in range(self.n_planes))
        xbar = xbar.astype(np.float32)
        ip = np.einsum("ij,ij->i", xbar, up)
        f = np.where((norm > 0) & (ip > 1e-12), norm / np.maximum(ip, 1e-12), 0.0)
        # fold the centroid out of the query side (see shard/kernels/binary.py)
        crot = self._crot[lists] if lists is not None and self._crot is not None else centroids @ self.rotation.T
        rc = rc - f * np.einsum("ij,ij->i", xbar, crot)
        planes = [np.packbits((k >> p) & 1, axis=1, bitorder="little") for p in range(self.n_planes)]
        codes = np.ascontiguousarray(np.concatenate(planes, axis=1)).view("<u8")
        factors = np.stack([rc, f], axis=1).astype(np.float32)
        return np.ascontiguousarray(codes, np.uint64), factors

    # -- search ---------------------------------------------------------
    def _held_rotation(self) -> tuple[np.ndarray, np.ndarray]:
        if self._rot16 is None:
            self._rot16 = int16_rows(self.rotation)
        return self._rot16

    def prepare(self, queries):
        m = len(queries)
        if m > self.HELD_ROTATION_MAX_QUERIES:
            return np.ascontiguousarray(queries @ self.rotation.T, np.float32), np.zeros(m, np.float32)
        rot, scale = self._held_rotation()
        qrot = np.empty((m, self.D), np.float32)
        list_base(rot, np.ascontiguousarray(queries * scale, np.float32), np.zeros(m, np.float32), qrot)
        return qrot, np.zeros(m, np.float32)

    def search_lists(self, queries, held_centroids, probe_half, probe_scale, list_sizes, nprobe, min_candidates,
                     offsets, members, codes, factors, half_sqnorm, use_sqnorm, out_scores, out_slots):
        """``prepare``, the list terms from ``held_centroids`` (``byte_rows`` of the
        centroids), the probe choice (``ivf.select_probes``) and ``scan`` in one
        kernel call (``binary_ivf_search``), for a few queries. Returns counts."""
        rot, rscale = self._held_rotation()
        cent, cscale = held_centroids
        scale = _NO_SCALE if probe_scale is None else np.ascontiguousarray(probe_scale, np.float32)
        return binary_ivf_search(np.ascontiguousarray(queries, np.float32), rot, rscale, cent, cscale,
                                 np.ascontiguousarray(probe_half, np.float32), scale,
                                 np.ascontiguousarray(list_sizes, np.int64), int(nprobe), int(min_candidates),
                                 offsets, members, codes, factors, half_sqnorm, use_sqnorm, self.plane_w,
                                 np.float32(self.w0), self.query_bits, out_scores, out_slots)

    def _rotate(self, queries: np.ndarray) -> np.ndarray:
        """``prepare``'s rotated queries (m, D) in float64, by numpy."""
        if len(queries) > self.HELD_ROTATION_MAX_QUERIES:
            return (queries @ self.rotation.T).astype(np.float64)
        rot, scale = self._held_rotation()
        return (queries * scale).astype(np.float32).astype(np.float64) @ rot.T.astype(np.float64)

    def scan(self, prepared, base, probes, offsets, members, codes, factors,
             half_sqnorm, use_sqnorm, out_scores, out_slots):
        return binary_scan(prepared, base, probes, offsets, members, codes, factors,
                           half_sqnorm, use_sqnorm, self.plane_w, np.float32(self.w0),
                           self.query_bits, out_scores, out_slots)

    def _held_query(self, v: np.ndarray) -> np.ndarray:
        """The query residual v (D,) as the kernel holds it, in float64."""
        v = v.astype(np.float64)
        if self.query_bits == 1:
            a = np.abs(v).mean()
            return np.where(v > 0, a, -a)
        levels = (1 << self.query_bits) - 1
        lo, hi = v.min(), v.max()
        delta = (hi - lo) / levels if hi > lo else 1.0
        qq = np.minimum(np.floor((v - lo) / delta + 0.5), levels)
        return lo + delta * qq

    def reference_scores(self, queries, lists, centroids, codes, factors):
        by = codes.view(np.uint8)
        nbytes = self.W * 8
        k = np.zeros((len(codes), self.D), np.int64)
        for p in range(self.n_planes):
            bits = np.unpackbits(by[:, p * nbytes:(p + 1) * nbytes], axis=1, bitorder="little")
            k += bits.astype(np.int64) << p
        xbar = self.w0 + sum(self.plane_w[p] * ((k >> p) & 1) for p in range(self.n_planes))
        dots = np.stack([xbar @ self._held_query(v.astype(np.float32)) for v in self._rotate(queries)])
        return (queries @ centroids[lists].T) + factors[:, 0][None, :] + factors[:, 1][None, :] * dots

    def state(self):
        return {"rotation": self.rotation}

    def load_state(self, state) -> None:
        self.rotation = np.ascontiguousarray(state["rotation"], np.float32)
        self._crot = None
        self._rot16 = None
