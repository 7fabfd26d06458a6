"""Yardstick systems measured on the same data as Quiver: Qdrant Edge and FAISS.

Both runners take the dataset arrays and return benchmark rows (dicts, see ROW_KEYS):
  xb (n, d) float32 unit-norm base vectors, point id = row number,
  xq (nq, d) float32 unit-norm queries,
  gt (nq, >=10) int exact neighbour ids, best first.

Search speed is measured with one search thread, queries issued one at a time, over
max_queries queries after an untimed warm-up of WARMUP_QUERIES queries; recall@10 is
computed on the (first) timed run's results.

Qdrant Edge is measured in rounds (measure_cells): its shards are all built first and kept
open (qdrant_cells), then, after an untimed warm-up pass over every cell (its first reads of
the originals come from disk), every cell is timed once per round, comparable cells back to
back, and a row's qps is the median of its rounds (qps_rounds lists them). The engine benchmark
puts Quiver's cells in the same rounds, so a burst of machine noise lasting tens of seconds
hits both systems' comparable cells, or one round of a cell, not all of one system's rows.
FAISS is measured once per row: its flat scans run ~220 q/s, so rounds would add minutes.

Run `python -m bench.yardsticks [max_queries]` (or `python bench/yardsticks.py`) to measure
both on docs384 (default 200 queries) and print the rows.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.datasets import recall_at_k  # noqa: E402

ROW_KEYS = (
    "system", "quantization", "variant", "compression", "oversampling", "rescore",
    "recall_at_10", "qps", "ram_bytes_per_vector", "originals_read_per_query",
)
WARMUP_QUERIES = 50

# Qdrant settings shared by every configuration.
HNSW_M = 16
HNSW_EF_CONSTRUCT = 100
HNSW_FULL_SCAN_THRESHOLD_KB = 10_000
HNSW_EF_SEARCH = 128
UPSERT_BATCH = 1_000
PQ_BUILD_BUDGET_S = 120.0
# x16 first (always wanted), then in order of increasing build cost. x4 is left out by
# default: its build (upsert + optimize) took ~170 s on docs384 on 2 shared cores, over the
# ~2 minute budget (x8 ~100 s, x16 ~70 s, x32 ~45 s, x64 ~30 s). Pass pq_compressions to add it.
PQ_COMPRESSIONS = ("x16", "x32", "x64", "x8")
PQ_SKIPPED_BY_DEFAULT = {"x4": "build took ~170 s on docs384 (over the ~2 min budget)"}

Log = Callable[[str], Any]


# ---------------------------------------------------------------- shared helpers


def make_row(
    system: str,
    quantization: str,
    variant: str,
    compression: str | None,
    oversampling: float,
    rescore: bool,
    recall: float,
    qps: float,
    ram_bytes_per_vector: float | None,
    originals_read_per_query: float | None,
) -> dict:
    """One benchmark row with exactly the keys of ROW_KEYS."""
    return {
        "system": system,
        "quantization": quantization,
        "variant": variant,
        "compression": compression,
        "oversampling": float(oversampling),
        "rescore": bool(rescore),
        "recall_at_10": float(recall),
        "qps": float(qps),
        "ram_bytes_per_vector": None if ram_bytes_per_vector is None else float(ram_bytes_per_vector),
        "originals_read_per_query": None if originals_read_per_query is None else float(originals_read_per_query),
    }


def originals_read(limit: int, oversampling: float, rescore: bool) -> float:
    """Original vectors read per query by a quantized search: limit*oversampling if rescoring, else 0."""
    return float(limit * oversampling) if rescore else 0.0


def time_queries(search_one: Callable[[int], Sequence[int]], nq: int, limit: int) -> tuple[np.ndarray, float]:
    """Run queries 0..nq-1 one at a time and time them.

    search_one(i) returns the ids found for query i (at most limit of them).
    The first min(WARMUP_QUERIES, nq) queries are run once untimed as a warm-up.
    Returns (I (nq, limit) int64 ids padded with -1, queries per second of the timed run).
    """
    for i in range(min(WARMUP_QUERIES, nq)):
        search_one(i)
    found: list[Sequence[int]] = [()] * nq
    start = time.perf_counter()
    for i in range(nq):
        found[i] = search_one(i)
    elapsed = time.perf_counter() - start
    I = np.full((nq, limit), -1, dtype=np.int64)
    for i, ids in enumerate(found):
        ids = list(ids)[:limit]
        I[i, : len(ids)] = ids
    return I, nq / elapsed


def measure(search_one: Callable[[int], Sequence[int]], gt: np.ndarray, nq: int, limit: int) -> tuple[float, float]:
    """(recall@10, qps) of search_one over the first nq queries; gt (>=nq, >=10)."""
    I, qps = time_queries(search_one, nq, limit)
    return recall_at_k(I, gt[:nq], k=10), qps


def check_inputs(xb: np.ndarray, xq: np.ndarray, gt: np.ndarray, limit: int) -> None:
    """Validate shapes/dtypes: xb (n, d) float32, xq (nq, d) float32, gt (nq, >=10); limit >= 10."""
    if xb.ndim != 2 or xq.ndim != 2 or xb.shape[1] != xq.shape[1]:
        raise ValueError(f"xb {xb.shape} and xq {xq.shape} must be (n, d) and (nq, d)")
    if xb.dtype != np.float32 or xq.dtype != np.float32:
        raise ValueError(f"xb and xq must be float32, got {xb.dtype} and {xq.dtype}")
    if gt.ndim != 2 or gt.shape[0] != xq.shape[0] or gt.shape[1] < 10:
        raise ValueError(f"gt {gt.shape} must be (nq={xq.shape[0]}, >=10)")
    if limit < 10:
        raise ValueError(f"limit={limit}: recall@10 needs limit >= 10")


def fmt_row(row: dict) -> str:
    """One-line human summary of a row."""
    ram = row["ram_bytes_per_vector"]
    reads = row["originals_read_per_query"]
    return (
        f"{row['system']:<11} {row['quantization']:<9} {row['variant']:<26} "
        f"{row['compression'] or '-':<4} os={row['oversampling']:<4g} rescore={str(row['rescore']):<5} "
        f"recall@10={row['recall_at_10']:.3f} qps={row['qps']:8.1f} "
        f"ram/vec={'-' if ram is None else f'{ram:g}'} reads/q={'-' if reads is None else f'{reads:g}'}"
    )


@dataclass
class Cell:
    """One row to measure: its fixed fields (make_row; recall_at_10 and qps filled in by
    measure_cells), search_one(i) -> ids for query i, and, where the system counts them,
    a counter of original vectors read (its delta over the first round gives
    originals_read_per_query)."""

    row: dict
    search_one: Callable[[int], Sequence[int]]
    originals_counter: Callable[[], int] | None = None


def cell_order(cell: Cell) -> tuple:
    """Sort key putting comparable cells (same codes, oversampling, rescore) back to back."""
    r = cell.row
    return (r["quantization"], r["compression"] or "", r["oversampling"], r["rescore"], r["system"], r["variant"])


def measure_cells(cells: Sequence[Cell], gt: np.ndarray, nq: int, limit: int, rounds: int, log: Log,
                  warmup_round: bool = True) -> list[dict]:
    """Time every cell once per round (time_queries, warm-up included) for `rounds` rounds.

    Within a round comparable cells run back to back (cell_order), so noise lasting tens of
    seconds hits them alike. With ``warmup_round`` a first pass over every cell comes before
    the timed rounds: it gives recall_at_10 (and originals_read_per_query, for cells with a
    counter) and brings every system's originals into the page cache (Qdrant's shards read
    theirs from disk in their first pass: its rescoring rows ran ~2x slower in it than in the
    passes after). Without it they come from the first timed round. qps is the median over
    the timed rounds, qps_rounds the list. Returns the cells' rows, in the order given
    (filled in place).
    """
    if rounds < 1:
        raise ValueError(f"rounds={rounds}: need at least one")
    order = sorted(cells, key=cell_order)
    qps: list[list[float]] = [[] for _ in order]
    passes = [None] * warmup_round + list(range(rounds))
    for p, timed in enumerate(passes):
        start = time.perf_counter()
        for cell, cell_qps in zip(order, qps):
            counter = cell.originals_counter if p == 0 else None
            before = counter() if counter else 0
            I, round_qps = time_queries(cell.search_one, nq, limit)
            if timed is not None:
                cell_qps.append(round_qps)
            if p == 0:
                cell.row["recall_at_10"] = recall_at_k(I, gt[:nq], k=10)
            if counter:
                cell.row["originals_read_per_query"] = (counter() - before) / (nq + min(WARMUP_QUERIES, nq))
        what = "warm-up pass" if timed is None else f"round {timed + 1}/{rounds}"
        log(f"{what}: {len(order)} cells x {nq} queries in {time.perf_counter() - start:.0f}s")
    for cell, cell_qps in zip(order, qps):
        cell.row["qps"] = statistics.median(cell_qps)
        cell.row["qps_rounds"] = cell_qps
        log(fmt_row(cell.row))
    return [cell.row for cell in cells]


# ---------------------------------------------------------------- Qdrant Edge


@dataclass(frozen=True)
class QdrantSetup:
    """One Qdrant configuration: row labels, nominal code size and the quantization config maker."""

    quantization: str
    variant: str
    compression: str | None
    nominal_code_bytes: float | None  # per vector, d=384; None for no quantization
    make_quantization: Callable[[], Any] | None  # None: HNSW over originals only


def qdrant_setups(qe: Any, d: int) -> list[QdrantSetup]:
    """Non-product Qdrant configurations, in run order (qe is the qdrant_edge module)."""
    setups = [
        QdrantSetup("none", "none hnsw", None, None, None),
        QdrantSetup(
            "scalar", "scalar int8 q0.99", None, d,
            lambda: qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, always_ram=True),
        ),
        QdrantSetup(
            "binary", "binary default", None, d / 8,
            lambda: qe.BinaryQuantizationConfig(
                always_ram=True, encoding=qe.BinaryQuantizationEncoding.OneBit,
                query_encoding=qe.BinaryQuantizationQueryEncoding.Default),
        ),
        QdrantSetup(
            "binary", "binary scalar8bits query", None, d / 8,
            lambda: qe.BinaryQuantizationConfig(
                always_ram=True, encoding=qe.BinaryQuantizationEncoding.OneBit,
                query_encoding=qe.BinaryQuantizationQueryEncoding.Scalar8Bits),
        ),
        QdrantSetup(
            "binary2", "binary two_bits", None, 2 * d / 8,
            lambda: qe.BinaryQuantizationConfig(always_ram=True, encoding=qe.BinaryQuantizationEncoding.TwoBits),
        ),
        QdrantSetup(
            "binary1.5", "binary one_and_half_bits", None, 1.5 * d / 8,
            lambda: qe.BinaryQuantizationConfig(always_ram=True, encoding=qe.BinaryQuantizationEncoding.OneAndHalfBits),
        ),
    ]
    if hasattr(qe, "TurboQuantQuantizationConfig") and hasattr(qe, "TurboQuantBitSize"):
        setups.append(QdrantSetup(
            "binary", "turboquant bits1", None, d / 8,
            lambda: qe.TurboQuantQuantizationConfig(always_ram=True, bits=qe.TurboQuantBitSize.Bits1),
        ))
    return setups


def qdrant_product_setup(qe: Any, d: int, compression: str) -> QdrantSetup:
    """Product quantization setup for compression "x4".."x64" (code = 4*d/ratio bytes)."""
    ratio = int(compression[1:])
    enum_value = getattr(qe.CompressionRatio, compression.upper())
    return QdrantSetup(
        "product", f"product {compression}", compression, 4 * d / ratio,
        lambda: qe.ProductQuantizationConfig(compression=enum_value, always_ram=True),
    )


def qdrant_config(qe: Any, d: int, quantization: Any | None) -> Any:
    """EdgeConfig: cosine, originals on disk, HNSW m16/efc100, one search thread."""
    return qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=d, distance=qe.Distance.Cosine, on_disk=True,
                                    quantization_config=quantization),
        hnsw_config=qe.HnswIndexConfig(m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT,
                                       full_scan_threshold=HNSW_FULL_SCAN_THRESHOLD_KB),
        max_search_threads=1,
    )


def upsert_all(qe: Any, shard: Any, xb: np.ndarray) -> None:
    """Upsert xb (n, d) float32 as points 0..n-1 in batches of UPSERT_BATCH."""
    for start in range(0, xb.shape[0], UPSERT_BATCH):
        rows = xb[start : start + UPSERT_BATCH].tolist()
        points = [qe.Point(start + j, vec) for j, vec in enumerate(rows)]
        shard.update(qe.UpdateOperation.upsert_points(points))


def quantized_bytes_per_vector(shard_dir: Path, n: int) -> float | None:
    """Bytes per vector of the optimized segments' quantized codes (quantized.data files) / n."""
    sizes = [p.stat().st_size for p in shard_dir.glob("segments/*/vector_storage/quantized.data")]
    return sum(sizes) / n if sizes else None


