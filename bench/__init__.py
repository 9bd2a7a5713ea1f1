"""Benchmarks of the running server (not part of the test suite): see bench/README.md."""
