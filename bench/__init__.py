"""Benchmarks: speed and bounded memory as ratios against the physical limit and common tools."""
