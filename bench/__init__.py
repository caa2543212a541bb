"""Benchmarks (``make bench``): figures printed as Markdown, not tests."""
