"""Ingest rate on docs384, each configuration built several times, interleaved.

The engine benchmark builds each configuration once, and a build lasts ~5 s on a
machine whose speed moves by a third over minutes: one build says little about a
rate. Here every IVF configuration is built ``--rounds`` times (one build of each
per round, in the same order), each from an empty shard: 100,000 docs384 vectors
in batches of 10,000 through ``ShardEngine.upsert`` (synced LMDB commits, the
trainings at 20,000 and 80,000 points included), after one untimed small build
per configuration that loads the kernels (``bench.engine.warm_up``). Writes one
JSON line per configuration to bench/results/ingest-docs384.jsonl: the median,
lowest and highest rate and every round's.

    .venv/bin/python -m bench.ingest --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from bench.datasets import load_docs384
from bench.engine import CONFIGS, build, machine, warm_up
from shard.config import QuantizationConfig

RESULTS = Path(__file__).resolve().parent / "results" / "ingest-docs384.jsonl"
#: Codes the engine benchmark searches only through a graph (whose build is not this
#: ingest): their IVF build is timed here too, so every compression ratio has a rate.
INGEST_ONLY = [("product", "x8", "pq x8", QuantizationConfig(kind="product", compression="x8"))]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    xb, _, _ = load_docs384()
    # the IVF configurations, one per code (the query encodings share a build)
    configs, seen = [], set()
    for name, compression, variant, quant, *graph in CONFIGS + INGEST_ONLY:
        if graph and graph[0] is not None or (name, compression) in seen:
            continue
        seen.add((name, compression))
        configs.append((name, compression, variant, quant))
    tmp = tempfile.mkdtemp(prefix="quiver-ingest-")
    rates: dict[int, list[float]] = {i: [] for i in range(len(configs))}
    try:
        for i, (_, _, _, quant) in enumerate(configs):
            warm_up(os.path.join(tmp, f"warm{i}"), xb, quant)
        for r in range(args.rounds):
            for i, (name, compression, variant, quant) in enumerate(configs):
                path = os.path.join(tmp, f"s{i}-{r}")
                eng, rate = build(path, xb, quant)
                eng.close()
                shutil.rmtree(path, ignore_errors=True)
                rates[i].append(rate)
                print(f"round {r + 1}/{args.rounds} {name} {compression or ''} {variant}: {rate:,.0f} vectors/s",
                      flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info = machine()
    with open(args.out, "w") as f:
        for i, (name, compression, variant, _) in enumerate(configs):
            rs = rates[i]
            row = {"system": "quiver", "quantization": name, "compression": compression, "variant": variant,
                   "vectors": len(xb), "batch": 10_000, "median_vectors_per_s": statistics.median(rs),
                   "min_vectors_per_s": min(rs), "max_vectors_per_s": max(rs), "rounds": rs, "machine": info}
            f.write(json.dumps(row) + "\n")
            print(f"{name:10s} {compression or '':4s} median {row['median_vectors_per_s']:9,.0f}  "
                  f"min {min(rs):9,.0f}  max {max(rs):9,.0f} vectors/s")


if __name__ == "__main__":
    main()
