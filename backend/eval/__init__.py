"""Benchmarks of the memory module on public data (``sentinel eval ...``)."""
