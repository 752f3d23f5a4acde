"""Arguments arrive as the task's annotations say (DESIGN §13).

A task's arguments travel as MessagePack, which has no tuple, set, date, UUID, Decimal,
Enum, Struct or dataclass: they arrive as lists, strings and dicts. Before a worker
calls a task, :func:`argument_converter` turns each argument back into the type its
parameter is annotated with (``msgspec.convert``, lax). Parameters annotated with a type
MessagePack keeps as it is (``int``, ``str``, ``Any``, ...) cost nothing, and a function
with only such parameters gets no converter at all, so the hot path stays free.

A value that does not convert is passed as it came: the conversion restores what the
wire format lost, it does not validate (the task's own code still sees what was sent).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, get_type_hints

import msgspec

__all__ = ["argument_converter", "convert_value"]

#: Types MessagePack returns unchanged: no conversion needed.
_KEPT: frozenset[Any] = frozenset(
    {Any, object, int, float, str, bool, bytes, type(None), list, dict}
)

Converter = Callable[[tuple[Any, ...], dict[str, Any]], tuple[tuple[Any, ...], dict[str, Any]]]


def convert_value(value: Any, tp: Any) -> Any:
    """``value`` as type ``tp`` when it converts; else ``value`` unchanged."""
    try:
        return msgspec.convert(value, tp, strict=False)
    except (msgspec.ValidationError, TypeError, ValueError):
        return value


@functools.lru_cache(maxsize=4096)
def argument_converter(fn: Callable[..., Any]) -> Converter | None:
    """A function restoring ``fn``'s annotated argument types, or None when none of
    its parameters needs it (or its signature cannot be read)."""
    try:
        sig = inspect.signature(fn)
        hints = get_type_hints(fn)
    except Exception:
        return None
    positional: list[Any] = []
    by_name: dict[str, Any] = {}
    var_positional: Any = None
    var_keyword: Any = None
    for p in sig.parameters.values():
        tp = hints.get(p.name)
        needed = tp if tp is not None and tp not in _KEPT else None
        if p.kind is p.VAR_POSITIONAL:
            var_positional = needed
        elif p.kind is p.VAR_KEYWORD:
            var_keyword = needed
        else:
            if p.kind is not p.KEYWORD_ONLY:
                positional.append(needed)
            if p.kind is not p.POSITIONAL_ONLY:
                by_name[p.name] = needed
    if not any(positional) and not any(by_name.values()) and not (var_positional or var_keyword):
        return None

    def convert(
        args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        out = list(args)
        for i, value in enumerate(out):
            tp = positional[i] if i < len(positional) else var_positional
            if tp is not None:
                out[i] = convert_value(value, tp)
        named = dict(kwargs)
        for key, value in named.items():
            tp = by_name.get(key, var_keyword)
            if tp is not None:
                named[key] = convert_value(value, tp)
        return tuple(out), named

    return convert
