"""Task lifecycle events: batched logging and querying."""

from omniq.events.logger import AsyncEventLogger, EventLogger
from omniq.events.processor import AsyncEventProcessor, EventProcessor

__all__ = ["AsyncEventLogger", "AsyncEventProcessor", "EventLogger", "EventProcessor"]