def build_qdrant_shard(qe: Any, shard_dir: Path, xb: np.ndarray, setup: QdrantSetup, log: Log) -> tuple[Any, float]:
    """Create a shard in shard_dir, upsert xb (n, d), build HNSW with optimize().

    Checks every point is in an indexed (HNSW) segment. Returns (shard, build seconds incl. upsert).
    """
    n, d = xb.shape
    quantization = setup.make_quantization() if setup.make_quantization else None
    shard = qe.EdgeShard.create(str(shard_dir), qdrant_config(qe, d, quantization))
    try:
        t0 = time.perf_counter()
        upsert_all(qe, shard, xb)
        t1 = time.perf_counter()
        shard.optimize()
        t2 = time.perf_counter()
        info = shard.info()
        if info.points_count != n or info.indexed_vectors_count < n:
            raise RuntimeError(
                f"qdrant {setup.variant}: after optimize() {info.indexed_vectors_count} of "
                f"{info.points_count} points indexed (expected {n})")
    except BaseException:
        shard.close()
        raise
    measured = quantized_bytes_per_vector(shard_dir, n)
    log(f"qdrant {setup.variant}: upsert {t1 - t0:.1f}s, optimize (HNSW + quantization) {t2 - t1:.1f}s; "
        f"{info.segments_count} segments, {info.indexed_vectors_count}/{n} indexed; code bytes/vector "
        f"nominal {setup.nominal_code_bytes}, measured {measured}")
    return shard, t2 - t0


