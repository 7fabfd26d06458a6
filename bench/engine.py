"""Engine benchmark on docs384: Quiver's shard engine beside Qdrant's and FAISS.

One search thread, queries one at a time, every system on the same data in the
same run. Every Quiver engine and Qdrant shard is built first and kept open; then
an untimed warm-up pass over every cell (it gives recall, and brings every
system's originals into the page cache) and ``--rounds`` timed rounds (default
3), each timing every cell once, comparable cells (same codes, oversampling,
rescore) back to back; a row's q/s is the median of its rounds (``qps_rounds``). Noise on the shared machine lasting
tens of seconds then hits comparable Quiver and Qdrant cells alike, or one round,
instead of all of one system's rows. FAISS rows are measured once, after the rounds
(flat scans, ~5 s a row). Prints a table and writes JSON lines to
bench/results/engine-docs384.jsonl (one object per row; keys in
bench.yardsticks.make_row). Run with ``./run bench-engine`` (``--quick`` for a
short smoke run, ``--no-yardsticks`` for Quiver alone).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.datasets import load_docs384
from bench.yardsticks import Cell, make_row, measure_cells, qdrant_cells, run_faiss
from shard.config import CollectionConfig, HnswConfig, IndexConfig, QuantizationConfig
from shard.engine import ShardEngine

RESULTS = Path(__file__).resolve().parent / "results" / "engine-docs384.jsonl"
NLIST = 1024
#: minimum lists probed; the default rule widens the probe to hold 400 x limit x oversampling points
NPROBE = 8

#: The HNSW graph option, built with a wider beam than Qdrant's 100 (our graph links nodes
#: by their codes' distances, Qdrant's by the originals'), each searched at several beam
#: widths (a search's effort); the report takes the narrowest that reaches Qdrant's recall.
HNSW = HnswConfig(m=16, ef_construct=160, ef=128)
EFFORTS = (80, 88, 96, 104, 112, 120, 128)
#: Product codes (rotated onto balanced axes: shard/quantization/product.py) through the
#: graph. x16 at beam 64 ranks above Qdrant at oversampling 1-2 on docs384 (0.890 / 0.979)
#: and needs ~96 at 3-4 (0.989); x32 and x64 pass Qdrant's recall at beam 64 at every
#: oversampling (0.766 / 0.923 / 0.957 / 0.964 and 0.608 / 0.782 / 0.849 / 0.881), so
#: narrower beams are tried too (a beam is never below limit x oversampling).
PQ_EFFORTS = (48, 64, 80, 96, 112, 128)
#: x16 also with m 20: 40 links a node at level 0 (49 more RAM bytes a vector) lift recall
#: at a given beam enough to pay for the wider rows (docs384, oversampling 4, four interleaved
#: rounds: beam 80 0.9905 at 1.11x the q/s of m 16's beam 112, 0.9906).
HNSW_M20 = HnswConfig(m=20, ef_construct=160, ef=96)
WIDE_EFFORTS = (32, 40, 48, 64, 80, 96, 128)
#: int8 with the 0.999 quantile ranks the head well enough that at oversampling 1 a
#: narrower beam reaches Qdrant's recall (0.976 at beam 64-72 on docs384).
NARROW_EFFORTS = (64, 72) + EFFORTS
#: The 1-bit IVF searched also with a fixed number of lists (a search's effort) beside the
#: default rule (enough lists to hold 400 x limit x oversampling points, which grows with
#: oversampling): the report takes the cheapest reaching Qdrant's recall. Steps of 8 lists,
#: as the beam widths step by 8: at oversampling 4 each step moves recall@10 by ~0.003.
NPROBES = (64, 72, 80, 88, 96, 104, 112, 120, 128)
#: 1.5- and 2-bit codes rank well enough that Qdrant's recall with them (0.80-0.94 at
#: oversampling 2-4 on docs384) takes far fewer lists: the cheapest list counts too.
NARROW_NPROBES = (16, 24, 32, 48, 56, 64)

CONFIGS = [
    ("none", None, "ivf exact scoring", QuantizationConfig(kind="none")),
    ("scalar", None, "int8 per-dim q0.99", QuantizationConfig(kind="scalar")),
    ("scalar", None, "int8 per-dim q0.99, hnsw m16 efc160", QuantizationConfig(kind="scalar"), HNSW, EFFORTS),
    ("scalar", None, "int8 per-dim q0.999, hnsw m16 efc160", QuantizationConfig(kind="scalar", quantile=0.999),
     HNSW, NARROW_EFFORTS),
    ("binary", None, "1-bit, 4-bit query", QuantizationConfig(kind="binary", query_encoding="scalar4bits"), None,
     (None, *NPROBES)),
    ("binary", None, "1-bit, 8-bit query", QuantizationConfig(kind="binary", query_encoding="scalar8bits")),
    ("binary", None, "1-bit, 1-bit query", QuantizationConfig(kind="binary", query_encoding="binary")),
    ("binary1.5", None, "1.5-bit, 4-bit query", QuantizationConfig(kind="binary", encoding="one_and_half_bits"), None,
     (None, *NARROW_NPROBES)),
    ("binary2", None, "2-bit, 4-bit query", QuantizationConfig(kind="binary", encoding="two_bits"), None,
     (None, *NARROW_NPROBES)),
    *[("product", c, f"pq {c}", QuantizationConfig(kind="product", compression=c))
      for c in ("x4", "x16", "x32", "x64")],
    ("product", "x16", "pq x16, hnsw m16 efc160", QuantizationConfig(kind="product", compression="x16"), HNSW,
     PQ_EFFORTS),
    ("product", "x16", "pq x16, hnsw m20 efc160", QuantizationConfig(kind="product", compression="x16"), HNSW_M20,
     (48, 64, 80, 96)),
    *[("product", c, f"pq {c}, hnsw m16 efc160", QuantizationConfig(kind="product", compression=c), HNSW,
       WIDE_EFFORTS) for c in ("x8", "x32", "x64")],
]


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d")}


def warm_up(path: str, xb: np.ndarray, quant: QuantizationConfig, hnsw: HnswConfig | None = None) -> None:
    """An untimed build of 5,000 points over 128 lists (trained at 1,000, retrained at
    4,000: every step of a large build) and one search: numba loads (or, after a kernel
    changed, compiles) what they run here, so the timed build measures ingest only
    (the first build of a run had counted ~1 s of loading, 30-60 s after a change)."""
    eng = ShardEngine.create(path, CollectionConfig(
        dim=xb.shape[1], distance="cosine", quantization=quant, hnsw=hnsw,
        index=IndexConfig(nlist=128, nprobe=8, full_scan_threshold=1_000)))
    with eng:
        for s in range(0, 5_000, 1_000):
            eng.upsert(np.arange(s, s + 1_000), xb[s:s + 1_000])
        eng.search(xb[0], 10, 3.0)


def build(path: str, xb: np.ndarray, quant: QuantizationConfig,
          hnsw: HnswConfig | None = None) -> tuple[ShardEngine, float]:
    # A graph keeps the engine's default lists (its codes' residual centroids: 566 at
    # 100k): with 1,024 the product codes ranked worse (docs384 candidate recall@40 at
    # beam 96: 0.9858 against 0.9900) and a query's list base costs twice as much.
    index = IndexConfig() if hnsw else IndexConfig(nlist=NLIST, nprobe=NPROBE)
    eng = ShardEngine.create(path, CollectionConfig(dim=xb.shape[1], distance="cosine", quantization=quant,
                                                    index=index, hnsw=hnsw))
    t = time.perf_counter()
    for s in range(0, len(xb), 10_000):
        eng.upsert(np.arange(s, min(s + 10_000, len(xb))), xb[s:s + 10_000])
    return eng, len(xb) / (time.perf_counter() - t)


def quiver_cells(xb, xq, oversamplings, stack: contextlib.ExitStack, log=print,
                 only: set[str] | None = None) -> list[Cell]:
    """Build an engine per config and return its cells, unmeasured (see measure_cells).

    The engines stay open until ``stack`` closes them and deletes their temp dirs, so all
    the cells can be measured in rounds; each engine's originals stay in its LMDB on disk.
    """
    cells = []
    for name, compression, variant, quant, *graph in CONFIGS:
        if only and name not in only:
            continue
        hnsw = graph[0] if graph else None
        efforts = graph[1] if len(graph) > 1 else (None,)  # None: the config's own (ef, or the IVF's rule)
        index = "" if hnsw else f", ivf {NLIST}"
        tmp = tempfile.mkdtemp(prefix="quiver-bench-")
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        warm_up(os.path.join(tmp, "warm"), xb, quant, hnsw)
        eng, rate = build(os.path.join(tmp, "s"), xb, quant, hnsw)
        stack.callback(eng.close)
        st = eng.stats()
        ram = st["ram_bytes"] / st["points"]
        log(f"# quiver {name} {variant}: ingest {rate:,.0f} vectors/s, {ram:.1f} RAM bytes/vector")
        rescores = (False,) if name == "none" else (True, False)
        ovs = (1.0,) if name == "none" else oversamplings
        for ef in efforts:
            for ov in ovs:
                for rescore in rescores:

                    def one(i, eng=eng, ov=ov, rescore=rescore, ef=ef):
                        return eng.search(xq[i], 10, ov, rescore=rescore, effort=ef).ids[:10]

                    effort = (f" ef{ef}" if ef else "") if hnsw else (f", nprobe {ef}" if ef else ", scan 400k")
                    label = f"{variant}{index}{effort}"
                    row = make_row("quiver", name, label, compression, ov, rescore, math.nan, math.nan, ram, None)
                    row["ingest_vectors_per_s"] = rate
                    cells.append(Cell(row, one, lambda eng=eng: eng.stats()["originals_read"]))
    return cells


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="200 queries, oversampling 1 and 3, 2 rounds")
    ap.add_argument("--rounds", type=int, default=None,
                    help="timed rounds of every Quiver/Qdrant cell; q/s is their median (default 3)")
    ap.add_argument("--no-yardsticks", action="store_true")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--only", default="", help="comma-separated quantization rows to run (e.g. scalar,binary); "
                                               "the yardsticks run in full")
    args = ap.parse_args(argv)
    xb, xq, gt = load_docs384()
    nq = 200 if args.quick else args.queries
    ovs = (1.0, 3.0) if args.quick else (1.0, 2.0, 3.0, 4.0)
    rounds = args.rounds if args.rounds is not None else 2 if args.quick else 3
    info = machine()
    print(f"# machine: {info}")
    with contextlib.ExitStack() as stack:
        cells = quiver_cells(xb, xq, ovs, stack, only={s for s in args.only.split(",") if s})
        if not args.no_yardsticks:
            cells += qdrant_cells(stack, xb, xq, gt, oversamplings=ovs, max_queries=nq)
        rows = measure_cells(cells, gt, nq, 10, rounds, print)
    if not args.no_yardsticks:
        rows += run_faiss(xb, xq, gt, oversamplings=ovs, max_queries=nq)
    write_rows(args.out, rows, machine=info, queries=nq)


def write_rows(path, rows: list[dict], **extra) -> None:
    """Results as JSON lines, one object per row, each with ``extra`` added."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps({**r, **extra}) + "\n")
    print(f"# wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()
