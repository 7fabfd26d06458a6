"""Keep BLAS to the calling thread: import before numpy.

A server runs many requests at once, and BLAS threads inside each request
fight them for the cores (a 16-query search batch cost 2.5x more per query
with OpenBLAS's default threads on 2 cores); a benchmark that promises one
search thread must not start more (a single query's centroid product ran
5-10x slower with them). The variables only take effect before numpy loads
OpenBLAS. Set them yourself to override.
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
