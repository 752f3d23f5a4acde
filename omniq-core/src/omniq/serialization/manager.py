"""SerializationManager: picks msgspec or dill per value and stores the format with the bytes.

Wire format: one header byte, then the body.

* ``0x01`` — MessagePack. Any part msgspec cannot encode (a lambda in ``kwargs``, a custom
  class in a result) is embedded as a MessagePack extension (code 1) holding a *signed*
  dill payload, so the rest of the value stays fast, readable msgpack.
* ``0x00`` — a plugin serializer: ``0x00, len(name), name, body``.

Models (Task, TaskResult, Schedule) go through :meth:`encode` / :meth:`decode`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

import msgspec

from omniq.errors import SerializationError
from omniq.models import Schedule, Task, TaskResult
from omniq.serialization.detector import SerializationDetector
from omniq.serialization.dill_serializer import DillSerializer

T = TypeVar("T")

MSGPACK_HEADER = 0x01
PLUGIN_HEADER = 0x00
DILL_EXT_CODE = 1
#: An int beyond MessagePack's 64 bits, as its decimal digits.
BIGINT_EXT_CODE = 2
#: A value written by a plugin serializer: ``len(name), name, body``.
PLUGIN_EXT_CODE = 3
#: Format names that mean the built-in MessagePack encoding.
MSGPACK_NAMES = frozenset({"msgspec", "msgpack"})


class Serializer(Protocol):
    """What a plugin serializer (``omniq_serializers`` hook) provides."""

    name: str

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class _ForceDill:
    """Marks a value that must go through dill (``Task.serializer == "dill"``)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class _ForcePlugin:
    """Marks a value that a plugin serializer encodes (``Task.serializer == name``)."""

    __slots__ = ("serializer", "value")

    def __init__(self, value: Any, serializer: Serializer) -> None:
        self.value = value
        self.serializer = serializer


