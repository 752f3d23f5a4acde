"""Deciding whether a value can be encoded by msgspec or needs dill."""

from __future__ import annotations

from typing import Any

import msgspec

_NATIVE_SCALARS = (str, int, float, bool, bytes, type(None))


class SerializationDetector:
    """Tells whether msgspec can encode a value as it is (fast path first)."""

    _encoder = msgspec.msgpack.Encoder()

    def is_msgspec_compatible(self, value: Any) -> bool:
        """True when msgspec (msgpack) encodes ``value`` without help."""
        if isinstance(value, _NATIVE_SCALARS):
            return True
        try:
            self._encoder.encode(value)
        except (TypeError, ValueError, OverflowError):
            return False
        return True

    def format_for(self, value: Any) -> str:
        """``"msgspec"`` or ``"dill"``: the format :class:`SerializationManager` would pick."""
        return "msgspec" if self.is_msgspec_compatible(value) else "dill"