def qdrant_search_fn(qe: Any, shard: Any, queries: list[list[float]], limit: int, quant_params: Any | None) -> Callable[[int], list[int]]:
    """search_one(i) -> ids of the top `limit` points for queries[i] (list of d floats)."""
    params = qe.SearchParams(hnsw_ef=HNSW_EF_SEARCH, quantization=quant_params)

    def search_one(i: int) -> list[int]:
        request = qe.QueryRequest(limit=limit, query=qe.Query.Nearest(queries[i]), params=params)
        return [p.id for p in shard.query(request)]

    return search_one


def qdrant_setup_cells(
    qe: Any, shard: Any, setup: QdrantSetup, ram: float | None, queries: list[list[float]],
    oversamplings: Sequence[float], rescores: Sequence[bool], limit: int,
) -> list[Cell]:
    """Cells of one built shard: oversampling x rescore, or a single cell without quantization."""
    if setup.make_quantization is None:
        grid: list[tuple[float, bool, Any]] = [(1.0, False, None)]
    else:
        grid = [(float(os_), bool(rs), qe.QuantizationSearchParams(ignore=False, rescore=bool(rs), oversampling=float(os_)))
                for os_ in oversamplings for rs in rescores]
    cells = []
    for oversampling, rescore, quant_params in grid:
        reads = None if setup.make_quantization is None else originals_read(limit, oversampling, rescore)
        row = make_row("qdrant-edge", setup.quantization, setup.variant, setup.compression,
                       oversampling, rescore, math.nan, math.nan, ram, reads)
        cells.append(Cell(row, qdrant_search_fn(qe, shard, queries, limit, quant_params)))
    return cells


