"""omniq-acme: an example third-party OmniQ backend (an alias of the memory backend)."""

from omniq_acme.storage import (
    AcmeEventStorage,
    AcmeQueue,
    AcmeResultStorage,
    AcmeScheduleStorage,
    AsyncAcmeEventStorage,
    AsyncAcmeQueue,
    AsyncAcmeResultStorage,
    AsyncAcmeScheduleStorage,
)

__all__ = [
    "AcmeEventStorage",
    "AcmeQueue",
    "AcmeResultStorage",
    "AcmeScheduleStorage",
    "AsyncAcmeEventStorage",
    "AsyncAcmeQueue",
    "AsyncAcmeResultStorage",
    "AsyncAcmeScheduleStorage",
]
