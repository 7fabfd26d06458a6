"""Originals stay on disk: 1,000,000 synthetic 384-dim vectors, 1-bit codes.

Ingests clustered synthetic vectors (seeded, generated in chunks so the data
itself never sits in RAM), then reports the process's anonymous memory
(RssAnon: heap and arrays, not LMDB's file-backed pages), the ingest rate and
the median latency of single searches at oversampling 3 with rescoring.
Writes one JSON line to bench/results/million-synthetic.jsonl.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from shard.config import CollectionConfig, IndexConfig, QuantizationConfig
from shard.engine import ShardEngine

RESULTS = Path(__file__).resolve().parent / "results" / "million-synthetic.jsonl"


def rss_anon_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def synthetic(n: int, d: int, seed: int, chunk: int = 20_000, centers: int = 2000):
    """Unit vectors around random centres with low-rank noise, like text embeddings."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, d)).astype(np.float32)
    basis = rng.standard_normal((48, d)).astype(np.float32) / np.sqrt(48)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        x = c[rng.integers(0, centers, m)] + rng.standard_normal((m, 48)).astype(np.float32) @ basis * 1.5
        x += 0.3 * rng.standard_normal((m, d)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        yield s, x


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args(argv)
    d = 384
    tmp = args.dir or tempfile.mkdtemp(prefix="quiver-million-")
    eng = ShardEngine.create(tmp + "/s", CollectionConfig(dim=d, quantization=QuantizationConfig(kind="binary"),
                                                          index=IndexConfig(nprobe=64)))
    t = time.perf_counter()
    for s, x in synthetic(args.n, d, seed=1):
        eng.upsert(np.arange(s, s + len(x)), x)
    ingest = args.n / (time.perf_counter() - t)
    queries = next(synthetic(200, d, seed=2))[1]
    for q in queries[:20]:
        eng.search(q, 10, 3.0)
    lat = []
    for q in queries:
        t0 = time.perf_counter()
        eng.search(q, 10, 3.0)
        lat.append((time.perf_counter() - t0) * 1e3)
    row = {"system": "quiver", "n": args.n, "dim": d, "quantization": "binary", "oversampling": 3.0,
           "rescore": True, "rss_anon_mb": rss_anon_mb(), "ingest_vectors_per_s": ingest,
           "p50_ms": float(np.median(lat)), "p99_ms": float(np.percentile(lat, 99)),
           "lists": eng.stats()["lists"], "ram_bytes": eng.stats()["ram_bytes"],
           "disk_bytes": eng.stats()["disk_bytes"]}
    print(json.dumps(row))
    eng.close()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as f:
        f.write(json.dumps({**row, "date": time.strftime("%Y-%m-%d")}) + "\n")
    if not args.dir:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
