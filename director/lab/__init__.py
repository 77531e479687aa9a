"""Namespace labs and the stock-kernel VM runner used by tests, drills and benchmarks."""
