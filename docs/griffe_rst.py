"""A griffe extension: OmniQ's reST docstring markup, readable in the Markdown API pages.

OmniQ's docstrings are short reST prose: Sphinx roles (``:class:`~omniq.x.Y```),
double-backtick literals and ``::`` before an indented example. mkdocstrings renders
docstrings as Markdown, so before that this extension rewrites each role into a code
span (``~a.b.C`` becomes `C`, as Sphinx shows it) and ``::`` into ``:``. Literals need
nothing: a double-backtick span is a code span in Markdown too. The docstrings in the
source stay as they are. Used by ``mkdocs.yml`` (``extensions:`` of the python handler).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|mod|func|meth|attr|data|exc|obj|const):`(~?)([^`]+)`")
_LITERAL_BLOCK = re.compile(r"(\S)::(\n\s*\n)")


def _role(match: re.Match[str]) -> str:
    short, target = match.groups()
    if short:
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def rewrite(text: str) -> str:
    """``text`` with Sphinx roles as code spans and ``::`` (literal block) as ``:``."""
    return _LITERAL_BLOCK.sub(r"\1:\2", _ROLE.sub(_role, text))


class RestToMarkdown(griffe.Extension):
    """Rewrite every docstring of a loaded package (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[int] = set()
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = rewrite(obj.docstring.value)
            stack.extend(m for m in obj.members.values() if not m.is_alias)  # type: ignore[misc]
