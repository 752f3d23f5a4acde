"""OmniQ benchmarks: OmniQ against peer libraries and raw client loops (not tests).

Run ``uv run --group bench python -m benchmarks run --backend redis`` (see README.md).
"""
