"""Bit-level helpers for numba kernels.

Numba does not compile ``np.bitwise_count``, so popcount is LLVM's ``ctpop``
intrinsic, which lowers to the POPCNT instruction on x86-64.
"""

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


@intrinsic
def popcount64(typingctx, x):
    """Number of set bits of a uint64 (LLVM ``ctpop``)."""
    if x != types.uint64:
        return None
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


__all__ = ["popcount64", "ir"]