class SerializationManager:
    """Encodes values and models; one instance per key configuration, safe to share."""

    def __init__(
        self,
        secret_key: str | bytes | None = None,
        old_keys: Sequence[str | bytes] = (),
        serializers: list[Serializer] | None = None,
    ) -> None:
        self.dill = DillSerializer(secret_key, old_keys)
        self.detector = SerializationDetector()
        self._plugins = {s.name: s for s in serializers or []}
        self._encoder = msgspec.msgpack.Encoder(enc_hook=self._enc_hook)
        self._any_decoder = msgspec.msgpack.Decoder(ext_hook=self._ext_hook)
        self._decoders: dict[Any, msgspec.msgpack.Decoder[Any]] = {}

    # --- msgspec hooks ---------------------------------------------------------------

    def _enc_hook(self, obj: Any) -> Any:
        if isinstance(obj, _ForcePlugin):
            name = obj.serializer.name.encode()
            body = obj.serializer.dumps(obj.value)
            return msgspec.msgpack.Ext(PLUGIN_EXT_CODE, bytes([len(name)]) + name + body)
        value = obj.value if isinstance(obj, _ForceDill) else obj
        return msgspec.msgpack.Ext(DILL_EXT_CODE, self.dill.dumps(value))

    def _ext_hook(self, code: int, data: memoryview) -> Any:
        if code == BIGINT_EXT_CODE:
            try:
                return int(bytes(data))
            except ValueError as e:
                raise SerializationError("corrupt big integer in payload") from e
        if code == PLUGIN_EXT_CODE:
            raw = bytes(data)
            name = raw[1 : 1 + raw[0]].decode(errors="replace") if raw else ""
            plugin = self._plugins.get(name)
            if plugin is None:
                raise SerializationError(
                    f"payload was written by serializer {name!r}, which is not installed "
                    f"here (installed: {', '.join(self.formats())})"
                )
            return plugin.loads(raw[1 + raw[0] :])
        if code != DILL_EXT_CODE:
            raise SerializationError(f"unknown msgpack extension code {code} in payload")
        return self.dill.loads(bytes(data))

    def _decoder(self, type: Any) -> msgspec.msgpack.Decoder[Any]:
        dec = self._decoders.get(type)
        if dec is None:
            dec = self._decoders[type] = msgspec.msgpack.Decoder(type, ext_hook=self._ext_hook)
        return dec

    # --- values ----------------------------------------------------------------------

    def dumps(self, value: Any, *, format: str | None = None) -> bytes:
        """Encode any value; ``format`` forces ``"dill"`` or a plugin serializer's name."""
        if format in (None, "msgspec", "msgpack"):
            return self.encode(value)
        if format == "dill":
            return self.encode(_ForceDill(value))
        self.check_format(format)
        plugin = self._plugins[format]
        name = plugin.name.encode()
        return bytes([PLUGIN_HEADER, len(name)]) + name + plugin.dumps(value)

    def loads(self, data: bytes) -> Any:
        """Decode bytes written by :meth:`dumps`."""
        return self.decode(data, Any)

    def formats(self) -> list[str]:
        """Names a task's ``serializer`` option accepts."""
        return sorted(["msgspec", "dill", *self._plugins])

    def check_format(self, name: str | None) -> None:
        """Raise SerializationError unless ``name`` is None or an installed format."""
        if name is None or name in MSGPACK_NAMES or name == "dill" or name in self._plugins:
            return
        raise SerializationError(
            f"unknown serializer {name!r}: installed are {', '.join(self.formats())} "
            "(a plugin serializer comes from an installed package's omniq_serializers hook)"
        )

    def format_of(self, data: bytes) -> str:
        """Name of the format ``data`` was written with."""
        if not data:
            raise SerializationError("cannot decode an empty payload")
        if data[0] == MSGPACK_HEADER:
            return "msgspec"
        if data[0] == PLUGIN_HEADER and len(data) > 1:
            return data[2 : 2 + data[1]].decode(errors="replace")
        raise SerializationError(f"unknown payload header byte 0x{data[0]:02x}")

    # --- models and typed values -----------------------------------------------------

    def encode(self, obj: Any) -> bytes:
        """Encode a model or value as header + msgpack (dill extensions where needed)."""
        if isinstance(obj, Task) and obj.serializer and obj.serializer not in MSGPACK_NAMES:
            # Wrap each argument, not the containers: a typed decoder accepts an extension
            # only where the field type is Any (the elements), never for the tuple/dict.
            wrap = self._argument_wrapper(obj.serializer)
            obj = obj.copy(
                args=tuple(wrap(a) for a in obj.args),
                kwargs={k: wrap(v) for k, v in obj.kwargs.items()},
            )
        try:
            return b"\x01" + self._encoder.encode(obj)
        except SerializationError:
            raise
        except OverflowError as e:  # an int beyond 64 bits: the rare, slower path
            try:
                return b"\x01" + self._encoder.encode(_with_big_ints(obj))
            except Exception:
                raise _encode_error(obj, e) from e
        except Exception as e:
            raise _encode_error(obj, e) from e

    def _argument_wrapper(self, name: str) -> Any:
        if name == "dill":
            return _ForceDill
        self.check_format(name)
        plugin = self._plugins[name]
        return lambda value: _ForcePlugin(value, plugin)

    def decode(self, data: bytes | memoryview, type: type[T] | Any = Any) -> T:
        """Decode bytes written by :meth:`encode` (or :meth:`dumps`) into ``type``."""
        data = bytes(data) if isinstance(data, memoryview) else data
        if not data:
            raise SerializationError("cannot decode an empty payload (corrupt or truncated record)")
        header = data[0]
        try:
            if header == MSGPACK_HEADER:
                if type is Any:
                    return self._any_decoder.decode(memoryview(data)[1:])  # type: ignore[no-any-return]
                return self._decoder(type).decode(memoryview(data)[1:])  # type: ignore[no-any-return]
            if header == PLUGIN_HEADER and len(data) > 1:
                name = data[2 : 2 + data[1]].decode()
                plugin = self._plugins.get(name)
                if plugin is None:
                    raise SerializationError(
                        f"payload was written by serializer {name!r}, which is not installed"
                    )
                value = plugin.loads(data[2 + data[1] :])
                return value if type is Any else msgspec.convert(value, type)  # type: ignore[no-any-return]
        except SerializationError:
            raise
        except RecursionError as e:
            raise SerializationError(
                "corrupt or hostile payload: nested too deeply to decode "
                f"{getattr(type, '__name__', type)}"
            ) from e
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as e:
            raise SerializationError(
                f"corrupt payload: cannot decode {getattr(type, '__name__', type)}: {e}"
            ) from e
        raise SerializationError(
            f"corrupt payload: unknown header byte 0x{header:02x} (expected 0x01 msgpack)"
        )

    def encode_raw(self, obj: Any) -> bytes:
        """Plain msgpack of ``obj`` (no header byte), extensions as in :meth:`encode`: for
        backends that store many tasks in one document. A task (without
        ``serializer="dill"``) embedded in it is exactly :meth:`encode_task`'s bytes after
        their first byte, so ``b"\\x01" + raw`` restores them (read with ``msgspec.Raw``)."""
        try:
            return self._encoder.encode(obj)
        except SerializationError:
            raise
        except OverflowError as e:
            try:
                return self._encoder.encode(_with_big_ints(obj))
            except Exception:
                raise _encode_error(obj, e) from e
        except Exception as e:
            raise _encode_error(obj, e) from e

    def encode_task(self, task: Task) -> bytes:
        """Encode a task (arguments included)."""
        return self.encode(task)

    def decode_task(self, data: bytes | memoryview) -> Task:
        """Decode a task; raises SerializationError for corrupt or unsigned payloads."""
        return self.decode(data, Task)

    def encode_result(self, result: TaskResult) -> bytes:
        """Encode a task result (its value included)."""
        return self.encode(result)

    def decode_result(self, data: bytes | memoryview) -> TaskResult:
        """Decode a task result."""
        return self.decode(data, TaskResult)

    def encode_schedule(self, schedule: Schedule) -> bytes:
        """Encode a schedule."""
        return self.encode(schedule)

    def decode_schedule(self, data: bytes | memoryview) -> Schedule:
        """Decode a schedule."""
        return self.decode(data, Schedule)


