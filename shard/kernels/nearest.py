"""Nearest codeword of 16 subvectors at a time, written as LLVM vector IR.

Product-quantizer training and encoding spend their time finding, for every
subvector, the nearest of a subspace's 256 codewords (``pq_assign``). Here 16
points are one vector register of float32 lanes: a point's dsub coordinates
are dsub registers loaded once, and for each codeword the score
``<x, c> - |c|^2 / 2`` is dsub multiply-adds (``llvm.fmuladd``: fused where the CPU can) against the broadcast
codeword, then one compare and two selects keep the best score and its
codeword, all in registers. A numba loop over the lanes (the kernel before)
kept the scores, best and argmax in arrays, a load and a store per codeword and
lane, and was auto-vectorised at half width: 3-4x slower (see ``pq_assign``).

dsub is fixed when the IR is built (one intrinsic per subspace width, its
coordinates unrolled); ``GROUPS`` registers of 16 points share each broadcast.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

LANES = 16


def _nearest(dsub: int, groups: int):
    @intrinsic
    def nearest(typingctx, px, stride, pcb, phalf, K, pout):
        """For ``groups`` x 16 points, the index of the best codeword, as int32 at pout.

        Coordinate j of point t is the float32 at ``px + j * stride + 4 * t``;
        codeword c is the dsub float32 at ``pcb + 4 * dsub * c`` and half its
        squared norm the float32 at ``phalf + 4 * c``. The first of equal scores wins.
        """
        sig = types.void(types.intp, types.intp, types.intp, types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            px, stride, pcb, phalf, K, pout = args
            f32 = ir.FloatType()
            i32 = ir.IntType(32)
            i64 = ir.IntType(64)
            vf = ir.VectorType(f32, LANES)
            vi = ir.VectorType(i32, LANES)
            fmuladd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vf, [vf, vf, vf]),
                                                     "llvm.fmuladd.v16f32")
            zeros = ir.Constant(ir.VectorType(i32, LANES), [0] * LANES)

            def const(v):
                return ir.Constant(i64, v)

            def splat(x, vt):
                return builder.shuffle_vector(builder.insert_element(ir.Constant(vt, ir.Undefined), x, const(0)),
                                              ir.Constant(vt, ir.Undefined), zeros)

            def load(addr, t, align=4):
                return builder.load(builder.inttoptr(addr, t.as_pointer()), align=align)

            xs = [[load(builder.add(px, builder.add(builder.mul(const(j), stride), const(4 * LANES * g))), vf)
                   for j in range(dsub)] for g in range(groups)]
            best = [cgutils.alloca_once_value(builder, ir.Constant(vf, [float("-inf")] * LANES))
                    for _ in range(groups)]
            arg = [cgutils.alloca_once_value(builder, ir.Constant(vi, [0] * LANES)) for _ in range(groups)]
            with cgutils.for_range(builder, K) as c:
                row = builder.add(pcb, builder.mul(c.index, const(4 * dsub)))
                w = [splat(load(builder.add(row, const(4 * j)), f32), vf) for j in range(dsub)]
                h = splat(load(builder.add(phalf, builder.mul(c.index, const(4))), f32), vf)
                ci = splat(builder.trunc(c.index, i32), vi)
                for g in range(groups):
                    s = builder.fsub(ir.Constant(vf, [0.0] * LANES), h)
                    for j in range(dsub):
                        s = builder.call(fmuladd, [xs[g][j], w[j], s])
                    b = builder.load(best[g])
                    better = builder.fcmp_ordered(">", s, b)
                    builder.store(builder.select(better, s, b), best[g])
                    builder.store(builder.select(better, ci, builder.load(arg[g])), arg[g])
            for g in range(groups):
                builder.store(builder.load(arg[g]), builder.inttoptr(builder.add(pout, const(4 * LANES * g)),
                                                                    vi.as_pointer()), align=4)

        return sig, codegen

    return nearest


#: points a block (``pq_assign`` transposes this many at a time)
BLOCK = 64
#: 16-point registers scored together, by dsub: dsub x groups registers of coordinates
GROUPS = {1: 4, 2: 4, 4: 4, 8: 2, 16: 1}
nearest1 = _nearest(1, GROUPS[1])
nearest2 = _nearest(2, GROUPS[2])
nearest4 = _nearest(4, GROUPS[4])
nearest8 = _nearest(8, GROUPS[8])
nearest16 = _nearest(16, GROUPS[16])
