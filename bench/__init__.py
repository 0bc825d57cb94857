"""Chorus benchmarks: each module prints JSON results; bench/RESULTS.md records them."""
