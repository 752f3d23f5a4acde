"""Serialization: msgspec (msgpack) first, signed dill for what msgspec cannot encode."""

from omniq.serialization.detector import SerializationDetector
from omniq.serialization.dill_serializer import DillSerializer
from omniq.serialization.manager import (
    SerializationManager,
    Serializer,
    default_manager,
    set_default_manager,
)
from omniq.serialization.msgspec_serializer import MsgspecSerializer

__all__ = [
    "DillSerializer",
    "MsgspecSerializer",
    "SerializationDetector",
    "SerializationManager",
    "Serializer",
    "default_manager",
    "set_default_manager",
]