def open_qdrant_setup(
    qe: Any, stack: contextlib.ExitStack, setup: QdrantSetup, xb: np.ndarray, log: Log,
) -> tuple[Any, float | None, float]:
    """Build one shard in a temp dir, left open; stack closes it and deletes the dir.

    Returns (shard, quantized code bytes per vector or None without quantization, build seconds).
    """
    tmp = Path(tempfile.mkdtemp(prefix="quiver-qdrant-"))
    stack.callback(shutil.rmtree, tmp, ignore_errors=True)
    shard, build_s = build_qdrant_shard(qe, tmp / "shard", xb, setup, log)
    stack.callback(shard.close)
    ram = quantized_bytes_per_vector(tmp / "shard", xb.shape[0]) if setup.make_quantization else None
    if setup.make_quantization and ram is None:
        ram = setup.nominal_code_bytes
    return shard, ram, build_s


def qdrant_cells(
    stack: contextlib.ExitStack,
    xb: np.ndarray,
    xq: np.ndarray,
    gt: np.ndarray,
    oversamplings: Sequence[float] = (1, 2, 3, 4),
    rescores: Sequence[bool] = (True, False),
    limit: int = 10,
    max_queries: int = 1000,
    log: Log = print,
    pq_compressions: Sequence[str] = PQ_COMPRESSIONS,
    pq_build_budget_s: float = PQ_BUILD_BUDGET_S,
) -> list[Cell]:
    """Build Qdrant Edge (qdrant-edge-py) shards on xb (n, d) and return their cells, unmeasured.

    Every shard stays open until `stack` closes (it also deletes their temp dirs), so the
    cells can be measured in interleaved rounds (measure_cells) with gt (nq, >=10) over the
    first max_queries queries of xq (nq, d).

    One shard per configuration (cosine, HNSW m=16 ef_construct=100, search hnsw_ef=128,
    originals on disk, quantized codes always in RAM, one search thread): no quantization,
    scalar int8, binary 1-bit (default and scalar8bits query encodings), 2-bit, 1.5-bit,
    TurboQuant 1-bit (if available), product quantization. Product compressions are built in
    the order given (x16 first; x4 not by default, see PQ_COMPRESSIONS); once one build takes
    longer than pq_build_budget_s seconds the remaining ones are skipped and logged.
    Without quantization there is one cell (oversampling 1, rescore False). With rescore=False,
    oversampling > 1 only widens the quantized candidate list, which is then cut to `limit`.
    ram_bytes_per_vector is the measured size of the in-RAM quantized codes per vector
    (the quantized.data files of the optimized segments / n); None without quantization.
    """
    import qdrant_edge as qe

    check_inputs(xb, xq, gt, limit)
    nq = min(max_queries, xq.shape[0])
    queries = xq[:nq].tolist()
    d = xb.shape[1]
    log(f"qdrant-edge: n={xb.shape[0]} d={d} queries={nq}; hnsw m={HNSW_M} ef_construct={HNSW_EF_CONSTRUCT} "
        f"hnsw_ef={HNSW_EF_SEARCH}; originals on disk, codes always_ram; max_search_threads=1")
    if not hasattr(qe, "TurboQuantQuantizationConfig"):
        log("qdrant-edge: this qdrant-edge-py has no TurboQuantQuantizationConfig; skipping turboquant bits1")

    cells: list[Cell] = []
    builds: list[tuple[str, float]] = []

    def add(setup: QdrantSetup) -> float:
        shard, ram, build_s = open_qdrant_setup(qe, stack, setup, xb, log)
        cells.extend(qdrant_setup_cells(qe, shard, setup, ram, queries, oversamplings, rescores, limit))
        builds.append((setup.variant, build_s))
        return build_s

    for setup in qdrant_setups(qe, d):
        add(setup)
    for compression, why in PQ_SKIPPED_BY_DEFAULT.items():
        if compression not in pq_compressions:
            log(f"qdrant-edge: skipping product {compression}: {why}; pass pq_compressions to include it")
    for i, compression in enumerate(pq_compressions):
        build_s = add(qdrant_product_setup(qe, d, compression))
        if build_s > pq_build_budget_s and i + 1 < len(pq_compressions):
            log(f"qdrant-edge: product {compression} build took {build_s:.0f}s > {pq_build_budget_s:.0f}s; "
                f"skipping product {', '.join(pq_compressions[i + 1:])}")
            break
    log("qdrant-edge build times (upsert + optimize): " + ", ".join(f"{v} {s:.1f}s" for v, s in builds))
    return cells


