"""msgspec (MessagePack): the primary, fast format."""

from __future__ import annotations

from typing import Any

import msgspec

from omniq.errors import SerializationError


class MsgspecSerializer:
    """Plain msgpack encoding of msgspec-compatible values."""

    name = "msgspec"

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder()

    def dumps(self, value: Any) -> bytes:
        """Encode ``value`` as msgpack."""
        try:
            return self._encoder.encode(value)
        except (TypeError, ValueError, OverflowError) as e:
            raise SerializationError(
                f"msgspec cannot encode {type(value).__qualname__}: {e}"
            ) from e

    def loads(self, data: bytes, type: Any = Any) -> Any:
        """Decode msgpack, optionally into ``type``."""
        try:
            if type is Any:
                return self._decoder.decode(data)
            return msgspec.msgpack.decode(data, type=type)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise SerializationError(f"cannot decode msgpack payload: {e}") from e
