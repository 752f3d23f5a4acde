"""Task lifecycle events: buffered, batched logging (query them with ``oq.get_events``)."""

from omniq.events.logger import AsyncEventLogger, EventLogger

__all__ = ["AsyncEventLogger", "EventLogger"]
