"""Kernels for a hierarchical navigable small-world graph (HNSW) over codes.

Nodes are code slots. Level 0 holds every node with up to ``M0`` links
(``links0`` (cap, M0) int32, ``deg0`` (cap,) int32); levels 1.. hold the
nodes drawn that high, at most ``M`` links each, in ``up`` (maxL, rows, M)
int32 / ``updeg`` (maxL, rows) int32, a node's row being ``up_row[node]``.
``state`` (2,) int64 is (entry node, top level), -1 for an empty graph.

Scoring is "higher is better" throughout. A node v is scored against a float
vector p through a view of its code with ``l_v = lists[v]`` the node's list
(its IVF centroid), one of two kinds, told apart by the view's shape (numba
compiles only the branch a call's array types take):

* affine, ``b`` (d,): ``x_v = off[l_v] + b * codes[v]``, so
  ``score(p, v) = <p, off[l_v]> + sum_j (p_j b_j) codes[v, j]`` and a point
  is prepared as ``pb = p * b`` (d,). For the engine's int8 scalar codes of
  residuals ``off = centroids + lo``, ``b = step``, and ``<p, off[l]>`` is
  exactly the engine's ``<c_l, q> + <q, lo>``. The same source compiles for
  float32 rows (off = 0, b = 1: the originals).
* product, ``b`` (M, dsub, K) codebooks, transposed: ``x_v = off[l_v] +
  concat_j b[j, :, codes[v, j]]`` (cut to d), so ``score(p, v) = <p, off[l_v]> +
  sum_j lut[j, codes[v, j]]`` with the point prepared as its lookup table
  ``lut[j, k] = <p_j, b[j, :, k]>`` (M, K). A search walks the table in bytes
  (``product.byte_table``: one scale for all rows, the rows' minima moved into
  ``base``): 24 KB at x16 stays in L1 where the float table (96 KB) did not,
  and the walk is 1.1x faster at equal candidate recall (x4 to x64 measured);
  the build keeps the float table.

In both, ``base = off @ p`` (nlist,) is per point and ``hsq[v]`` is
subtracted for euclid. A search computes its ``base`` (``layout.list_base``)
over the offsets held in int16 (half the DRAM bytes of float32 ones, which the
walk evicts between queries), and prepares each query itself: one call per
batch, where preparing the query, its base and the ids in Python had cost
~12 us of a ~250 us int8 query.

Deleted nodes stay in the graph and are traversed, but never returned.
The visited set is a reusable array of generation stamps with a counter (``gen``
(1,), the same unsigned dtype), so a search touches only what it visits. The
owner holds them in uint16 (cleared once every 65,535 walks): a walk checks
every link of each node it expands (~10,000 random reads at m = 20, beam 96),
and 200 KB of stamps at 100k nodes stay in L2 more than 400 KB of uint32 did.

The walk waits on memory (100k x 384 int8 codes are 38 MB, ~1,800 rows
scored per query at ef=112) and on its own bookkeeping (with every row in cache
a walk still takes half its time): an expansion first collects its unvisited
neighbours and prefetches their code rows, then scores them, so the row loads
overlap, and it prefetches the links of the next entry to expand (hinting that
entry's unseen rows as well measured slower: they are often not walked). The
beam is one sorted pool (``_layer_search``). On CPUs with AVX-512 VNNI a
search holds an affine query over uint8 codes in signed bytes and scores a row
with ``vpdpbusd`` (``dot8.py``: a 1.1-1.2x faster walk than float32, candidates
unchanged on docs384); an int16 query with ``vpmaddwd`` had measured no faster
than float32.
"""

import numpy as np
from numba import njit, types
from numba.extending import overload

from shard.kernels.dot8 import held_query, row_score
from shard.kernels.prefetch import prefetch2 as _prefetch
from shard.kernels.layout import list_base8_row, list_base_row
from shard.kernels.product import byte_sum, byte_table, product_lut


