"""Row blocks in threads (shard/parallel.py) and the write batches' allocation mode (shard/memory.py)."""

import threading

import numpy as np
import pytest

from shard import memory
from shard.parallel import WORKERS, map_row_blocks


@pytest.mark.parametrize("n,min_rows", [(0, 10), (5, 10), (100, 10), (10_001, 1000), (7, 1)])
def test_map_row_blocks_covers_every_row_once_in_order(n, min_rows):
    seen = []
    lock = threading.Lock()

    def fn(lo, hi):
        with lock:
            seen.append((lo, hi))
        return np.arange(lo, hi)

    parts = map_row_blocks(fn, n, min_rows)
    np.testing.assert_array_equal(np.concatenate(parts), np.arange(n))  # results in row order
    assert len(parts) == max(1, min(WORKERS, n // min_rows))
    assert all(hi - lo >= min(min_rows, n) for lo, hi in seen)


def test_map_row_blocks_passes_errors_on():
    def fn(lo, hi):
        if lo:
            raise ValueError("block failed")
        return hi

    with pytest.raises(ValueError, match="block failed"):
        map_row_blocks(fn, 100, 10)


def test_batch_allocations_nest_and_overlap_across_threads():
    """Any number of overlapping batches: the mode ends only when the last one does,
    also when a batch fails."""
    assert memory._batches == 0
    with memory.batch_allocations():
        with memory.batch_allocations():
            assert memory._batches == 2
        assert memory._batches == 1
    assert memory._batches == 0
    with pytest.raises(RuntimeError):
        with memory.batch_allocations():
            raise RuntimeError("write failed")
    assert memory._batches == 0
    start = threading.Barrier(4)

    def batch():
        start.wait()
        with memory.batch_allocations():
            np.ones((2000, 2000), np.float32).sum()

    threads = [threading.Thread(target=batch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert memory._batches == 0
