"""Benchmarks for Quiver: datasets, recall measurement and yardstick systems."""
import os

# One search thread means one: before numpy loads OpenBLAS, keep BLAS (the
# query-to-centroid products) from starting threads of its own, as the servers
# do (quiver/cli.py). On this 2-core machine OpenBLAS's default threads made a
# single query's centroid product 5-10x slower, not faster. Set the variables
# yourself to override.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
