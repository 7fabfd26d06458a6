"""The small real sample shipped with Quiver (``quiver/data/sample.npz``).

5,000 base vectors and 100 queries of docs384 (all-MiniLM-L6-v2 embeddings of
Python docstrings, 384-d, unit length, stored as float16) with each query's
exact top-10 over those 5,000 (cosine). Rebuild it with

    python -m quiver.sample ../shared/datasets/docs384
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

SAMPLE = "sample.npz"


@dataclass
class Sample:
    base: np.ndarray  # (n, d) float32
    queries: np.ndarray  # (m, d) float32
    gt: np.ndarray  # (m, k) int64, exact top-k ids (row numbers of base), best first


def exact_top_k(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k by inner product (cosine on unit vectors), computed in float64. (m, k) int64."""
    s = queries.astype(np.float64) @ base.astype(np.float64).T
    top = np.argpartition(-s, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(s, top, 1), axis=1, kind="stable")
    return np.take_along_axis(top, order, 1).astype(np.int64)


def load_sample() -> Sample:
    with resources.files("quiver.data").joinpath(SAMPLE).open("rb") as f:
        z = np.load(f)
        return Sample(z["base"].astype(np.float32), z["queries"].astype(np.float32), z["gt"].astype(np.int64))


def load_docs384(root: str | Path) -> Sample:
    """The full docs384 dataset (100k base, 1k queries, exact top-100)."""
    root = Path(root)
    return Sample(np.load(root / "base.f16.npy").astype(np.float32),
                  np.load(root / "queries.f16.npy").astype(np.float32),
                  np.load(root / "gt_ids.npy").astype(np.int64))


def make_sample(src: str | Path, out: str | Path, n: int = 5000, m: int = 100, k: int = 10) -> None:
    src = Path(src)
    base = np.load(src / "base.f16.npy", mmap_mode="r")[:n].astype(np.float16)
    queries = np.load(src / "queries.f16.npy")[:m].astype(np.float16)
    gt = exact_top_k(base.astype(np.float32), queries.astype(np.float32), k)
    np.savez_compressed(out, base=base, queries=queries, gt=gt.astype(np.int32))


if __name__ == "__main__":
    out = Path(__file__).parent / "data" / SAMPLE
    make_sample(sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets/docs384", out)
    print(out, out.stat().st_size, "bytes")
