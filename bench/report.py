"""Markdown tables from the committed benchmark results, for the README.

    python -m bench.report            # engine table: Quiver beside the best Qdrant/FAISS row per cell
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in open(RESULTS / name) if line.strip()]


def best(rows: list[dict], **match) -> dict | None:
    """The row with the highest recall among those matching (ties: higher qps)."""
    cands = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    return max(cands, key=lambda r: (r["recall_at_10"], r["qps"]), default=None)


_EFFORT = re.compile(r"(,? (?:ef|nprobe )(\d+))$")


def _config_and_effort(variant: str) -> tuple[str, int | None]:
    """A variant's configuration and its search effort (a beam ``efN`` or ``nprobe N``)."""
    m = _EFFORT.search(variant)
    return (variant[: m.start()], int(m.group(2))) if m else (variant, None)


def paired_ratio(q: dict, d: dict) -> float:
    """Quiver's q/s over Qdrant's: the median of the per-round ratios (comparable cells
    run back to back within a round, so a noisy stretch hits both), or the ratio of the
    medians when the rounds do not pair up."""
    qr, dr = q.get("qps_rounds") or [], d.get("qps_rounds") or []
    if qr and len(qr) == len(dr):
        return statistics.median(a / b for a, b in zip(qr, dr))
    return q["qps"] / d["qps"]


def cheapest_at_least(rows: list[dict], recall: float, against: dict | None, **match) -> dict | None:
    """The matching row that reaches ``recall`` with the least search effort of its
    configuration (recall is measured, not noisy: the smallest beam or list count that
    gets there is the one to run), the configurations then compared by q/s (paired with
    ``against`` when given); failing any, the best-recall row."""
    cands = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    least: dict[str, dict] = {}
    for r in cands:
        if r["recall_at_10"] < recall:
            continue
        config, effort = _config_and_effort(r["variant"])
        key = config if effort is not None else r["variant"]
        have = least.get(key)
        if have is None or effort is not None and effort < _config_and_effort(have["variant"])[1]:
            least[key] = r
    if least:
        return max(least.values(), key=lambda r: paired_ratio(r, against) if against else r["qps"])
    return max(cands, key=lambda r: (r["recall_at_10"], r["qps"]), default=None)


def engine_table(rows: list[dict]) -> str:
    """One line per (quantization, oversampling), rescoring on: Qdrant's best
    configuration of the code family (highest recall), against Quiver's cheapest
    setting that reaches that recall (``cheapest_at_least``; failing that, Quiver's
    best). The q/s columns are medians over the rounds, the ratio the median of the
    per-round ratios (``paired_ratio``)."""
    out = ["| codes | oversampling | Quiver recall@10 | Qdrant recall@10 | Quiver q/s | Qdrant q/s | q/s ratio | Quiver variant | Qdrant variant |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    families = [("binary", None), ("binary1.5", None), ("binary2", None), ("scalar", None)] + \
               [("product", c) for c in ("x4", "x8", "x16", "x32", "x64")]
    for quant, comp in families:
        for ov in (1.0, 2.0, 3.0, 4.0):
            d = best(rows, system="qdrant-edge", quantization=quant, compression=comp, oversampling=ov, rescore=True)
            q = cheapest_at_least(rows, d["recall_at_10"] if d else 0.0, d, system="quiver", quantization=quant,
                                  compression=comp, oversampling=ov, rescore=True)
            if q is None:
                continue
            label = quant if comp is None else f"{quant} {comp}"
            dr = f"{d['recall_at_10']:.3f}" if d else "-"
            dq = f"{d['qps']:,.0f}" if d else "-"
            ratio = f"{paired_ratio(q, d):.2f}" if d else "-"
            out.append(f"| {label} | {ov:g} | {q['recall_at_10']:.3f} | {dr} | {q['qps']:,.0f} | {dq} | {ratio} | "
                       f"{q['variant']} | {d['variant'] if d else '-'} |")
    return "\n".join(out)


def main(argv=None) -> None:
    """Renders bench/results/engine-docs384.jsonl, or the results file given."""
    argv = sys.argv[1:] if argv is None else argv
    rows = [json.loads(line) for line in open(argv[0]) if line.strip()] if argv else load("engine-docs384.jsonl")
    m = rows[0].get("machine", {})
    print(f"Machine: {m.get('cpu')} ({m.get('cores')} cores), Python {m.get('python')}, {m.get('date')}; "
          f"{rows[0].get('queries')} queries, one search thread.\n")
    print(engine_table(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
