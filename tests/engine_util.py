"""Data and helpers shared by the engine tests."""

import numpy as np

from shard.config import CollectionConfig, IndexConfig, QuantizationConfig

QUANT_CONFIGS = {
    "none": QuantizationConfig(kind="none"),
    "scalar": QuantizationConfig(kind="scalar"),
    "binary": QuantizationConfig(kind="binary"),
    "binary1.5": QuantizationConfig(kind="binary", encoding="one_and_half_bits"),
    "binary2": QuantizationConfig(kind="binary", encoding="two_bits"),
    "product": QuantizationConfig(kind="product", compression="x8"),
}


def clustered(n, d, seed, centers=20):
    """Seeded synthetic data with cluster structure, like real embeddings have."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, d)).astype(np.float32)
    return (c[rng.integers(0, centers, n)] + 0.6 * rng.standard_normal((n, d))).astype(np.float32)


def config(dim, quant="binary", distance="cosine", **index):
    return CollectionConfig(dim=dim, distance=distance, quantization=QUANT_CONFIGS[quant],
                            index=IndexConfig(**index))


def exact_topk(xb, xq, k, distance):
    if distance == "cosine":
        xb = xb / np.linalg.norm(xb, axis=1, keepdims=True)
        xq = xq / np.linalg.norm(xq, axis=1, keepdims=True)
    if distance == "euclid":
        s = -np.sqrt(np.maximum(((xq[:, None, :] - xb[None]) ** 2).sum(-1), 0))
    else:
        s = xq @ xb.T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(s, order, 1)


def recall(found, truth, k=10):
    return float(np.mean([len(set(map(int, f[:k])) & set(map(int, t[:k]))) / k for f, t in zip(found, truth)]))
