"""Benchmarks that print figures (JSON lines on stdout, progress on stderr). Never timed asserts."""
