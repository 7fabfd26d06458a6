"""Markdown tables from the committed benchmark results, for the README.

    python -m bench.report            # engine table: Quiver beside the best Qdrant/FAISS row per cell
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in open(RESULTS / name) if line.strip()]


def best(rows: list[dict], **match) -> dict | None:
    """The row with the highest recall among those matching (ties: higher qps)."""
    cands = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    return max(cands, key=lambda r: (r["recall_at_10"], r["qps"]), default=None)


def fastest_at_least(rows: list[dict], recall: float, **match) -> dict | None:
    """The fastest matching row with recall >= ``recall``, else the best-recall one."""
    cands = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    ok = [r for r in cands if r["recall_at_10"] >= recall]
    if ok:
        return max(ok, key=lambda r: r["qps"])
    return max(cands, key=lambda r: (r["recall_at_10"], r["qps"]), default=None)


def engine_table(rows: list[dict]) -> str:
    """One line per (quantization, oversampling), rescoring on: Qdrant's best
    configuration of the code family (highest recall), against Quiver's fastest
    configuration that reaches that recall (or, failing that, Quiver's best)."""
    out = ["| codes | oversampling | Quiver recall@10 | Qdrant recall@10 | Quiver q/s | Qdrant q/s | q/s ratio | Quiver variant | Qdrant variant |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    families = [("binary", None), ("binary1.5", None), ("binary2", None), ("scalar", None)] + \
               [("product", c) for c in ("x4", "x8", "x16", "x32", "x64")]
    for quant, comp in families:
        for ov in (1.0, 2.0, 3.0, 4.0):
            d = best(rows, system="qdrant-edge", quantization=quant, compression=comp, oversampling=ov, rescore=True)
            q = fastest_at_least(rows, d["recall_at_10"] if d else 0.0, system="quiver", quantization=quant,
                                 compression=comp, oversampling=ov, rescore=True)
            if q is None:
                continue
            label = quant if comp is None else f"{quant} {comp}"
            dr = f"{d['recall_at_10']:.3f}" if d else "-"
            dq = f"{d['qps']:,.0f}" if d else "-"
            ratio = f"{q['qps'] / d['qps']:.2f}" if d else "-"
            out.append(f"| {label} | {ov:g} | {q['recall_at_10']:.3f} | {dr} | {q['qps']:,.0f} | {dq} | {ratio} | "
                       f"{q['variant']} | {d['variant'] if d else '-'} |")
    return "\n".join(out)


def main(argv=None) -> None:
    rows = load("engine-docs384.jsonl")
    m = rows[0].get("machine", {})
    print(f"Machine: {m.get('cpu')} ({m.get('cores')} cores), Python {m.get('python')}, {m.get('date')}; "
          f"{rows[0].get('queries')} queries, one search thread.\n")
    print(engine_table(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