# -- prefetch ----------------------------------------------------------------
@njit(nogil=True, cache=True, inline="always")
def _prefetch_row(codes, v):
    """Every cache line of codes[v] (a row is d bytes of uint8, 4d of float32):
    one hint a line from the row's first byte, and one for its last byte, whose
    line the others miss when the row does not start on a line."""
    step = max(1, 64 // codes.itemsize)
    w = codes.shape[1]
    for j in range(0, w, step):
        _prefetch(codes, v, j)
    _prefetch(codes, v, w - 1)


# -- scoring -----------------------------------------------------------------
def _score(pb, base, lists, codes, hsq, use_sqnorm, v):
    """A prepared point's score against node v: pb (d,) = p * b (or as a search
    holds it, ``dot8.held_query``), or (M, K) its lookup table (or a search's
    (table in bytes, scale)). Kernels only (see the overload below)."""
    raise NotImplementedError("_score is compiled into the graph kernels")


@overload(_score, inline="always", jit_options={"fastmath": True, "boundscheck": False})
def _score_kind(pb, base, lists, codes, hsq, use_sqnorm, v):
    # chosen by pb's type when a kernel is compiled: numba does not prune a
    # branch on ndim inside a function inlined as IR, so the kinds are separate bodies
    if isinstance(pb, types.BaseTuple) and isinstance(pb[0], types.Array):  # (table in bytes, flat; K; scale)
        def byte_lookup(pb, base, lists, codes, hsq, use_sqnorm, v):
            flat, K, scale = pb
            s = base[max(lists[v], 0)] + scale * np.float32(byte_sum(flat, K, codes, v))
            if use_sqnorm:
                s -= hsq[v]
            return s
        return byte_lookup

    if isinstance(pb, types.BaseTuple) or pb.ndim == 1:
        def affine(pb, base, lists, codes, hsq, use_sqnorm, v):
            # pb held by dot8.held_query: the query in bytes (VNNI) or as is
            s = base[max(lists[v], 0)] + row_score(pb, codes, v)
            if use_sqnorm:
                s -= hsq[v]
            return s
        return affine

    def lookup(pb, base, lists, codes, hsq, use_sqnorm, v):
        acc = base[max(lists[v], 0)]
        for j in range(pb.shape[0]):
            acc += pb[j, codes[v, j]]
        if use_sqnorm:
            acc -= hsq[v]
        return acc
    return lookup


def _query_base(offq, qs, out, q8, ones):
    """out (nlist,) = the list terms of a query from offsets held in int16
    (``layout.list_base_row``) or in bytes (``list_base8_row``; q8 (d,) int8
    and ones (1, d) uint8 of 128 its scratch). Kernels only."""
    raise NotImplementedError("_query_base is compiled into the graph kernels")


@overload(_query_base, inline="always", jit_options={"fastmath": True, "boundscheck": False})
def _query_base_kind(offq, qs, out, q8, ones):
    if offq.dtype == types.uint8:
        def in_bytes(offq, qs, out, q8, ones):
            list_base8_row(offq, qs, np.float32(0.0), out, q8, ones)
        return in_bytes

    def in_int16(offq, qs, out, q8, ones):
        list_base_row(offq, qs, np.float32(0.0), out)
    return in_int16


def _walked(p, bq, codes, table, mins, q8, bq_out):
    """The prepared point p (and its list base bq) as a search walks it. Kernels only."""
    raise NotImplementedError("_walked is compiled into the graph kernels")


@overload(_walked, inline="always", jit_options={"fastmath": True, "boundscheck": False})
def _walked_kind(p, bq, codes, table, mins, q8, bq_out):
    if p.ndim == 1:
        def affine(p, bq, codes, table, mins, q8, bq_out):
            # int8 codes score against the query in signed bytes on VNNI hosts
            # (dot8.py): the float dot was about a fifth of the walk
            return held_query(p, q8, codes), bq
        return affine

    def as_bytes(p, bq, codes, table, mins, q8, bq_out):
        # a lookup table walks as bytes (M x K, 24 KB at x16: it stays in L1);
        # the rows' minima move into the list base
        scale, bias = byte_table(p, table, mins)
        for t in range(bq.shape[0]):
            bq_out[t] = bq[t] + bias
        return (table.reshape(table.size), np.uint64(table.shape[1]), scale), bq_out
    return as_bytes


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def _prepare(x, b, out):
    """out = the point x (d,) prepared for ``_score``: x * b, or its lookup table."""
    if b.ndim == 1:
        for j in range(x.shape[0]):
            out[j] = x[j] * b[j]
    else:
        product_lut(x, b, out)


@njit(nogil=True, cache=True)
def _prepared_buffer(d, b):
    if b.ndim == 1:
        return np.empty(d, np.float32)
    return np.empty((b.shape[0], b.shape[2]), np.float32)


@njit(nogil=True, cache=True)
def _next_gen(visited, gen):
    """The next generation stamp; visited and gen share an unsigned dtype, and
    visited is cleared when the stamp wraps (every 2^bits - 1 searches)."""
    gen[0] += 1  # wraps in gen's own dtype
    if gen[0] == 0:
        visited[:] = 0
        gen[0] = 1
    return gen[0]


# -- the layer walk ---------------------------------------------------------
@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def _greedy(pb, base, lists, codes, hsq, use_sqnorm, up, updeg, up_row, level, v, sv):
    """Hill-climb on one upper level from v (score sv); returns (node, score)."""
    links = up[level - 1]
    degs = updeg[level - 1]
    changed = True
    while changed:
        changed = False
        r = up_row[v]
        for t in range(degs[r]):
            _prefetch_row(codes, links[r, t])
        for t in range(degs[r]):
            u = links[r, t]
            su = _score(pb, base, lists, codes, hsq, use_sqnorm, u)
            if su > sv:
                sv = su
                v = u
                changed = True
    return v, sv


#: flags of a pool entry
_EXPANDED = 1
_LIVE = 2


@njit(nogil=True, cache=True, inline="always")
def _pool_add(ps, pi, px, n, live, ef, s, v, flag):
    """Insert (s, v) into the pool (ps, pi, px: sorted best first, n entries,
    ``live`` of them flagged live; room for one more) and trim it to end at its
    ef-th live entry. Returns (position, n, live)."""
    pos = n
    while pos > 0 and ps[pos - 1] < s:
        ps[pos] = ps[pos - 1]
        pi[pos] = pi[pos - 1]
        px[pos] = px[pos - 1]
        pos -= 1
    ps[pos] = s
    pi[pos] = v
    px[pos] = flag
    n += 1
    if flag & _LIVE:
        live += 1
    if live >= ef:
        while live > ef:
            n -= 1
            if px[n] & _LIVE:
                live -= 1
        while n > 0 and not px[n - 1] & _LIVE:  # deleted entries past the ef-th live one
            n -= 1
    return pos, n, live


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def _layer_search(pb, base, lists, codes, hsq, use_sqnorm, links, degs, rows, ent_s, ent_i, n_ent, ef,
                  visited, gen, deleted, skip_deleted, res_s, res_i):
    """Beam search on one level from the entries: the best ``ef`` (live ones,
    with skip_deleted) into res_s/res_i best first; returns their count.
    ``rows`` maps node -> row of ``links`` (None on level 0); visited and gen
    as in ``_next_gen`` (each walk takes the next stamp).

    HNSW's beam (Malkov & Yashunin, alg. 2) kept as one pool sorted best first
    instead of a candidate heap and a result heap: a node scored better than the
    ef-th live entry is inserted (a short shift of the tail), the walk expands
    the best unexpanded entry and stops when every entry is expanded. The two
    heaps cost a dozen unpredictable branches per accepted node, the shift a
    few vector moves: on docs384 the int8 walk ran 1.2x faster (1.35-1.45x with
    its rows in cache) and product codes' 1.27x, with the same candidates.
    Deleted nodes ride in the pool (the walk passes through them) but do not
    count toward ef; when they crowd it, the walk starts over with a larger one
    (its arrays stay fixed within a walk, which keeps the loop tight).
    """
    cap = ef + 16
    while True:
        g = _next_gen(visited, gen)
        m = _pool_walk(pb, base, lists, codes, hsq, use_sqnorm, links, degs, rows, ent_s, ent_i, n_ent, ef,
                       cap, visited, g, deleted, skip_deleted, res_s, res_i)
        if m >= 0:
            return m
        cap *= 4


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def _pool_walk(pb, base, lists, codes, hsq, use_sqnorm, links, degs, rows, ent_s, ent_i, n_ent, ef, cap,
               visited, g, deleted, skip_deleted, res_s, res_i):
    """``_layer_search``'s walk with a pool of cap entries; -1 when it fills."""
    ps = np.empty(cap, np.float32)
    pi = np.empty(ps.shape[0], np.int32)
    px = np.empty(ps.shape[0], np.uint8)
    nb = np.empty(links.shape[1], np.int32)
    n = 0
    live = 0
    for e in range(n_ent):
        v = ent_i[e]
        visited[v] = g
        flag = np.uint8(0) if skip_deleted and deleted[v] else _LIVE
        if live < ef or ent_s[e] > ps[n - 1]:
            if n == ps.shape[0]:
                return -1
            _, n, live = _pool_add(ps, pi, px, n, live, ef, ent_s[e], v, flag)
    cur = 0
    while cur < n:
        c = pi[cur]
        px[cur] |= _EXPANDED
        nxt = cur + 1
        while nxt < n and px[nxt] & _EXPANDED:
            nxt += 1
        if nxt < n:  # the likely next node: its links now, while this one's rows load
            w = pi[nxt] if rows is None else rows[pi[nxt]]
            _prefetch(links, w, 0)
            _prefetch(links, w, links.shape[1] - 1)
        r = c if rows is None else rows[c]
        # the unvisited neighbours first, their codes prefetched, then scored:
        # the row loads (random over the whole code array) overlap
        n_new = 0
        for t in range(degs[r]):
            u = links[r, t]
            if visited[u] != g:
                visited[u] = g
                nb[n_new] = u
                n_new += 1
                _prefetch_row(codes, u)
        low = nxt
        for t in range(n_new):
            u = nb[t]
            su = _score(pb, base, lists, codes, hsq, use_sqnorm, u)
            if live < ef or su > ps[n - 1]:
                flag = np.uint8(0) if skip_deleted and deleted[u] else _LIVE
                if n == ps.shape[0]:  # crowded by deleted entries
                    return -1
                pos, n, live = _pool_add(ps, pi, px, n, live, ef, su, u, flag)
                low = min(low, pos)
        cur = low  # entries before it are expanded
        while cur < n and px[cur] & _EXPANDED:
            cur += 1
    m = 0
    for t in range(n):
        if px[t] & _LIVE:
            res_s[m] = ps[t]
            res_i[m] = pi[t]
            m += 1
    return m


# -- search -----------------------------------------------------------------
@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def graph_search(Q, b, offq, oscale, lists, codes, hsq, use_sqnorm, links0, deg0, up, updeg, up_row, state,
                 deleted, ef, visited, gen, slot_ids, out_scores, out_ids, out_slots):
    """Top-k of m queries by estimated score, through the graph: each query
    prepared, its list base computed and its walk run in this one call.

    Q: (m, d) float32 queries; b: the view's (d,) steps or (M, dsub, K)
    codebooks; offq (nlist, d) and oscale (d,) float32 the view's offsets
    held in int16 as ``off ~ offq * oscale`` (``layout.list_base``) or in
    bytes as ``off ~ (offq - 128) * oscale`` (``layout.list_base8``); lists
    (cap,) int32 each slot's offset row; codes (cap, d) uint8 or float32; hsq
    (cap,) float32; ef >= k the beam width; visited (cap,) and gen (1,) unsigned
    stamps, the caller's (one per thread); slot_ids (cap,) uint64 each slot's
    point id. Writes each query's best first into out_scores (m, k) float32,
    out_ids (m, k) uint64 and out_slots (m, k) int64; returns counts (m,) int64.
    """
    m, d = Q.shape
    k = out_scores.shape[1]
    ef = max(ef, k)
    counts = np.zeros(m, np.int64)
    entry = state[0]
    if entry < 0:
        return counts
    res_s = np.empty(ef, np.float32)
    res_i = np.empty(ef, np.int64)
    ent_s = np.empty(1, np.float32)
    ent_i = np.empty(1, np.int32)
    pb = _prepared_buffer(d, b)
    qs = np.empty(d, np.float32)
    base = np.empty(offq.shape[0], np.float32)
    table = np.empty((b.shape[0], b.shape[b.ndim - 1]), np.uint8) if b.ndim == 3 else np.empty((0, 0), np.uint8)
    mins = np.empty(table.shape[0], np.float32)
    q8 = np.empty(d, np.int8)
    bq_out = np.empty(offq.shape[0], np.float32)
    ones = np.full((1, d), 128, np.uint8)
    for qi in range(m):
        _prepare(Q[qi], b, pb)
        for j in range(d):
            qs[j] = Q[qi, j] * oscale[j]
        _query_base(offq, qs, base, q8, ones)
        p, bq = _walked(pb, base, codes, table, mins, q8, bq_out)
        v = entry
        sv = _score(p, bq, lists, codes, hsq, use_sqnorm, v)
        for level in range(state[1], 0, -1):
            v, sv = _greedy(p, bq, lists, codes, hsq, use_sqnorm, up, updeg, up_row, level, v, sv)
        ent_s[0] = sv
        ent_i[0] = v
        nr = _layer_search(p, bq, lists, codes, hsq, use_sqnorm, links0, deg0, None, ent_s, ent_i, 1, ef,
                           visited, gen, deleted, True, res_s, res_i)
        c = min(k, nr)
        for t in range(c):
            out_scores[qi, t] = res_s[t]
            out_slots[qi, t] = res_i[t]
            out_ids[qi, t] = slot_ids[res_i[t]]
        counts[qi] = c
    return counts


# -- build ------------------------------------------------------------------
@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def _decode(codes, off, lists, b, v, out):
    """out (d,) = node v's vector through the view, and returns <out, out> / 2."""
    o = off[max(lists[v], 0)]
    h = np.float32(0.0)
    if b.ndim == 1:
        for j in range(b.shape[0]):
            x = o[j] + b[j] * np.float32(codes[v, j])
            out[j] = x
            h += x * x
    else:
        d = out.shape[0]
        dsub = b.shape[1]
        for j in range(b.shape[0]):  # index b whole: a view per subspace costs refcounting
            c = codes[v, j]
            i0 = j * dsub
            for t in range(min(dsub, d - i0)):  # the last subspace may hold padding
                x = o[i0 + t] + b[j, t, c]
                out[i0 + t] = x
                h += x * x
    return np.float32(0.5) * h


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def _pair(pe, off, lists, codes, b, hsq, use_sqnorm, r):
    """Score of stored node r against a decoded vector pe: <pe, x_r> [- hsq[r]]."""
    o = off[max(lists[r], 0)]
    acc = np.float32(0.0)
    if b.ndim == 1:
        for j in range(b.shape[0]):
            acc += pe[j] * (o[j] + b[j] * np.float32(codes[r, j]))
    else:
        d = pe.shape[0]
        dsub = b.shape[1]
        for i in range(d):
            acc += pe[i] * o[i]
        for j in range(b.shape[0]):
            c = codes[r, j]
            i0 = j * dsub
            for t in range(min(dsub, d - i0)):
                acc += pe[i0 + t] * b[j, t, c]
    if use_sqnorm:
        acc -= hsq[r]
    return acc


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False, inline="always")
def _dot(a, c):
    acc = np.float32(0.0)
    for j in range(a.shape[0]):
        acc += a[j] * c[j]
    return acc


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def _select(cand_s, cand_i, n, width, codes, off, lists, b, hsq, use_sqnorm, hsq_p, kv, out):
    """HNSW's neighbour heuristic (Malkov & Yashunin, alg. 4): walk candidates
    best first (cand_s: scores against the base point, sorted), keep one unless
    a kept node is closer to it than the base is. Returns the count.

    kv (>= width, d) float32 scratch: row r holds kept node r decoded, so each
    comparison is one dot product (decoding a node through the product view
    costs ~10x that)."""
    kept = 0
    for t in range(n):
        if kept >= width:
            break
        e = cand_i[t]
        # symmetric similarity: -0.5 ||e - p||^2 (euclid) or <e, p>
        s_ep = cand_s[t] - hsq_p if use_sqnorm else cand_s[t]
        pe = kv[kept]
        he = _decode(codes, off, lists, b, e, pe)
        good = True
        for r in range(kept):
            s_er = _dot(pe, kv[r])
            if use_sqnorm:
                s_er -= hsq[out[r]] + he
            if s_er > s_ep:
                good = False
                break
        if good:
            out[kept] = e
            kept += 1
    return kept


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def _sort_desc(s, i, n):
    order = np.argsort(-s[:n], kind="mergesort")
    s2 = s[:n][order].copy()
    i2 = i[:n][order].copy()
    s[:n] = s2
    i[:n] = i2


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def _link_back(e, v, codes, off, lists, b, hsq, use_sqnorm, links, degs, rows, width, tmp_s, tmp_i, pe, kv, sel):
    """Add v to e's links on one level, pruning by the heuristic when full."""
    r = e if rows is None else rows[e]
    dg = degs[r]
    for t in range(dg):
        if links[r, t] == v:
            return
    if dg < width:
        links[r, dg] = v
        degs[r] = dg + 1
        return
    # full: score e's links and v from e's point of view, and re-select
    he = _decode(codes, off, lists, b, e, pe)
    for t in range(dg):
        u = links[r, t]
        tmp_s[t] = _pair(pe, off, lists, codes, b, hsq, use_sqnorm, u)
        tmp_i[t] = u
    tmp_s[dg] = _pair(pe, off, lists, codes, b, hsq, use_sqnorm, v)
    tmp_i[dg] = v
    _sort_desc(tmp_s, tmp_i, dg + 1)
    kept = _select(tmp_s, tmp_i, dg + 1, width, codes, off, lists, b, hsq, use_sqnorm, he, kv, sel)
    for t in range(kept):
        links[r, t] = sel[t]
    for t in range(kept, dg):
        links[r, t] = -1
    degs[r] = kept


