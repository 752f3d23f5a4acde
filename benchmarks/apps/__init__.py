"""Importable apps (task definitions) that the benchmark's worker processes load."""
