"""Cluster benchmark on docs384: 1 coordinator + 2 shard nodes, all through the client.

Loads every quantization's collection first (the ingest rate through
``Client.upsert_many``), then measures binary and scalar quantization at
oversampling 1..4 with rescoring: queries/s at concurrency 1, 8 and 32
(threads, each with its own channel), p50 / p99 latency, and recall@10 (on the
concurrency-1 run). The machine is shared and noisy, so every cell is measured
in ``--rounds`` rounds (default 3), each round going once over all cells; a
row holds the median of its rounds (and each round's figures). Prints a table
and writes JSON lines to bench/results/cluster-docs384.jsonl.

    python -m bench.cluster            # full run (1000 queries per cell)
    python -m bench.cluster --quick    # 200 queries, oversampling 1 and 3
    python -m bench.cluster --engine   # also one in-process ShardEngine with the same settings,
                                       # for the recall the cluster should match (system "quiver-engine")
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.datasets import load_docs384, recall_at_k  # noqa: E402
from bench.engine import machine, write_rows  # noqa: E402
from quiver.client import Client  # noqa: E402
from quiver.local import LocalCluster  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "cluster-docs384.jsonl"
SYSTEM = "quiver-cluster"
LIMIT = 10
WARMUP = 50
#: The engine's default index: a shard scans one list until 20k points, then
#: trains sqrt-sized IVF lists (283 at 20k) and probes enough of them to hold
#: 400 x limit x oversampling points.
INDEX: dict = {}
BATCH = 4096


def run_queries(address: str, name: str, xq: np.ndarray, concurrency: int, nq: int, **params):
    """Run queries 0..nq-1 over ``concurrency`` threads (own client each); returns (I, latencies s, wall s)."""
    clients = [Client(address, timeout=60) for _ in range(concurrency)]
    for c in clients:  # connect and warm up every channel
        for i in range(max(1, WARMUP // concurrency)):
            c.search(name, xq[i % len(xq)], limit=LIMIT, **params)
    I = np.full((nq, LIMIT), -1, np.int64)
    lat = np.zeros(nq)
    nxt = iter(range(nq))
    lock = threading.Lock()

    def worker(c: Client):
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                return
            t = time.perf_counter()
            hits = c.search(name, xq[i], limit=LIMIT, **params)
            lat[i] = time.perf_counter() - t
            I[i, :len(hits)] = hits.ids[:LIMIT].astype(np.int64)

    threads = [threading.Thread(target=worker, args=(c,)) for c in clients]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    for c in clients:
        c.close()
    return I, lat, wall


def measure_cells(c: Client, address: str, xq, gt, nq: int, quants, ovs, concurrencies, rounds: int) -> list[dict]:
    """Every (quantization, oversampling, concurrency) cell once per round, ``rounds``
    times; a row's q/s, p50 and p99 are the medians of its rounds' (a burst of
    noise on the shared machine moves one round of a cell, not the row)."""
    cells = [(q, ov, conc) for q in quants for ov in ovs for conc in concurrencies]
    runs: dict[tuple, list[dict]] = {cell: [] for cell in cells}
    for r in range(rounds):
        t0 = time.perf_counter()
        for quant, ov, conc in cells:
            name = f"bench-{quant}"
            before = c.get_collection(name).originals_read
            I, lat, wall = run_queries(address, name, xq, conc, nq, oversampling=ov, rescore=True)
            runs[(quant, ov, conc)].append({
                "qps": nq / wall, "p50_ms": float(np.percentile(lat, 50) * 1e3),
                "p99_ms": float(np.percentile(lat, 99) * 1e3), "recall_at_10": recall_at_k(I, gt[:nq], k=10),
                "reads": (c.get_collection(name).originals_read - before) / (nq + WARMUP)})
        print(f"# round {r + 1}/{rounds}: {time.perf_counter() - t0:.0f} s")
    print(f"{'quant':>7} {'os':>4} {'conc':>5} {'qps':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'recall@10':>10} {'originals/q':>12}   p50 ms by round")
    rows = []
    for quant, ov, conc in cells:
        got = runs[(quant, ov, conc)]
        # recall: the first concurrency's first round (the others agree unless a search failed)
        first = runs[(quant, ov, concurrencies[0])][0]
        row = {"system": SYSTEM, "shards": 2, "quantization": quant, "oversampling": ov, "rescore": True,
               "concurrency": conc, "recall_at_10": first["recall_at_10"],
               "originals_read_per_query": got[0]["reads"], "rounds": len(got)}
        for key in ("qps", "p50_ms", "p99_ms"):
            row[key] = float(np.median([g[key] for g in got]))
            row[f"{key}_rounds"] = [g[key] for g in got]
        rows.append(row)
        print(f"{quant:>7} {ov:>4g} {conc:>5} {row['qps']:>8,.0f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
              f"{row['recall_at_10']:>10.3f} {row['originals_read_per_query']:>12.1f}   "
              + " ".join(f"{x:.2f}" for x in row["p50_ms_rounds"]))
    return rows


def engine_rows(xb, xq, gt, nq: int, quant: str, ovs) -> list[dict]:
    """Recall@10 and single-thread q/s of one in-process engine holding every point, same config."""
    from shard.config import CollectionConfig, IndexConfig, QuantizationConfig
    from shard.engine import ShardEngine

    tmp = tempfile.mkdtemp(prefix="quiver-engine-bench-")
    rows = []
    try:
        eng = ShardEngine.create(tmp + "/s", CollectionConfig(dim=xb.shape[1], distance="cosine",
                                                              quantization=QuantizationConfig(kind=quant),
                                                              index=IndexConfig(**INDEX)))
        for s in range(0, len(xb), BATCH):
            eng.upsert(np.arange(s, min(s + BATCH, len(xb)), dtype=np.uint64), xb[s:s + BATCH])
        for ov in ovs:
            I = np.full((nq, LIMIT), -1, np.int64)
            t = time.perf_counter()
            for i in range(nq):
                ids = eng.search(xq[i], LIMIT, ov, rescore=True).ids[:LIMIT]
                I[i, :len(ids)] = ids.astype(np.int64)
            qps = nq / (time.perf_counter() - t)
            rows.append({"system": "quiver-engine", "shards": 1, "quantization": quant, "oversampling": ov,
                         "rescore": True, "concurrency": 1, "qps": qps, "recall_at_10": recall_at_k(I, gt[:nq], 10)})
            print(f"{'engine':>7} {ov:>4g} {1:>5} {qps:>8,.0f} {'':>8} {'':>8} {rows[-1]['recall_at_10']:>10.3f}")
        eng.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="200 queries, oversampling 1 and 3")
    ap.add_argument("--points", type=int, default=0, help="load only the first N base vectors (0 = all)")
    ap.add_argument("--quantizations", default="binary,scalar")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over all cells; a row is their median")
    ap.add_argument("--engine", action="store_true", help="also measure one in-process engine (same settings)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)

    xb, xq, gt = load_docs384()
    if args.points:  # recall is then against the full dataset's truth: only for smoke runs
        xb = xb[:args.points]
    nq = min(200 if args.quick else args.queries, len(xq))
    ovs = (1.0, 3.0) if args.quick else (1.0, 2.0, 3.0, 4.0)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    info = machine()
    print(f"# machine: {info}")
    root = Path(tempfile.mkdtemp(prefix="quiver-cluster-bench-"))
    cluster = LocalCluster(root, nodes=2)
    quants = args.quantizations.split(",")
    rows = []
    try:
        address = cluster.start()
        print(f"# cluster at {address} (data in {root})")
        with Client(address, timeout=600) as c:
            for quant in quants:
                name = f"bench-{quant}"
                c.create_collection(name, xb.shape[1], "cosine", quantization=quant, shard_number=2,
                                    index=INDEX)
                t = time.perf_counter()
                c.upsert_many(name, np.arange(len(xb), dtype=np.uint64), xb, batch_size=BATCH, in_flight=2)
                rate = len(xb) / (time.perf_counter() - t)
                assert c.count(name) == len(xb)
                rows.append({"system": SYSTEM, "shards": 2, "quantization": quant, "ingest_points_per_s": rate})
                print(f"# {quant}: ingested {len(xb):,} points at {rate:,.0f} points/s")
            rows += measure_cells(c, address, xq, gt, nq, quants, ovs, concurrencies, args.rounds)
            for quant in quants:
                c.delete_collection(f"bench-{quant}")
        if args.engine:
            for quant in quants:
                rows += engine_rows(xb, xq, gt, nq, quant, ovs)
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    write_rows(args.out, rows, machine=info, queries=nq)


if __name__ == "__main__":
    main()
