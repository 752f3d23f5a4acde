"""Orchestration logic above the storage layer: retries, dependencies, scheduling."""

from omniq.queue.dependencies import check_dependencies
from omniq.queue.retry import backoff_delay, should_retry

__all__ = ["backoff_delay", "check_dependencies", "should_retry"]