def run_qdrant_edge(xb: np.ndarray, xq: np.ndarray, gt: np.ndarray, rounds: int = 1, log: Log = print,
                    **options: Any) -> list[dict]:
    """Measure Qdrant Edge alone on xb (n, d), xq (nq, d), gt (nq, >=10): qdrant_cells (which
    takes ``options``), then measure_cells over `rounds` rounds; the shards are closed and
    deleted afterwards. Returns a list of rows (see ROW_KEYS, plus qps_rounds)."""
    with contextlib.ExitStack() as stack:
        cells = qdrant_cells(stack, xb, xq, gt, log=log, **options)
        nq = min(options.get("max_queries", 1000), xq.shape[0])
        return measure_cells(cells, gt, nq, options.get("limit", 10), rounds, log)


# ---------------------------------------------------------------- FAISS


def faiss_search_fn(index: Any, xq: np.ndarray, limit: int) -> Callable[[int], list[int]]:
    """search_one(i) -> ids of the top `limit` results of index for xq[i] (xq (nq, d) float32)."""

    def search_one(i: int) -> list[int]:
        _, ids = index.search(xq[i : i + 1], limit)
        return ids[0].tolist()

    return search_one


def faiss_quantized_setups(faiss: Any, d: int) -> list[tuple[str, str, str | None, Callable[[], Any]]]:
    """(quantization, variant, compression, make empty index) for each quantized FAISS index, IP metric."""
    ip = faiss.METRIC_INNER_PRODUCT
    setups: list[tuple[str, str, str | None, Callable[[], Any]]] = [
        ("scalar", "faiss sq8", None, lambda: faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit, ip)),
    ]
    if hasattr(faiss, "IndexRaBitQ"):
        setups.append(("binary", "faiss rabitq", None, lambda: faiss.IndexRaBitQ(d, ip)))
    # Sign bits of the raw (unrotated) vectors, Hamming distance; unit vectors make L2 rank = IP rank.
    setups.append(("binary", "faiss lsh sign bits", None, lambda: faiss.IndexLSH(d, d, False, False)))
    # 96 sub-quantizers of 8 bits: 96 bytes per vector, x16 for d=384 (needs d % 96 == 0).
    setups.append(("product", "faiss pq m96x8", f"x{4 * d // 96}", lambda: faiss.IndexPQ(d, 96, 8, ip)))
    return setups


