"""The documentation's generated pages and its first snippets stay true.

``docs/cli-reference.md`` must equal what ``docs/gen_cli.py`` renders from the parser,
the option tables of ``docs/sqlite.md`` and ``docs/nats.md`` what ``docs/gen_backends.py``
renders from the backends' code, and the first code block of the getting-started page
and of the home page must run.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def load_docs_script(name: str) -> Any:
    """A script of ``docs/`` imported as a module."""
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_generated_from_the_parser() -> None:
    expected = load_docs_script("gen_cli").render()
    assert (DOCS / "cli-reference.md").read_text(encoding="utf-8") == expected, (
        "docs/cli-reference.md is out of date: run `uv run python docs/gen_cli.py`"
    )


@pytest.mark.parametrize("page", ["sqlite.md", "nats.md"])
def test_backend_options_are_generated_from_the_code(page: str) -> None:
    expected = load_docs_script("gen_backends").render(page)
    assert (DOCS / page).read_text(encoding="utf-8") == expected, (
        f"the options table of docs/{page} is out of date: run `uv run python docs/gen_backends.py`"
    )


def first_python_block(page: str) -> str:
    """The first ```python block of a docs page."""
    text = (DOCS / page).read_text(encoding="utf-8")
    found = re.search(r"```python\n(.*?)```", text, re.S)
    assert found, f"expected a python code block in docs/{page}"
    return found.group(1)


@pytest.mark.parametrize("page", ["getting-started.md", "index.md"])
def test_first_snippet_runs(page: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    env["OMNIQ_BASE_DIR"] = str(tmp_path / ".omniq")
    proc = subprocess.run(
        [sys.executable, "-c", first_python_block(page)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"docs/{page} snippet failed:\n{proc.stderr}"
    assert proc.stdout.strip() == "3", f"expected the snippet to print 3, got {proc.stdout!r}"
