"""The one small interface every quantizer implements.

Quantizers encode *residuals*: a point o in list l is coded as r = o - c_l, and
every quantizer estimates the inner product ``<q, o> = <c_l, q> + <q, r>``.
The engine computes ``<c_l, q>`` once per query and list; a quantizer adds its
own per-query constant and scores codes. Distances reduce to inner products
(cosine on normalised vectors, euclid through ``0.5 ||o||^2``), so one estimate
serves all three.

No storage, gRPC or engine imports here: a quantizer is arrays in, arrays out.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Quantizer(Protocol):
    #: bytes of RAM per vector for the code and its per-vector factors
    code_bytes: int
    #: numpy dtype and width of one row of the codes array
    code_dtype: np.dtype
    code_width: int
    #: number of float32 per-vector factors stored beside the code
    n_factors: int
    #: how many residuals ``fit`` wants (0: it learns nothing from data, and the
    #: engine skips computing a sample's residuals)
    fit_sample: int
    #: whether the per-list term ``<c_l, q>`` may come from centroids held in one
    #: byte a dimension (CodeStore.query_base): its rounding, ~1e-3 of a score,
    #: must be far below the quantizer's own estimation error
    coarse_list_term: bool
    #: whether ``encode`` reads each point's centroid row; the engine passes None
    #: for ``centroids`` to quantizers that do not (and skips gathering them)
    needs_centroid_rows: bool

    # Quantizers whose codes an HNSW graph can walk (config.HNSW_KINDS) also have
    # ``graph_view(centroids) -> (off, b)`` (see shard/kernels/graph.py) and
    # ``graph_points(x)``: points and queries in the coordinates of that view
    # (the product quantizer's rotation; the scalar one's are the originals').

    def fit(self, residuals: np.ndarray, previous: "Quantizer | None" = None) -> None:
        """Learn parameters from a sample of residuals (n, d) float32.
        ``previous``: the quantizer of the index being replaced (same config),
        a starting point for a quantizer that learns iteratively."""

    def encode(self, residuals: np.ndarray, centroids: np.ndarray,
               lists: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Codes (n, code_width) and factors (n, n_factors) float32 of residuals
        (n, d) whose list centroids are the rows of ``centroids`` (n, d), or None
        when ``needs_centroid_rows`` is false.
        ``lists`` (n,): those centroids' rows in the table given to ``bind``, when
        the caller knows them (a quantizer may look per-list values up)."""

    def bind(self, centroids: np.ndarray) -> None:
        """The index's centroid table (nlist, d), given once per index (optional)."""

    def prepare(self, queries: np.ndarray) -> tuple[object, np.ndarray]:
        """Per-query state for ``scan`` and the per-query constant (m,) float32
        added to every list's ``<c_l, q>``."""

    def scan(self, prepared, base, probes, offsets, members, codes, factors,
             half_sqnorm, use_sqnorm, out_scores, out_slots) -> np.ndarray:
        """Run the numba scan kernel; returns counts (m,) int64."""

    def reference_scores(self, queries: np.ndarray, lists: np.ndarray, centroids: np.ndarray,
                         codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
        """Plain numpy estimate of ``<q, o>`` (m, n) for coded points whose
        lists are ``lists`` (n,): the slow, obviously-correct twin of ``scan``."""

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that, with the config, rebuild an identical quantizer."""
