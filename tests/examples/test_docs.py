"""The documentation's generated page and its first snippets stay true.

``docs/cli-reference.md`` must equal what ``docs/gen_cli.py`` renders from the parser,
and the first code block of the getting-started page and of the home page must run.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_cli_reference_is_generated_from_the_parser() -> None:
    spec = importlib.util.spec_from_file_location("gen_cli", DOCS / "gen_cli.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    expected = gen.render()
    assert (DOCS / "cli-reference.md").read_text(encoding="utf-8") == expected, (
        "docs/cli-reference.md is out of date: run `uv run python docs/gen_cli.py`"
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
