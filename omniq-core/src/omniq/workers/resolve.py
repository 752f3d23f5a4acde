"""The trust boundary: which function a worker runs for a task record (DESIGN §13).

A task record is data, never code. A worker runs only functions registered as tasks on
its app (``@oq.task``); callbacks are tasks too. A name that is not registered is
imported by ``module:qualname`` only when its module is under an entry of the
``task_import_allowlist`` setting (empty by default). Anything else is refused with
:class:`UnknownTaskError` *before* any import, so a hostile record (``"os:system"``,
``"builtins:exec"``) can neither run nor trigger an import.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from omniq.errors import UnknownTaskError

__all__ = ["allowed_by", "resolve_task", "unknown_task_message"]


def allowed_by(module_name: str, allowlist: Iterable[str]) -> bool:
    """True when ``module_name`` is one of the allow-listed modules or inside one."""
    for prefix in allowlist:
        prefix = prefix.strip().rstrip(".")
        if prefix and (module_name == prefix or module_name.startswith(prefix + ".")):
            return True
    return False


def unknown_task_message(name: str) -> str:
    """Why a task name is refused, and how to fix it."""
    return (
        f"task {name!r} is not registered on this worker's app, so it was not run (and "
        "nothing was imported). Register it with @oq.task (name=...) in the module the "
        "worker loads with --app MODULE:ATTR; to run unregistered functions of a module "
        "you trust, list that module in task_import_allowlist (OMNIQ_TASK_IMPORT_ALLOWLIST)"
    )


def resolve_task(
    name: str, registry: Mapping[str, Any], allowlist: Iterable[str]
) -> Callable[..., Any]:
    """The function to run for the task name ``name``.

    ``registry`` maps registered names to task functions (objects with ``.fn``). Raises
    :class:`UnknownTaskError` for a name that is neither registered nor allow-listed.
    """
    tf = registry.get(name)
    if tf is not None:
        return tf.fn  # type: ignore[no-any-return]
    module_name, sep, qualname = name.partition(":")
    if not sep or not qualname or not allowed_by(module_name, allowlist):
        raise UnknownTaskError(unknown_task_message(name))
    try:
        obj: Any = sys.modules.get(module_name) or importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise UnknownTaskError(
            f"task {name!r} (allow-listed by task_import_allowlist) cannot be imported: {e}"
        ) from e
    fn = getattr(obj, "fn", obj)  # a TaskFunction wraps the function
    if not callable(fn):
        raise UnknownTaskError(f"task {name!r} names {type(fn).__name__}, not a function")
    return fn  # type: ignore[no-any-return]
