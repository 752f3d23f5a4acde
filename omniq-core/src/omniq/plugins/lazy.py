"""Lazy exports for a backend package: names resolve on first use, so the plugin entry
point (which imports the package) loads no driver."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(
    package: str, where: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module ``__getattr__`` and ``__dir__`` for ``package``; ``where`` maps each
    submodule (relative, e.g. ``"_queue"``) to the names it defines::

        __getattr__, __dir__ = lazy_exports(__name__, {"_queue": ["AsyncAcmeQueue"]})
    """
    home = {name: module for module, names in where.items() for name in names}
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        module = home.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*home, *(k for k in namespace if not k.startswith("_"))})

    return __getattr__, __dir__
