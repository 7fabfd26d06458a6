"""Quantizers: one module each, behind the interface in ``base.py``."""

from __future__ import annotations

from shard.config import CollectionConfig
from shard.quantization.binary import BinaryQuantizer
from shard.quantization.product import ProductQuantizer
from shard.quantization.scalar import ScalarQuantizer


def make_quantizer(config: CollectionConfig):
    """The quantizer a collection's config asks for, untrained; None for ``none``."""
    qc = config.quantization
    if qc.kind == "scalar":
        return ScalarQuantizer(config.dim, qc.quantile)
    if qc.kind == "binary":
        return BinaryQuantizer(config.dim, qc.encoding, qc.query_encoding, qc.seed)
    if qc.kind == "product":
        return ProductQuantizer(config.dim, qc.compression, qc.seed)
    return None
