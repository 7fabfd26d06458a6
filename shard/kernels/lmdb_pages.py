"""Point lookups in an LMDB B+tree, read straight from the data file's pages.

Rescoring reads ``limit x oversampling`` originals a query at random places in
a file far larger than the CPU caches, and through py-lmdb each key is its own
descent from the root, one dependent cache miss after another (2 to 3 us a key
on docs384 while a graph search runs beside it). ``lookup_rows`` descends for
all keys of a read in lockstep, one tree level and one binary-search step at a
time, so the misses of different keys overlap instead of queueing.

Only pages of a snapshot that a live read transaction pins are read (the
caller finds the snapshot's root, ``shard/storage/pages.py``): LMDB never
rewrites such pages while the transaction is open.

On-disk layout (LMDB 0.9, native little-endian, 64-bit page numbers):
- page: ``pgno`` u64, ``pad`` u16, ``flags`` u16, ``lower`` u16, ``upper`` u16
  (16 bytes), then ``(lower - 16) / 2`` u16 offsets of its nodes, in key order;
- node: ``lo`` u16, ``hi`` u16, ``flags`` u16, ``ksize`` u16, key, value. A
  branch node's child page is ``lo | hi << 16 | flags << 32`` and its key is
  the least key under it (node 0's is ignored: -inf); a leaf node's value size
  is ``lo | hi << 16``, and with flag ``BIGDATA`` the value is the u64 number
  of the overflow page whose bytes after the 16-byte header hold it.
Keys here are 8-byte big-endian ids, so byte order (memcmp) is id order.
"""

import numpy as np
from numba import njit

from shard.kernels.prefetch import prefetch

PAGE_HEADER = 16
NODE_HEADER = 8
P_BRANCH = 0x01
P_LEAF = 0x02
F_BIGDATA = 0x01
#: deeper than any real tree (a 4 KiB-page tree of 8-byte keys holds ~200 keys a branch page)
MAX_DEPTH = 32


@njit(nogil=True, cache=True, inline="always")
def _u16(mem, at):
    return np.int64(mem[at]) | (np.int64(mem[at + 1]) << 8)


@njit(nogil=True, cache=True, inline="always")
def _key_be(mem, node):
    """The node's 8-byte big-endian key as a u64 (the caller checked ksize)."""
    v = np.uint64(0)
    at = node + NODE_HEADER
    for b in range(8):
        v = (v << np.uint64(8)) | np.uint64(mem[at + b])
    return v


@njit(nogil=True, cache=True, boundscheck=False)
def lookup_rows(mem, psize, root, keys, row_bytes, out, found):
    """Copy the value of each key (n,) u64 into ``out`` rows (n, row_bytes) uint8.

    ``found[i]`` becomes 1 when key i is present, 0 when absent. Returns 0, or
    -1 when a page or a value is not what this layout promises (a page out of
    the map, a key not 8 bytes, a value of another size): then nothing read
    can be trusted and the caller reads through LMDB.
    """
    n = keys.shape[0]
    size = mem.shape[0]
    n_pages = size // psize
    pg = np.full(n, np.int64(root))
    lo = np.empty(n, np.int64)
    hi = np.empty(n, np.int64)
    pick = np.empty(n, np.int64)
    for i in range(n):
        found[i] = 0
    for _ in range(MAX_DEPTH):
        # every key sits at the same depth (a B+tree is balanced): one level for all,
        # of the kind key 0's page is (every page is checked against it below)
        if n == 0 or not 0 <= pg[0] < n_pages:
            return -1 if n else 0
        leaf = (_u16(mem, pg[0] * psize + 10) & P_LEAF) != 0
        for i in range(n):
            p = pg[i]
            if p < 0 or p >= n_pages:
                return -1
            base = p * psize
            flags = _u16(mem, base + 10)
            nk = (_u16(mem, base + 12) - PAGE_HEADER) >> 1
            if leaf and flags & P_LEAF:
                lo[i], hi[i], pick[i] = 0, nk - 1, -1
            elif not leaf and flags & P_BRANCH and nk >= 1:
                lo[i], hi[i], pick[i] = 1, nk - 1, 0
            else:
                return -1
        # binary search, one step for every key per sweep: their misses overlap
        active = True
        while active:
            active = False
            for i in range(n):
                if lo[i] > hi[i]:
                    continue
                active = True
                base = pg[i] * psize
                mid = (lo[i] + hi[i]) >> 1
                node = base + _u16(mem, base + PAGE_HEADER + 2 * mid)
                if node + NODE_HEADER + 8 > size or _u16(mem, node + 6) != 8:
                    return -1
                k = _key_be(mem, node)
                if leaf:
                    if k == keys[i]:
                        pick[i] = node
                        hi[i] = lo[i] - 1  # done
                    elif k < keys[i]:
                        lo[i] = mid + 1
                    else:
                        hi[i] = mid - 1
                elif k <= keys[i]:
                    pick[i] = mid
                    lo[i] = mid + 1
                else:
                    hi[i] = mid - 1
        if leaf:
            break
        for i in range(n):
            base = pg[i] * psize
            node = base + _u16(mem, base + PAGE_HEADER + 2 * pick[i])
            pg[i] = _u16(mem, node) | (_u16(mem, node + 2) << 16) | (_u16(mem, node + 4) << 32)
    else:
        return -1
    for i in range(n):
        node = pick[i]
        if node < 0:
            continue
        at = _value_offset(mem, psize, node, row_bytes)
        if at < 0:
            return -1
        _copy_row(mem, at, out[i])
        found[i] = 1
    return 0