def run_faiss(
    xb: np.ndarray,
    xq: np.ndarray,
    gt: np.ndarray,
    oversamplings: Sequence[float] = (1, 2, 3, 4),
    limit: int = 10,
    max_queries: int = 1000,
    log: Log = print,
) -> list[dict]:
    """Measure FAISS (faiss-cpu, one thread, inner product) on xb (n, d), xq (nq, d), gt (nq, >=10).

    Rows: exact IndexFlatIP ("none"); then for SQ8, RaBitQ (if available), LSH sign bits and
    PQ M=96x8: the bare quantized index (oversampling 1, rescore False) and the index wrapped
    in IndexRefineFlat with k_factor = oversampling (rescore True). Flat-scan indexes, no graph.
    ram_bytes_per_vector is the quantized code size (sa_code_size); note IndexRefineFlat also
    keeps the float32 originals in RAM. Each row is measured once, not in rounds: the flat
    scans run ~220 q/s on docs384, ~5 s a row at 1000 queries, so rounds would add minutes;
    qps_rounds holds that one value, as Qdrant's and Quiver's rows list their rounds.
    Returns a list of rows (see ROW_KEYS, plus qps_rounds).
    """
    import faiss

    check_inputs(xb, xq, gt, limit)
    faiss.omp_set_num_threads(1)
    n, d = xb.shape
    nq = min(max_queries, xq.shape[0])
    xq = np.ascontiguousarray(xq[:nq])
    log(f"faiss {faiss.__version__}: n={n} d={d} queries={nq}; 1 thread; flat scans")
    if not hasattr(faiss, "IndexRaBitQ"):
        log("faiss: no IndexRaBitQ in this version; skipping faiss rabitq")

    rows: list[dict] = []
    builds: list[tuple[str, float]] = []

    t0 = time.perf_counter()
    flat = faiss.IndexFlatIP(d)
    flat.add(xb)
    builds.append(("faiss flat ip", time.perf_counter() - t0))
    recall, qps = measure(faiss_search_fn(flat, xq, limit), gt, nq, limit)
    rows.append(make_row("faiss", "none", "faiss flat ip exact", None, 1.0, False, recall, qps, 4.0 * d, float(n)))
    log(fmt_row(rows[-1]))
    del flat

    for quantization, variant, compression, make_index in faiss_quantized_setups(faiss, d):
        t0 = time.perf_counter()
        base = make_index()
        refined = faiss.IndexRefineFlat(base)  # adds to both base and its float32 copy
        refined.train(xb)
        refined.add(xb)
        build_s = time.perf_counter() - t0
        builds.append((variant, build_s))
        code_bytes = float(base.sa_code_size())
        log(f"faiss {variant}: train+add {build_s:.1f}s, code {code_bytes:g} bytes/vector")

        recall, qps = measure(faiss_search_fn(base, xq, limit), gt, nq, limit)
        rows.append(make_row("faiss", quantization, variant, compression, 1.0, False, recall, qps, code_bytes, 0.0))
        log(fmt_row(rows[-1]))
        for oversampling in oversamplings:
            refined.k_factor = float(oversampling)
            recall, qps = measure(faiss_search_fn(refined, xq, limit), gt, nq, limit)
            # IndexRefineFlat reranks int(limit * k_factor) candidates with the originals.
            reads = float(math.floor(limit * oversampling))
            rows.append(make_row("faiss", quantization, variant, compression, oversampling, True,
                                 recall, qps, code_bytes, reads))
            log(fmt_row(rows[-1]))
        del refined, base
    log("faiss build times: " + ", ".join(f"{v} {s:.1f}s" for v, s in builds))
    for row in rows:
        row["qps_rounds"] = [row["qps"]]
    return rows


# ---------------------------------------------------------------- manual test


def main(max_queries: int = 200) -> list[dict]:
    """Run both yardsticks on docs384 with max_queries queries; print and return all rows."""
    from bench.datasets import load_docs384

    xb, xq, gt = load_docs384()
    t0 = time.perf_counter()
    rows = run_faiss(xb, xq, gt, max_queries=max_queries)
    t1 = time.perf_counter()
    rows += run_qdrant_edge(xb, xq, gt, max_queries=max_queries)
    t2 = time.perf_counter()
    print(f"\nfaiss {t1 - t0:.0f}s, qdrant-edge {t2 - t1:.0f}s; {len(rows)} rows")
    for row in rows:
        print(fmt_row(row))
    return rows


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