_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


def _with_big_ints(obj: Any) -> Any:
    """``obj`` with every int outside MessagePack's range as a BIGINT extension (inside
    tuples, lists, dicts, sets and the value fields of tasks and results)."""
    if isinstance(obj, Task):
        return obj.copy(args=_with_big_ints(obj.args), kwargs=_with_big_ints(obj.kwargs))
    if isinstance(obj, TaskResult):
        return msgspec.structs.replace(obj, result=_with_big_ints(obj.result))
    if type(obj) is int:
        if _INT64_MIN <= obj <= _UINT64_MAX:
            return obj
        return msgspec.msgpack.Ext(BIGINT_EXT_CODE, str(obj).encode())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_with_big_ints(v) for v in obj) if type(obj) in (list, tuple) else obj
    if isinstance(obj, (set, frozenset)):
        return [_with_big_ints(v) for v in obj]  # arrives as a list, like any set
    if isinstance(obj, dict):
        return {_with_big_ints(k): _with_big_ints(v) for k, v in obj.items()}
    return obj


def _encode_error(obj: Any, e: Exception) -> SerializationError:
    """Any failure to encode (a type msgspec refuses, a value nested too deeply, an
    exception raised by a custom ``__reduce__``) as one clear SerializationError."""
    what = type(obj).__qualname__
    if isinstance(obj, (Task, TaskResult)):
        what = f"{what} {obj.task_id if isinstance(obj, TaskResult) else obj.id}"
    if isinstance(e, RecursionError):
        return SerializationError(
            f"cannot encode {what}: the value is nested too deeply ({e}); flatten it or "
            "store it elsewhere and pass a reference"
        )
    return SerializationError(f"cannot encode {what}: {type(e).__name__}: {e}")


_default: SerializationManager | None = None
_default_key: tuple[Any, Any] | None = None
_KEY_VARS = ("OMNIQ_SECRET_KEY", "OMNIQ_OLD_SECRET_KEYS")
_KEY_VARS_BYTES = tuple(name.encode() for name in _KEY_VARS)


def _key_vars() -> tuple[Any, Any]:
    """The raw values of the key variables, compared to see whether they changed.

    ``default_manager()`` is called per task on some paths: on POSIX this reads
    ``os.environ``'s own dict (bytes keys, ~0.05 us) instead of two ``os.environ.get``
    (~2.5 us); elsewhere, or if that dict is not there, the public mapping."""
    data = getattr(os.environ, "_data", None) if os.name == "posix" else None
    if isinstance(data, dict):
        return data.get(_KEY_VARS_BYTES[0]), data.get(_KEY_VARS_BYTES[1])
    return os.environ.get(_KEY_VARS[0]), os.environ.get(_KEY_VARS[1])


def plugin_serializers() -> list[Serializer]:
    """Serializers offered by plugins through the ``omniq_serializers`` hook."""
    from omniq.plugins import get_plugin_manager

    found: list[Serializer] = get_plugin_manager().serializers()
    return found


def default_manager() -> SerializationManager:
    """The process-wide manager keyed by ``OMNIQ_SECRET_KEY`` / ``OMNIQ_OLD_SECRET_KEYS``.

    Rebuilt when those variables change, so tests and apps that set the key late work.
    """
    global _default, _default_key
    seen = _key_vars()
    if _default is None or seen != _default_key:
        secret, olds = (os.environ.get(name) for name in _KEY_VARS)
        old = [k.strip() for k in (olds or "").split(",") if k.strip()]
        _default = SerializationManager(secret or None, old, plugin_serializers())
        _default_key = seen
    return _default


def set_default_manager(manager: SerializationManager | None) -> None:
    """Replace the process-wide manager (None: rebuild from the environment)."""
    global _default, _default_key
    _default = manager
    _default_key = _key_vars() if manager else None
