"""Benchmarks for Quiver: datasets, recall measurement and yardstick systems."""

import quiver.blas_threads  # noqa: F401 - one search thread means one: before numpy loads OpenBLAS
