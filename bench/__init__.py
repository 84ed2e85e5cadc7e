"""Benchmarks: targets live here, never in timed unit tests."""
