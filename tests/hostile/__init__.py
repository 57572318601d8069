"""Builders for the reliability tests: generated layouts, an independent liveness model, tree
snapshots, the hostile-layout corpus and the kill-point child.

Nothing here is imported by ``ocigraph`` or ``io_adapters``: it is test scaffolding only.
"""
