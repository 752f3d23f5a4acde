"""dill for objects msgspec cannot encode, always signed with HMAC-SHA256.

A payload is ``signature (32 bytes) || dill bytes``. It is verified against the current
key and any old keys (rotation) *before* anything is unpickled; a missing or bad
signature raises :class:`~omniq.errors.SignatureError` and nothing is loaded.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

import dill

from omniq.errors import SerializationError, SignatureError

SIGNATURE_SIZE = 32

_NO_KEY_HELP = (
    "set OMNIQ_SECRET_KEY (the same value on producers and workers), e.g. "
    "export OMNIQ_SECRET_KEY=$(python -c 'import secrets; print(secrets.token_hex(32))'), "
    "or pass secret_key= to OmniQ; or send only msgspec-compatible values "
    "(str, int, float, bool, bytes, None, list, dict, tuple, datetime, UUID, Decimal, "
    "msgspec.Struct, dataclass)"
)


class DillSerializer:
    """Signed dill encoding for arbitrary Python objects."""

    name = "dill"

    def __init__(
        self, secret_key: str | bytes | None, old_keys: Sequence[str | bytes] = ()
    ) -> None:
        self._key = _as_bytes(secret_key) if secret_key else None
        self._verify_keys = [k for k in [self._key, *map(_as_bytes, old_keys)] if k]

    @property
    def has_key(self) -> bool:
        """True when payloads can be signed."""
        return self._key is not None

    def dumps(self, value: Any) -> bytes:
        """Pickle ``value`` with dill and sign it."""
        if self._key is None:
            raise SerializationError(
                f"{type(value).__qualname__} cannot be encoded by msgspec and needs dill, "
                f"which OmniQ only uses with a signing key: {_NO_KEY_HELP}"
            )
        try:
            body = dill.dumps(value, recurse=True)
        except Exception as e:
            raise SerializationError(
                f"cannot serialize {type(value).__qualname__} with dill: {e}"
            ) from e
        signed: bytes = hmac.new(self._key, body, hashlib.sha256).digest() + body
        return signed

    def loads(self, payload: bytes) -> Any:
        """Verify the signature, then unpickle. Refuses before loading on any mismatch."""
        if not self._verify_keys:
            raise SignatureError(
                f"refusing to unpickle a dill payload: no signing key is configured; {_NO_KEY_HELP}"
            )
        if len(payload) <= SIGNATURE_SIZE:
            raise SignatureError("refusing to unpickle a dill payload: it carries no signature")
        sig, body = payload[:SIGNATURE_SIZE], payload[SIGNATURE_SIZE:]
        for key in self._verify_keys:
            if hmac.compare_digest(sig, hmac.new(key, body, hashlib.sha256).digest()):
                break
        else:
            raise SignatureError(
                "refusing to unpickle a dill payload: its HMAC signature does not match "
                "OMNIQ_SECRET_KEY (or any of OMNIQ_OLD_SECRET_KEYS); it was written with "
                "another key or tampered with"
            )
        try:
            return dill.loads(body)
        except Exception as e:
            raise SerializationError(f"cannot unpickle a signed dill payload: {e}") from e


def _as_bytes(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else key
