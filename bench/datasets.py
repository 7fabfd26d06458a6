"""Benchmark datasets and the recall measure.

docs384: 100,000 base and 1,000 query unit-norm text embeddings (384 dims, cosine),
with the exact top-100 neighbours of every query. Point id = row number in the base.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

DATASETS_ENV = "QUIVER_DATASETS"
DOCS384_FILES = ("base.f16.npy", "queries.f16.npy", "gt_ids.npy")


def default_datasets_dir() -> Path:
    """Folder holding the datasets: $QUIVER_DATASETS, else <repo>/../shared/datasets."""
    env = os.environ.get(DATASETS_ENV)
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parent.parent
    return repo.parent / "shared" / "datasets"


def load_docs384(root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load docs384.

    root: the docs384 folder itself; None means default_datasets_dir() / "docs384".
    Returns (xb, xq, gt):
      xb (100000, 384) float32 C-contiguous base vectors (unit norm),
      xq (1000, 384) float32 C-contiguous query vectors,
      gt (1000, 100) int32 exact top-100 base ids per query, best first.
    Raises FileNotFoundError naming the missing files and how to point at them.
    """
    folder = Path(root) if root is not None else default_datasets_dir() / "docs384"
    missing = [name for name in DOCS384_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"docs384 dataset not found: {', '.join(missing)} missing in {folder}. "
            f"Pass root=<docs384 folder> or set {DATASETS_ENV} to the folder that contains docs384/."
        )
    xb = np.ascontiguousarray(np.load(folder / "base.f16.npy").astype(np.float32))
    xq = np.ascontiguousarray(np.load(folder / "queries.f16.npy").astype(np.float32))
    gt = np.ascontiguousarray(np.load(folder / "gt_ids.npy").astype(np.int32))
    if xb.ndim != 2 or xq.ndim != 2 or xb.shape[1] != xq.shape[1]:
        raise ValueError(f"docs384: bad shapes base {xb.shape}, queries {xq.shape}")
    if gt.shape[0] != xq.shape[0]:
        raise ValueError(f"docs384: {gt.shape[0]} ground-truth rows for {xq.shape[0]} queries")
    return xb, xq, gt


def recall_at_k(I: np.ndarray, gt: np.ndarray, k: int = 10) -> float:
    """Mean over queries of |I[q, :k] ∩ gt[q, :k]| / k.

    I: (nq, >=k) integer ids returned per query, -1 for "no result" (ignored).
    gt: (nq, >=k) integer exact neighbour ids, best first (same nq as I).
    Each true neighbour counts at most once, so duplicate ids in I do not inflate recall.
    """
    I = np.asarray(I)
    gt = np.asarray(gt)
    if I.ndim != 2 or gt.ndim != 2:
        raise ValueError(f"recall_at_k needs 2-d arrays, got I {I.shape}, gt {gt.shape}")
    if I.shape[0] != gt.shape[0]:
        raise ValueError(f"recall_at_k: I has {I.shape[0]} rows, gt has {gt.shape[0]}")
    if I.shape[1] < k or gt.shape[1] < k:
        raise ValueError(f"recall_at_k: k={k} but I {I.shape}, gt {gt.shape}")
    if I.shape[0] == 0:
        raise ValueError("recall_at_k: no queries")
    found = I[:, :k].astype(np.int64)
    truth = gt[:, :k].astype(np.int64)
    hit = (truth[:, :, None] == found[:, None, :]).any(axis=2) & (truth >= 0)
    return float(hit.sum(axis=1).mean() / k)
