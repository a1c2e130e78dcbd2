"""Benchmarks that print Accord next to a baseline measured in the same run."""
