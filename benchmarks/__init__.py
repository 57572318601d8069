"""Benchmarks for ocigraph: synthetic layouts, the floor script, and the suite runner.

``python -m benchmarks.run --sizes 10k,100k,1m`` -- see ``docs/performance.md``.
"""