@njit(nogil=True, cache=True, fastmath=True, boundscheck=False)
def graph_insert(nodes, X, base_new, hsq_new, levels, codes, off, lists, b, hsq, use_sqnorm, links0, deg0,
                 up, updeg, up_row, state, deleted, ef_construct, visited, gen):
    """Insert (or re-link) nodes one after another.

    nodes: (n,) int64 slots whose codes, lists and hsq are already written;
    X: (n, d) float32 their float vectors (originals, or decoded codes);
    base_new: (n, nlist) float32 ``X @ off.T``; hsq_new (n,) float32 their
    0.5 ||x||^2; levels (cap,) int8 every slot's top level (rows in ``up``
    allocated by the caller). A node already linked keeps its level and gets
    fresh out-links; links pointing at it stay.
    """
    d = X.shape[1]
    M0 = links0.shape[1]
    M = up.shape[2]
    pb = _prepared_buffer(d, b)
    pe = np.empty(d, np.float32)
    kv = np.empty((M0 + 1, d), np.float32)
    res_s = np.empty(ef_construct, np.float32)
    res_i = np.empty(ef_construct, np.int64)
    ent_s = np.empty(ef_construct, np.float32)
    ent_i = np.empty(ef_construct, np.int32)
    sel = np.empty(M0, np.int32)
    sel2 = np.empty(M0, np.int32)
    tmp_s = np.empty(M0 + 1, np.float32)
    tmp_i = np.empty(M0 + 1, np.int32)
    for t in range(nodes.shape[0]):
        v = nodes[t]
        L = levels[v]
        deleted[v] = False
        bq = base_new[t]
        _prepare(X[t], b, pb)
        entry = state[0]
        if entry < 0 or entry == v and state[1] == 0 and deg0[v] == 0:
            state[0] = v
            state[1] = L
            continue
        top = state[1]
        ep = entry
        sep = _score(pb, bq, lists, codes, hsq, use_sqnorm, ep)
        for lc in range(top, L, -1):
            ep, sep = _greedy(pb, bq, lists, codes, hsq, use_sqnorm, up, updeg, up_row, lc, ep, sep)
        ent_s[0] = sep
        ent_i[0] = ep
        n_ent = 1
        for lc in range(min(L, top), -1, -1):
            if lc == 0:
                nr = _layer_search(pb, bq, lists, codes, hsq, use_sqnorm, links0, deg0, None, ent_s, ent_i, n_ent,
                                   ef_construct, visited, gen, deleted, False, res_s, res_i)
            else:
                nr = _layer_search(pb, bq, lists, codes, hsq, use_sqnorm, up[lc - 1], updeg[lc - 1], up_row,
                                   ent_s, ent_i, n_ent, ef_construct, visited, gen, deleted, False, res_s, res_i)
            n_ent = 0
            for e in range(nr):  # never link to itself (a re-linked node is in the graph)
                if res_i[e] != v:
                    ent_s[n_ent] = res_s[e]
                    ent_i[n_ent] = res_i[e]
                    n_ent += 1
            if n_ent == 0:
                ent_s[0] = sep
                ent_i[0] = ep
                n_ent = 1
                continue
            width = M0 if lc == 0 else M
            kept = _select(ent_s, ent_i, n_ent, width, codes, off, lists, b, hsq, use_sqnorm, hsq_new[t], kv, sel)
            if lc == 0:
                for e in range(kept):
                    links0[v, e] = sel[e]
                deg0[v] = kept
                for e in range(kept):
                    _link_back(sel[e], v, codes, off, lists, b, hsq, use_sqnorm, links0, deg0, None, M0,
                               tmp_s, tmp_i, pe, kv, sel2)
            else:
                r = up_row[v]
                for e in range(kept):
                    up[lc - 1, r, e] = sel[e]
                updeg[lc - 1, r] = kept
                for e in range(kept):
                    _link_back(sel[e], v, codes, off, lists, b, hsq, use_sqnorm, up[lc - 1], updeg[lc - 1],
                               up_row, M, tmp_s, tmp_i, pe, kv, sel2)
        if L > top:
            state[0] = v
            state[1] = L
