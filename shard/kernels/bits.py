"""Bit-level helpers for numba kernels.

Numba does not compile ``np.bitwise_count``, so popcount is LLVM's ``ctpop``
intrinsic, here on vectors of 8 words: it lowers to ``vpopcntq`` on CPUs with
AVX-512 VPOPCNTDQ (and to a byte-table sequence elsewhere). They are written
as LLVM IR so that the loop's shape is ours, not the auto-vectoriser's: 8 codes
in one vector register, every query plane and word in turn, the sums kept in
registers (a numba loop over the codes kept them in arrays, a load and a store
per code and word), and a block of scattered codes gathered into one register a
row rather than copied word by word into a buffer that vector loads then read
back (see ``gather_columns``).
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def plane_sums(typingctx, pc, stride, bstride, W, nblk, pq, qbits, pcnt, pacc):
    """Bit sums of ``nblk`` blocks of 8 codes of one bit plane, 8 codes a vector.

    Word w (0..W-1) of code i of block j is the uint64 at address
    ``pc + j * bstride + w * stride + 8 * i`` (the blocked code array: for each 8
    slots, a row of 8 words per w); the query's bit plane b (0..qbits-1) is
    the W uint64 at ``pq + 8 * W * b``. Writes, as int32 at ``pcnt`` and ``pacc``
    (8 * nblk each):

        cnt[i] = sum_w popcount(x_w)
        acc[i] = sum_b 2^b sum_w popcount(x_w & q_bw)

    For each block, each (b, w) is one load, one AND with the broadcast query
    word, one ``vpopcntq`` over the 8 codes and one add, all in registers.
    Integers in (addresses and counts), nothing out: no array per call.
    """
    sig = types.void(types.intp, types.intp, types.intp, types.intp, types.intp, types.intp, types.intp,
                     types.intp, types.intp)

    def codegen(context, builder, signature, args):
        pc, stride, bstride, W, nblk, pq, qbits, pcnt, pacc = args
        i32 = ir.IntType(32)
        i64 = ir.IntType(64)
        v8 = ir.VectorType(i64, 8)
        v8i32 = ir.VectorType(i32, 8)
        ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v8]), "llvm.ctpop.v8i64")
        zero = ir.Constant(v8, None)
        splat0 = ir.Constant(ir.VectorType(i32, 8), [0] * 8)
        cnt = cgutils.alloca_once_value(builder, zero)
        acc = cgutils.alloca_once_value(builder, zero)
        part = cgutils.alloca_once_value(builder, zero)

        def const(v):
            return ir.Constant(i64, v)

        def splat(x):
            return builder.shuffle_vector(builder.insert_element(ir.Constant(v8, ir.Undefined), x, const(0)),
                                          ir.Constant(v8, ir.Undefined), splat0)

        def word(block, w):
            addr = builder.add(block, builder.mul(w, stride))
            return builder.load(builder.inttoptr(addr, v8.as_pointer()), align=8)

        with cgutils.for_range(builder, nblk) as blk:
            block = builder.add(pc, builder.mul(blk.index, bstride))
            builder.store(zero, cnt)
            builder.store(zero, acc)
            with cgutils.for_range(builder, W) as w:
                builder.store(builder.add(builder.load(cnt), builder.call(ctpop, [word(block, w.index)])), cnt)
            with cgutils.for_range(builder, qbits) as b:
                builder.store(zero, part)
                row = builder.add(pq, builder.mul(b.index, builder.mul(W, const(8))))
                with cgutils.for_range(builder, W) as w:
                    qw = builder.load(builder.inttoptr(builder.add(row, builder.mul(w.index, const(8))),
                                                       i64.as_pointer()))
                    hit = builder.and_(word(block, w.index), splat(qw))
                    builder.store(builder.add(builder.load(part), builder.call(ctpop, [hit])), part)
                builder.store(builder.add(builder.load(acc), builder.shl(builder.load(part), splat(b.index))), acc)
            out = builder.mul(blk.index, const(32))
            for dst, src in ((pcnt, cnt), (pacc, acc)):
                ptr = builder.inttoptr(builder.add(dst, out), v8i32.as_pointer())
                builder.store(builder.trunc(builder.load(src), v8i32), ptr, align=4)

    return sig, codegen


@intrinsic
def gather_columns(typingctx, pc, stride, bstride, rows, pslots, pbuf):
    """Copy 8 slots' codes from a blocked code array into a (rows, 8) uint64 buffer.

    Word r of slot s is the uint64 at ``pc + (s >> 3) * bstride + r * stride +
    8 * (s & 7)`` (see ``plane_sums``); the slots are the 8 int64 at ``pslots``.
    Each buffer row is written as one 64-byte vector, so ``plane_sums`` reading
    it back (one vector load a row) takes the stored value straight from the
    store buffer: eight scalar stores read back as one vector would stall each
    load on a failed store forwarding (copied that way, docs384's leftover
    codes, ~4 in 100, took ~4.7 of the scan's ~12 ns a code).
    """
    sig = types.void(types.intp, types.intp, types.intp, types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        pc, stride, bstride, rows, pslots, pbuf = args
        i64 = ir.IntType(64)
        v8 = ir.VectorType(i64, 8)
        cols = []
        for i in range(8):
            s = builder.load(builder.inttoptr(builder.add(pslots, ir.Constant(i64, 8 * i)), i64.as_pointer()))
            block = builder.mul(builder.ashr(s, ir.Constant(i64, 3)), bstride)
            cols.append(builder.add(block, builder.mul(builder.and_(s, ir.Constant(i64, 7)), ir.Constant(i64, 8))))
        with cgutils.for_range(builder, rows) as r:
            row = builder.add(pc, builder.mul(r.index, stride))
            vec = ir.Constant(v8, ir.Undefined)
            for i, c in enumerate(cols):
                x = builder.load(builder.inttoptr(builder.add(row, c), i64.as_pointer()))
                vec = builder.insert_element(vec, x, ir.Constant(i64, i))
            dst = builder.add(pbuf, builder.mul(r.index, ir.Constant(i64, 64)))
            builder.store(vec, builder.inttoptr(dst, v8.as_pointer()), align=8)

    return sig, codegen
