"""Showing stored values without running them.

Arguments and results are shown as the ``repr`` of what msgspec decoded. A dill payload
is never unpickled by the dashboard's own process (``omniq dashboard``): it installs
:class:`SafeViewManager`, which decodes every dill extension to a :class:`DillPayload`
placeholder naming the classes the pickle refers to (read with :mod:`pickletools`, which
only parses opcodes), and writes the untouched bytes back if a task is re-queued.
"""

from __future__ import annotations

import os
import pickletools
from typing import Any

import msgspec

from omniq.serialization.dill_serializer import SIGNATURE_SIZE
from omniq.serialization.manager import (
    DILL_EXT_CODE,
    SerializationManager,
    plugin_serializers,
)

#: Longest repr shown in a page before it is cut.
MAX_REPR = 4000


class DillPayload:
    """A signed dill payload kept as bytes; its repr names what it refers to."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    @property
    def type_name(self) -> str:
        """The first class or function the pickle names (``?`` when unreadable)."""
        names = pickle_globals(self.raw[SIGNATURE_SIZE:])
        return names[0] if names else "?"

    def __repr__(self) -> str:
        return f"<dill payload: {self.type_name}, {len(self.raw)} bytes, not unpickled>"


_STRINGS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"})
_LOAD_TYPE = "dill._dill._load_type"
_CREATE_TYPE = "dill._dill._create_type"


def pickle_globals(body: bytes, limit: int = 8) -> list[str]:
    """What a pickle refers to, read from its opcodes without unpickling it: the
    ``module.name`` of each global it loads (dill's own helpers left out), and for a class
    that dill pickled by value, its name."""
    found: list[str] = []
    pushed: list[list[Any]] = []  # [kind, value, consumed]: strings and globals pushed
    memo: dict[int, list[Any]] = {}
    by_value: list[list[Any]] = []  # strings after dill's _create_type: class names
    try:
        for op, arg, _pos in pickletools.genops(body):
            name = op.name
            if name == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else ["other", None, False]
                continue
            if name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(str(arg))] = pushed[-1] if pushed else ["other", None, False]
                continue
            if name in ("FRAME", "PROTO", "STOP"):
                continue
            if name in ("BINGET", "LONG_BINGET", "GET"):
                item = memo.get(int(str(arg)), ["other", None, False])
            elif name in _STRINGS:
                item = ["str", arg, False]
                after = pushed[-1] if pushed else None
                if _CREATE_TYPE in found and not (after and after[1] == _LOAD_TYPE):
                    by_value.append(item)
            elif name == "STACK_GLOBAL" and len(pushed) >= 2:
                module, qual = pushed[-2], pushed[-1]
                module[2] = qual[2] = True  # consumed: not a class name
                item = ["global", f"{module[1]}.{qual[1]}", False]
                found.append(item[1])
            elif name == "GLOBAL" and isinstance(arg, str):
                item = ["global", arg.replace(" ", "."), False]
                found.append(item[1])
            else:
                item = ["other", None, False]
            pushed.append(item)
            if len(found) >= limit:
                break
    except Exception:  # a truncated or odd pickle: show what was read
        pass
    classes = [f"{s[1]} (class pickled by value)" for s in by_value if not s[2]][:1]
    useful = [n for n in found if not n.startswith(("dill.", "builtins.", "copyreg."))]
    if not classes and not useful and "dill._dill._create_function" in found:
        return ["function (pickled by value)"]
    return classes + useful or found


class SafeViewManager(SerializationManager):
    """A serialization manager that never unpickles: dill extensions decode to
    :class:`DillPayload` and encode back to the same bytes."""

    def _ext_hook(self, code: int, data: memoryview) -> Any:
        if code == DILL_EXT_CODE:
            return DillPayload(bytes(data))
        return super()._ext_hook(code, data)

    def _enc_hook(self, obj: Any) -> Any:
        if isinstance(obj, DillPayload):
            return msgspec.msgpack.Ext(DILL_EXT_CODE, obj.raw)
        return super()._enc_hook(obj)


def safe_view_manager() -> SafeViewManager:
    """A :class:`SafeViewManager` with the keys of the environment (for encoding only)."""
    old = [k.strip() for k in os.environ.get("OMNIQ_OLD_SECRET_KEYS", "").split(",") if k.strip()]
    return SafeViewManager(os.environ.get("OMNIQ_SECRET_KEY") or None, old, plugin_serializers())


def show(value: Any) -> str:
    """The repr of a decoded value, cut at :data:`MAX_REPR` characters."""
    try:
        text = repr(value)
    except Exception as e:  # a hostile or broken __repr__
        text = f"<{type(value).__qualname__}: repr failed: {type(e).__name__}>"
    return text if len(text) <= MAX_REPR else text[: MAX_REPR - 1] + "…"


def show_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[str, str]]:
    """``(name, repr)`` rows: positional arguments by index, then keyword arguments."""
    rows = [(f"[{i}]", show(a)) for i, a in enumerate(args)]
    rows += [(str(k), show(v)) for k, v in kwargs.items()]
    return rows
