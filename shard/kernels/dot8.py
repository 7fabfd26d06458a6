"""uint8 code rows times a query held in signed bytes, with AVX-512 VNNI.

A float query row p (d,) is held as ``p ~ scale * q``, q (d,) int8 in
-127..127 (``byte_query``: each entry within half a step, up to float32 rounding
of p / scale), and a code row c (d,) uint8 scores ``<p, c> ~ scale * sum_j c_j q_j``
in an exact int32 sum (at most d * 255 * 127: no overflow below d = 66,000).
Each 64 bytes of a row take one ``vpdpbusd`` (u8 x s8 products summed in fours
into 16 int32 lanes) where the float path widens every byte to float and
multiplies. The graph walk over int8 codes waits on its arithmetic as well as on
memory (docs384, beam 96: doubling the float dot's work made the walk 1.26x
slower) and the IVF scan on little else, so both score this way on CPUs that
have VNNI (``HAS_VNNI``), through ``held_query`` (a query row as the kernel holds
it) and ``row_score`` (one code row's score), which fall back to float32 elsewhere.

Why one byte of query is enough: the query's rounding error e (|e_j| <= scale / 2)
adds ``sum_j c_j e_j`` to a score, and the part of it from the codes' common level
(the mean code) is the same for every row, so it moves no rank; what is left is
of the order of the codes' own rounding. On docs384 (int8 HNSW, 100k points) a
15-bit query (two bytes, two ``vpdpbusd`` a block) and this one give the same
candidates to within 3 in 10,000 of recall@10 at k = 10 and identical recall at
k = 20..40, and the walk is 1.05-1.15x faster. ``row_dot`` is the plain loop
giving the same sum, the reference the tests hold the intrinsic to.
"""

import numpy as np
from llvmlite import binding as _llvm
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

#: AVX-512 VNNI on this host (numba compiles for the host CPU, and its cache is
#: keyed by the CPU, so code built here is never reused on a CPU without it)
HAS_VNNI = bool(_llvm.get_host_cpu_features().get("avx512vnni", False))


@intrinsic
def address(typingctx, a):
    """The address of an array's first element, as an integer (``.ctypes``
    would build an object holding a reference on every call)."""
    sig = types.intp(a)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.ptrtoint(data, ir.IntType(64))

    return sig, codegen


@intrinsic
def vnni_dot(typingctx, pc, pq, d):
    """sum_j c_j * q_j as int32 over d bytes from the addresses pc (unsigned
    bytes) and pq (signed bytes): ``llvm.x86.avx512.vpdpbusd.512`` a 64 bytes,
    then a plain loop over the rest. Only for hosts with ``HAS_VNNI``. Integers
    in, an integer out: no array, so no reference counting per call."""
    sig = types.int32(types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        i8 = ir.IntType(8)
        i32 = ir.IntType(32)
        v16 = ir.VectorType(i32, 16)
        pc, pq = (builder.inttoptr(a, i8.as_pointer()) for a in args[:2])
        d = args[2]
        n64 = builder.sdiv(d, ir.Constant(d.type, 64))
        dp = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16, [v16, v16, v16]),
                                            "llvm.x86.avx512.vpdpbusd.512")
        acc = cgutils.alloca_once_value(builder, ir.Constant(v16, None))
        with cgutils.for_range(builder, n64) as loop:
            off = builder.mul(loop.index, ir.Constant(loop.index.type, 64))
            c, q = (builder.load(builder.bitcast(builder.gep(p, [off]), v16.as_pointer()), align=1) for p in (pc, pq))
            builder.store(builder.call(dp, [builder.load(acc), c, q]), acc)
        red = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, [v16]),
                                             "llvm.vector.reduce.add.v16i32")
        total = cgutils.alloca_once_value(builder, builder.call(red, [builder.load(acc)]))
        start = builder.mul(n64, ir.Constant(d.type, 64))
        with cgutils.for_range_slice(builder, start, d, ir.Constant(d.type, 1)) as (j, _):
            c = builder.zext(builder.load(builder.gep(pc, [j])), i32)
            term = builder.mul(c, builder.sext(builder.load(builder.gep(pq, [j])), i32))
            builder.store(builder.add(builder.load(total), term), total)
        return builder.load(total)

    return sig, codegen


@njit(nogil=True, cache=True, boundscheck=False)
def row_dot(codes, v, q):
    """sum_j codes[v, j] * q[j] as int32, by a plain loop."""
    acc = np.int32(0)
    for j in range(q.shape[0]):
        acc += np.int32(codes[v, j]) * np.int32(q[j])
    return acc


@njit(nogil=True, cache=True, boundscheck=False)
def byte_query(p, q):
    """Write p (d,) float32 as ``scale * q``, q (d,) int8 in -127..127, each entry
    within scale / 2 (up to float32 rounding of p / scale). Returns scale (1 for
    a zero row)."""
    top = np.float32(0.0)
    for j in range(p.shape[0]):
        top = max(top, abs(p[j]))
    scale = top / np.float32(127.0) if top > 0 else np.float32(1.0)
    inv = np.float32(1.0) / scale
    for j in range(p.shape[0]):
        q[j] = np.int8(min(max(np.floor(p[j] * inv + np.float32(0.5)), np.float32(-127.0)), np.float32(127.0)))
    return scale


def held_query(p, q8, codes):
    """The float row p (d,) held to score rows of ``codes``: on VNNI hosts, for
    uint8 codes, (address of q8, scale, d) with q8 (d,) int8 written by
    ``byte_query``; otherwise p itself. Kernels only (see ``row_score``)."""
    raise NotImplementedError("held_query is compiled into the kernels")


@overload(held_query, inline="always", jit_options={"fastmath": True, "boundscheck": False})
def _held_query(p, q8, codes):
    if HAS_VNNI and codes.dtype == types.uint8:
        def in_bytes(p, q8, codes):
            scale = byte_query(p, q8)
            return (address(q8), scale, p.shape[0])
        return in_bytes

    def as_is(p, q8, codes):
        return p
    return as_is


def row_score(held, codes, v):
    """<p, codes[v]> as float32 for a row p held by ``held_query``. Kernels only."""
    raise NotImplementedError("row_score is compiled into the kernels")


@overload(row_score, inline="always", jit_options={"fastmath": True, "boundscheck": False})
def _row_score(held, codes, v):
    if isinstance(held, types.BaseTuple):
        def in_bytes(held, codes, v):
            # scalars, not the q8 array: an array unpacked here is reference-counted per row
            return held[1] * np.float32(vnni_dot(address(codes) + v * codes.strides[0], held[0], held[2]))
        return in_bytes

    def in_float(held, codes, v):
        acc = np.float32(0.0)
        for j in range(held.shape[0]):
            acc += held[j] * np.float32(codes[v, j])
        return acc
    return in_float