@njit(nogil=True, cache=True, inline="always")
def _value_offset(mem, psize, node, row_bytes):
    """Byte offset of the value of the leaf node at ``node`` (inline, or on
    overflow pages), checked to be ``row_bytes`` long and inside the map; -1
    when it is not."""
    if (_u16(mem, node) | (_u16(mem, node + 2) << 16)) != row_bytes:
        return -1
    at = node + NODE_HEADER + 8
    if _u16(mem, node + 4) & F_BIGDATA:  # the value is on overflow pages
        ov = np.int64(0)
        for b in range(8):
            ov |= np.int64(mem[at + b]) << (8 * b)
        at = ov * psize + PAGE_HEADER
    if at < 0 or at + row_bytes > mem.shape[0]:
        return -1
    return at


@njit(nogil=True, cache=True, inline="always")
def _copy_row(mem, at, dst):
    """dst[:] = mem[at:at + len(dst)], through 1-d views: LLVM turns this loop into
    a vector copy (indexing a 2-d array inside it kept it a byte loop, 60x slower)."""
    src = mem[at:at + dst.shape[0]]
    for b in range(dst.shape[0]):
        dst[b] = src[b]


# -- every value's place, and reads by place -----------------------------------
@njit(nogil=True, cache=True, boundscheck=False)
def leaf_nodes(mem, psize, root, keys, nodes):
    """Every leaf node of the tree under ``root``, in key order: its key into
    ``keys`` (cap,) u64 and its byte offset in the file into ``nodes`` (cap,)
    int64. Returns how many, or -1 when a page is not what the layout promises
    or the tree holds more than ``cap`` entries.

    One pass down every branch (a stack of (page, next child)); a leaf page
    costs its header, its offsets and one line a node: the values stay unread.
    """
    cap = keys.shape[0]
    n_pages = mem.shape[0] // psize
    stack_pg = np.empty(MAX_DEPTH, np.int64)
    stack_next = np.empty(MAX_DEPTH, np.int64)
    stack_pg[0] = root
    stack_next[0] = 0
    depth = 1
    n = 0
    while depth > 0:
        p = stack_pg[depth - 1]
        if not 0 <= p < n_pages:
            return -1
        base = p * psize
        flags = _u16(mem, base + 10)
        nk = (_u16(mem, base + 12) - PAGE_HEADER) >> 1
        if flags & P_LEAF:
            if n + nk > cap:
                return -1
            for j in range(nk):
                node = base + _u16(mem, base + PAGE_HEADER + 2 * j)
                if node + NODE_HEADER + 8 > base + psize or _u16(mem, node + 6) != 8:
                    return -1
                keys[n] = _key_be(mem, node)
                nodes[n] = node
                n += 1
            depth -= 1
        elif flags & P_BRANCH:
            j = stack_next[depth - 1]
            if j >= nk:
                depth -= 1
                continue
            stack_next[depth - 1] = j + 1
            if depth == MAX_DEPTH:
                return -1
            node = base + _u16(mem, base + PAGE_HEADER + 2 * j)
            stack_pg[depth] = _u16(mem, node) | (_u16(mem, node + 2) << 16) | (_u16(mem, node + 4) << 32)
            stack_next[depth] = 0
            depth += 1
        else:
            return -1
    return n


@njit(nogil=True, cache=True, inline="always")
def prefetch_nodes(mem, node_of, slots, row_bytes):
    """Hint every line of the leaf nodes ``node_of[slots]`` (header, key, an inline
    value) before any is read: the rows' misses overlap."""
    size = mem.shape[0]
    span = NODE_HEADER + 8 + row_bytes
    for i in range(slots.shape[0]):
        node = node_of[slots[i]]
        if 0 <= node and node + span <= size:
            for b in range(node, node + span, 64):
                prefetch(mem, b)
            prefetch(mem, node + span - 1)


@njit(nogil=True, cache=True, inline="always")
def value_at(mem, psize, node, key, row_bytes):
    """``_value_offset`` of the leaf node at ``node``, checked first to hold
    ``key``; -1 when it does not."""
    if node < 0 or node + NODE_HEADER + 8 > mem.shape[0] or _u16(mem, node + 6) != 8 or _key_be(mem, node) != key:
        return -1
    return _value_offset(mem, psize, node, row_bytes)


@njit(nogil=True, cache=True, boundscheck=False)
def rows_at(mem, psize, node_of, slots, keys, row_bytes, out, found):
    """``lookup_rows`` without the descents: the value of slot ``slots[i]`` (whose
    key is ``keys[i]``) read at the leaf node ``node_of[slot]`` (-1: absent) that
    ``leaf_nodes`` found in the same snapshot. Every node's lines are hinted
    first, then each node is checked against its key and value size and copied.
    Returns 0, or -1 when a node is not the one expected (read by descent then).
    """
    prefetch_nodes(mem, node_of, slots, row_bytes)
    for i in range(slots.shape[0]):
        found[i] = 0
        node = node_of[slots[i]]
        if node < 0:
            continue
        at = value_at(mem, psize, node, keys[i], row_bytes)
        if at < 0:
            return -1
        _copy_row(mem, at, out[i])
        found[i] = 1
    return 0
