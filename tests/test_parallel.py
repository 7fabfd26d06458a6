"""Row blocks in threads (shard/parallel.py), the write batches' allocation mode and the cache-line-aligned arrays (shard/memory.py)."""

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


@pytest.mark.parametrize("shape,fill,dtype", [((100_000, 384), 0, np.uint8), ((1000, 32), -1, np.int32),
                                              (17, 0, np.float32)])
def test_aligned_arrays_start_on_a_cache_line_and_hold_the_fill(shape, fill, dtype):
    a = memory.aligned_full(shape, fill, dtype)
    assert a.ctypes.data % memory.CACHE_LINE == 0 and a.flags.c_contiguous
    assert a.shape == (shape if isinstance(shape, tuple) else (shape,))
    assert a.dtype == dtype and (a == fill).all()
    src = np.arange(a.size, dtype=np.int64).reshape(a.shape)
    c = memory.aligned_copy(src, dtype)
    assert c.ctypes.data % memory.CACHE_LINE == 0 and c.dtype == dtype
    np.testing.assert_array_equal(c, src.astype(dtype))


def test_code_store_and_graph_arrays_are_aligned_after_growth():
    """The arrays a graph walk reads at random stay on cache lines when they grow."""
    from shard.index.hnsw import GraphCodeStore, HnswGraph

    store = GraphCodeStore(384, np.uint8, 0, 4)
    store._grow(5000)
    g = HnswGraph(16, 32)
    g._grow(5000)
    for a in (store.codes, store.list_of_slot, store.half_sqnorm, g.links0, g.deg0):
        assert a.ctypes.data % memory.CACHE_LINE == 0
