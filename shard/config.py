"""Collection configuration: distance, quantization and index parameters.

Configs are plain dataclasses, validated on construction, and round-trip through
``to_dict`` / ``from_dict`` (JSON-safe) so that a shard persists its own config
in LMDB and a coordinator can ship it over the wire.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from shard.errors import InvalidArgument

DISTANCES = ("cosine", "dot", "euclid")
QUANTIZATIONS = ("none", "scalar", "binary", "product")
BINARY_ENCODINGS = ("one_bit", "one_and_half_bits", "two_bits")
BINARY_QUERY_ENCODINGS = ("binary", "scalar4bits", "scalar8bits")
PRODUCT_COMPRESSIONS = ("x4", "x8", "x16", "x32", "x64")

#: Largest oversampling factor a search accepts. Beyond ~16 the rescoring reads
#: dominate and a plain exact search (``exact=True``) is the better tool.
MAX_OVERSAMPLING = 16.0
#: Largest ``limit`` a search accepts, so ``limit * oversampling`` stays bounded.
MAX_LIMIT = 10_000
MAX_DIMENSION = 65_536
#: binary codes rotate by a dense D x d float32 matrix: 4096 dims is 64 MiB (96 at 1.5 bits)
MAX_BINARY_DIMENSION = 4096


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InvalidArgument(f"unknown {name} {value!r}; expected one of {', '.join(allowed)}")
    return value


@dataclass(frozen=True)
class QuantizationConfig:
    """How the in-RAM codes are made.

    kind: ``none`` (originals only), ``scalar`` (int8), ``binary`` or ``product``.
    quantile: scalar only, the central fraction of each dimension's values that
        the int8 range covers (Qdrant's ``quantile``).
    encoding: binary only, ``one_bit``, ``one_and_half_bits`` or ``two_bits``.
    query_encoding: binary only, how the query is held when scored against
        codes: ``binary`` (symmetric, Hamming), ``scalar4bits`` or ``scalar8bits``.
    compression: product only, ``x4`` .. ``x64`` relative to float32.
    """

    kind: str = "binary"
    quantile: float = 0.99
    encoding: str = "one_bit"
    query_encoding: str = "scalar4bits"
    compression: str = "x16"
    seed: int = 0

    def __post_init__(self) -> None:
        _choice("quantization", self.kind, QUANTIZATIONS)
        _choice("binary encoding", self.encoding, BINARY_ENCODINGS)
        _choice("binary query encoding", self.query_encoding, BINARY_QUERY_ENCODINGS)
        _choice("product compression", self.compression, PRODUCT_COMPRESSIONS)
        if not (0.5 <= float(self.quantile) <= 1.0):
            raise InvalidArgument(f"scalar quantile must be in [0.5, 1.0], got {self.quantile}")


@dataclass(frozen=True)
class IndexConfig:
    """Inverted-file (IVF) index over the codes.

    full_scan_threshold: below this many points the shard keeps one list and
        scans every code (as Qdrant's ``full_scan_threshold``).
    nlist: number of k-means lists once above the threshold; 0 picks
        ``clamp(2 * sqrt(n), 64, 4096)`` at training time (``ivf.auto_nlist``).
    nprobe: default lists probed per query (``effort`` overrides per query);
        0 picks ``max(8, nlist // 16)``.
    train_sample: points sampled to train the coarse and fine quantizers.
    retrain_growth: the shard retrains (re-encodes from LMDB) when it has grown
        by this factor since the last training.
    scan_factor: without an explicit effort, a search probes lists until they
        hold at least ``scan_factor * limit * oversampling`` points.
    """

    full_scan_threshold: int = 20_000
    nlist: int = 0
    nprobe: int = 0
    train_sample: int = 50_000
    retrain_growth: float = 4.0
    scan_factor: int = 400

    def __post_init__(self) -> None:
        if self.full_scan_threshold < 0:
            raise InvalidArgument("full_scan_threshold must be >= 0")
        if self.nlist < 0 or self.nlist > 65_536:
            raise InvalidArgument("nlist must be in [0, 65536] (0 = automatic)")
        if self.nprobe < 0:
            raise InvalidArgument("nprobe must be >= 0 (0 = automatic)")
        if self.train_sample < 256:
            raise InvalidArgument("train_sample must be >= 256")
        if not (self.retrain_growth > 1.0):
            raise InvalidArgument("retrain_growth must be > 1")
        if self.scan_factor < 1:
            raise InvalidArgument("scan_factor must be >= 1")


@dataclass(frozen=True)
class HnswConfig:
    """Optional HNSW graph over the codes, replacing the IVF probe as the
    candidate step (the IVF centroids stay: they centre the residual codes).

    Over int8 scalar or product codes (``HNSW_KINDS``): the graph scores a node
    through its code's view (see shard/kernels/graph.py).
    m: links per node on the upper levels (2m on level 0);
    ef_construct: beam width while inserting (Qdrant's default 100; on docs384
        160 bought ~0.002 recall at a search's beam 128, or the same recall at
        beam 96-112, for ~25 % slower builds);
    ef: default beam width of a search (``effort`` overrides per query; the
        beam is never narrower than the candidates wanted);
    rebuild_deleted: the graph is rebuilt from the codes when deleted nodes
        (kept for navigation) exceed this fraction of it.
    """

    m: int = 16
    ef_construct: int = 100
    ef: int = 128
    rebuild_deleted: float = 0.25

    def __post_init__(self) -> None:
        if not (2 <= self.m <= 128):
            raise InvalidArgument("hnsw m must be in [2, 128]")
        if not (1 <= self.ef_construct <= 4096):
            raise InvalidArgument("hnsw ef_construct must be in [1, 4096]")
        if not (1 <= self.ef <= 65_536):
            raise InvalidArgument("hnsw ef must be in [1, 65536]")
        if not (0.0 < float(self.rebuild_deleted) <= 1.0):
            raise InvalidArgument("hnsw rebuild_deleted must be in (0, 1]")


#: Quantizations whose codes the HNSW graph can walk (see shard/kernels/graph.py).
HNSW_KINDS = ("scalar", "product")


@dataclass(frozen=True)
class CollectionConfig:
    dim: int
    distance: str = "cosine"
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    #: None: candidates from the IVF probe (the default); set: from an HNSW graph
    hnsw: HnswConfig | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.dim, int) or not (1 <= self.dim <= MAX_DIMENSION):
            raise InvalidArgument(f"dimension must be an integer in [1, {MAX_DIMENSION}], got {self.dim!r}")
        _choice("distance", self.distance, DISTANCES)
        if self.quantization.kind == "binary" and self.dim > MAX_BINARY_DIMENSION:
            raise InvalidArgument(
                f"binary quantization supports up to {MAX_BINARY_DIMENSION} dimensions (its random rotation "
                f"is a dense d x d matrix), got {self.dim}; use scalar or product quantization")
        if self.hnsw is not None and self.quantization.kind not in HNSW_KINDS:
            raise InvalidArgument(f"an hnsw index needs scalar or product quantization, got "
                                  f"{self.quantization.kind!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.hnsw is None:  # keep IVF configs byte-identical to before the option existed
            del d["hnsw"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CollectionConfig":
        return cls(
            dim=int(d["dim"]),
            distance=d.get("distance", "cosine"),
            quantization=QuantizationConfig(**d.get("quantization", {})),
            index=IndexConfig(**d.get("index", {})),
            hnsw=HnswConfig(**d["hnsw"]) if d.get("hnsw") else None,
        )


def oversampled_top(limit: int, oversampling: float) -> int:
    """Number of candidates fetched on the codes: ``ceil(limit * oversampling)``.

    The one place that validates ``limit`` and ``oversampling`` for a search.
    """
    if isinstance(limit, bool) or not isinstance(limit, (int,)) and not hasattr(limit, "__index__"):
        raise InvalidArgument(f"limit must be an integer, got {limit!r}")
    limit = int(limit)
    if limit < 1:
        raise InvalidArgument(f"limit must be >= 1, got {limit}")
    if limit > MAX_LIMIT:
        raise InvalidArgument(f"limit must be <= {MAX_LIMIT}, got {limit}")
    try:
        oversampling = float(oversampling)
    except (TypeError, ValueError):
        raise InvalidArgument(f"oversampling must be a number, got {oversampling!r}") from None
    if not math.isfinite(oversampling) or oversampling < 1.0 or oversampling > MAX_OVERSAMPLING:
        raise InvalidArgument(f"oversampling must be in [1, {MAX_OVERSAMPLING:g}], got {oversampling:g}")
    return int(math.ceil(limit * oversampling - 1e-9))
