"""Benchmarks for Quiver: datasets, recall measurement and yardstick systems."""
