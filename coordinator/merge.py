"""The global rerank: merge the shards' candidates into one top list."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Merged:
    """Winners of one query, best first.

    ids uint64 (k,), scores float32 (k,), and where each came from:
    shard int64 (k,) (index into the lists given) and row int64 (k,) (its
    position in that shard's list), so payloads or vectors that came with the
    candidates can be picked without a dictionary.
    """

    ids: np.ndarray
    scores: np.ndarray
    shard: np.ndarray
    row: np.ndarray


def merge_from_shards(ids: list[np.ndarray], scores: list[np.ndarray], limit: int, offset: int = 0,
                      score_threshold: float | None = None) -> Merged:
    """Merge per-shard candidate lists by score, deduplicated by id, offset applied once.

    ids[s], scores[s]: shard s's candidates (uint64 (k_s,), float32 (k_s,)).
    Order: score descending, ties by id ascending (deterministic across runs
    and shard counts). A duplicated id keeps its best-scored copy. Scores must
    be on one scale across shards: exact (rescored) scores, or the codes'
    estimates, which the engine puts on the exact scale.
    """
    sizes = np.fromiter((len(x) for x in ids), np.int64, len(ids))
    all_ids = np.concatenate(ids) if len(ids) else np.zeros(0, np.uint64)
    all_scores = np.concatenate(scores) if len(scores) else np.zeros(0, np.float32)
    order = np.lexsort((all_ids, -all_scores))
    sorted_ids = all_ids[order]
    _, first = np.unique(sorted_ids, return_index=True)
    if len(first) != len(order):  # keep each id's first (best) occurrence
        order = order[np.sort(first)]
    if score_threshold is not None:
        order = order[all_scores[order] >= score_threshold]
    order = order[offset:offset + limit]
    starts = np.cumsum(sizes) - sizes
    shard = np.searchsorted(np.cumsum(sizes), order, side="right")
    return Merged(all_ids[order], all_scores[order], shard, order - starts[shard])
