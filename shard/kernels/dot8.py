"""uint8 code rows times a query held in two signed bytes, with AVX-512 VNNI.

A float query row p (d,) is held as ``p ~ scale * (128 * hi + lo)``, hi in
-127..127 and lo in 0..127 (``split_query``: 15 bits, each entry within half a
step, up to float32 rounding), and a code row c (d,) uint8 scores

    <p, c> ~ scale * (128 * sum_j c_j hi_j + sum_j c_j lo_j)

in exact int32 sums (each at most d * 255 * 127: no overflow below d = 66,000).
Each 64 bytes of a row take two ``vpdpbusd`` (u8 x s8 products summed in fours
into 16 int32 lanes) where the float path widens every byte to float and
multiplies. The graph walk over int8 codes waits on its arithmetic as well as on
memory (docs384, beam 96: doubling the float dot's work made the walk 1.26x
slower), and scoring this way made it 1.04-1.12x faster; so it does on CPUs that
have VNNI (``HAS_VNNI``). ``row_sums`` is the plain loop giving the same sums,
the reference the tests hold the intrinsic to.
"""

import numpy as np
from llvmlite import binding as _llvm
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

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
def vnni_sums(typingctx, pc, ph, pl, d):
    """(sum of c * h, sum of c * l) as int32 over d bytes from the addresses pc
    (unsigned bytes), ph and pl (signed bytes): ``llvm.x86.avx512.vpdpbusd.512``
    a 64 bytes, then a plain loop over the rest. Only for hosts with ``HAS_VNNI``.
    Integers in, integers out: no array, so no reference counting per call."""
    sig = types.UniTuple(types.int32, 2)(types.intp, types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        i8 = ir.IntType(8)
        i32 = ir.IntType(32)
        v16 = ir.VectorType(i32, 16)
        pc, ph, pl = (builder.inttoptr(a, i8.as_pointer()) for a in args[:3])
        d = args[3]
        n64 = builder.sdiv(d, ir.Constant(d.type, 64))
        dp = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16, [v16, v16, v16]),
                                            "llvm.x86.avx512.vpdpbusd.512")
        acc_h = cgutils.alloca_once_value(builder, ir.Constant(v16, None))
        acc_l = cgutils.alloca_once_value(builder, ir.Constant(v16, None))
        with cgutils.for_range(builder, n64) as loop:
            off = builder.mul(loop.index, ir.Constant(loop.index.type, 64))

            def block(p):
                return builder.load(builder.bitcast(builder.gep(p, [off]), v16.as_pointer()), align=1)

            c = block(pc)
            builder.store(builder.call(dp, [builder.load(acc_h), c, block(ph)]), acc_h)
            builder.store(builder.call(dp, [builder.load(acc_l), c, block(pl)]), acc_l)
        red = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, [v16]),
                                             "llvm.vector.reduce.add.v16i32")
        sum_h = cgutils.alloca_once_value(builder, builder.call(red, [builder.load(acc_h)]))
        sum_l = cgutils.alloca_once_value(builder, builder.call(red, [builder.load(acc_l)]))
        start = builder.mul(n64, ir.Constant(d.type, 64))
        with cgutils.for_range_slice(builder, start, d, ir.Constant(d.type, 1)) as (j, _):
            c = builder.zext(builder.load(builder.gep(pc, [j])), i32)
            for acc, p in ((sum_h, ph), (sum_l, pl)):
                term = builder.mul(c, builder.sext(builder.load(builder.gep(p, [j])), i32))
                builder.store(builder.add(builder.load(acc), term), acc)
        return context.make_tuple(builder, signature.return_type, [builder.load(sum_h), builder.load(sum_l)])

    return sig, codegen


@njit(nogil=True, cache=True, boundscheck=False)
def row_sums(codes, v, hi, lo, j0):
    """(sum_j codes[v, j] * hi[j], sum_j codes[v, j] * lo[j]) over j >= j0, by a plain loop."""
    a = np.int32(0)
    b = np.int32(0)
    for j in range(j0, hi.shape[0]):
        c = np.int32(codes[v, j])
        a += c * np.int32(hi[j])
        b += c * np.int32(lo[j])
    return a, b


@njit(nogil=True, cache=True, boundscheck=False)
def split_query(p, hi, lo):
    """Write p (d,) float32 as ``scale * (128 * hi + lo)``: hi (d,) int8 in
    -127..127, lo (d,) int8 in 0..127, each entry within scale / 2 (up to float32
    rounding of p / scale). Returns scale (1 for a zero row)."""
    top = np.float32(0.0)
    for j in range(p.shape[0]):
        top = max(top, abs(p[j]))
    scale = top / np.float32(16256.0) if top > 0 else np.float32(1.0)  # 127 * 128
    inv = np.float32(1.0) / scale
    for j in range(p.shape[0]):
        q = np.int32(np.floor(p[j] * inv + np.float32(0.5)))
        h = q >> 7  # floor division by 128, so lo = q - 128 h is 0..127
        hi[j] = np.int8(h)
        lo[j] = np.int8(q - (h << 7))
    return scale
