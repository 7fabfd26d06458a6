"""Float tables held in fewer bytes for the kernels that read them once a query.

A query's list terms read every centroid and its rotation reads the whole
rotation matrix; both arrive from memory, evicted by the previous query's scan,
so a copy with fewer bytes a value comes faster. Each dimension is scaled to its
largest magnitude; the kernels take the per-dimension scale and fold it into the
query (``q * scale``), so a row's score needs no per-row work.
"""

import numpy as np


def int16_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(q (n, d) int16, scale (d,) float32) with x ~= q * scale, each dimension
    scaled to its largest magnitude."""
    scale = np.abs(x).max(axis=0).astype(np.float32) / np.float32(32767.0)
    scale[scale == 0] = 1.0
    return np.ascontiguousarray(np.rint(x / scale), np.int16), scale


def byte_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(u (n, d) uint8, scale (d,) float32) with x ~= (u - 128) * scale, each
    dimension scaled to its largest magnitude (-127..127 before the offset), as
    ``shard.kernels.layout.list_base8`` reads rows."""
    scale = np.abs(x).max(axis=0).astype(np.float32) / np.float32(127.0)
    scale[scale == 0] = 1.0
    return np.ascontiguousarray(np.rint(x / scale) + 128, np.uint8), scale
