"""Cache-line prefetch hints for numba kernels (numba has none of its own).

The walks that read rows at random (graph search, originals straight from the
data file) issue a hint for every line a row spans before they touch any of
it, so the misses of many rows overlap instead of queueing.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def _codegen(context, builder, signature, args):
    aryty = signature.args[0]
    ary = context.make_array(aryty)(context, builder, args[0])
    idx = [context.cast(builder, x, t, types.intp) for x, t in zip(args[1:], signature.args[1:])]
    ptr = cgutils.get_item_pointer(context, builder, aryty, ary, idx, wraparound=False)
    i8p = ir.IntType(8).as_pointer()
    i32 = ir.IntType(32)
    # the typed-pointer name: older LLVMs need it, newer ones remangle it to "p0"
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                        "llvm.prefetch.p0i8")
    # read, high locality, data cache
    builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
    return context.get_dummy_value()


@intrinsic
def prefetch(typingctx, a, i):
    """Hint the cache line holding a[i] (a 1-d array) into L1 (``llvm.prefetch``)."""
    return types.void(a, i), _codegen


@intrinsic
def prefetch2(typingctx, a, i, j):
    """Hint the cache line holding a[i, j] (a 2-d array) into L1."""
    return types.void(a, i, j), _codegen
