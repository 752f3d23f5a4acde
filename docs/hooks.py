"""MkDocs hooks: tables of the API reference, built from the classes at build time.

* ``<!-- api-pairs: omniq.core.AsyncOmniQ omniq.core.OmniQ -->`` becomes a table mapping
  each public method of the first class to its blocking twin on the second (``m`` ->
  ``m_sync``, the rule of :mod:`omniq.sync`), with the first line of its docstring. The
  same class twice lists a class's own ``m``/``m_sync`` pairs (``TaskHandle``).
* ``<!-- test-list: omniq.testing.queue_suite.TaskQueueConformance -->`` becomes the list
  of a conformance class's tests, with the capability flags that gate each one.

Both are made from the imported classes, so they cannot go stale.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from griffe_rst import rewrite

MARKER = re.compile(r"^<!-- api-pairs: (\S+) (\S+) -->$", re.M)
TESTS = re.compile(r"^<!-- test-list: (\S+) -->$", re.M)
REQUIRE = re.compile(r"require\(\w+, \"(\w+)\"\)")


def _load(path: str) -> type:
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    assert isinstance(cls, type), f"{path} is not a class"
    return cls


def _public(cls: type) -> list[str]:
    """Public attribute names of ``cls`` in definition order (the class first, then bases)."""
    names: list[str] = []
    for klass in cls.__mro__:
        if klass is object:
            continue
        names += [n for n in vars(klass) if not n.startswith("_") and n not in names]
    return names


def _summary(attr: Any) -> str:
    doc = inspect.getdoc(attr) or ""
    first = doc.split("\n\n", 1)[0].replace("\n", " ").strip()
    return rewrite(first).replace("|", "\\|")


def _kind(cls: type, name: str) -> str:
    attr = inspect.getattr_static(cls, name)
    if isinstance(attr, (classmethod, staticmethod)):
        attr = attr.__func__
    if inspect.iscoroutinefunction(attr):
        return "coroutine"
    if inspect.isfunction(attr):
        return "method"
    return "attribute"


def _documented(cls: type, name: str) -> bool:
    """True when the API page renders ``cls.name`` (written in a class, with a docstring)."""
    attr = inspect.getattr_static(cls, name, None)
    if isinstance(attr, (classmethod, staticmethod)):
        attr = attr.__func__
    # methods made at runtime (SyncWrapper's ``m_sync``) have a bare qualname; the
    # static docs do not see them
    return bool(getattr(attr, "__doc__", None)) and "." in getattr(attr, "__qualname__", "")


def _ref(cls: type, path: str, name: str, text: str) -> str:
    """``text`` as a cross-reference to ``path.name`` when that is rendered."""
    return f"[{text}][{path}.{name}]" if _documented(cls, name) else text


def pairs_table(async_path: str, sync_path: str) -> str:
    """The Markdown table of ``async_path``'s public methods and their blocking twins."""
    acls, scls = _load(async_path), _load(sync_path)
    same = acls is scls
    rows = ["| async | blocking | what it does |", "| --- | --- | --- |"]
    for name in _public(acls):
        if same and name.endswith("_sync"):
            continue
        kind = _kind(acls, name)
        twin = f"{name}_sync"
        if hasattr(scls, twin):
            blocking = _ref(scls, sync_path, twin, f"`{twin}()`")
        elif kind == "attribute":
            continue
        elif same:
            blocking = "(plain call)"
        elif name in _public(scls):
            blocking = f"`{name}()` (own)"
        else:
            blocking = f"`{name}()` (read through)"
        call = f"`await {name}()`" if kind == "coroutine" else f"`{name}()`"
        call = _ref(acls, async_path, name, call)
        rows.append(f"| {call} | {blocking} | {_summary(getattr(acls, name))} |")
    return "\n".join(rows)


def test_table(path: str) -> str:
    """The tests of a conformance class: what each checks and the flags that gate it."""
    cls = _load(path)
    rows = ["| test | checks | skipped when False |", "| --- | --- | --- |"]
    for name, fn in vars(cls).items():
        if not name.startswith("test_"):
            continue
        what = _summary(fn) or name.removeprefix("test_").replace("_", " ")
        flags = ", ".join(f"`{f}`" for f in dict.fromkeys(REQUIRE.findall(inspect.getsource(fn))))
        rows.append(f"| `{name}` | {what} | {flags} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Replace every marker of a page with its table."""
    markdown = MARKER.sub(lambda m: pairs_table(m.group(1), m.group(2)), markdown)
    return TESTS.sub(lambda m: test_table(m.group(1)), markdown)
