"""Benchmarks behind `phalanx bench`: synthetic workloads, figures as a table and JSON."""
