"""``python -m benchmarks report --docs`` rebuilds the benchmarks page from saved runs.

The page is rendered from the committed results of 2026-12-07 (the full run plus the
Redis and PostgreSQL reruns) into a temporary directory, never over ``docs/``; it must
keep the hand-written page's structure and carry the runs' numbers.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ["2026-12-07-all.json", "2026-12-07-rerun-redis.json", "2026-12-07-rerun-pg.json"]


@pytest.fixture
def report(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``benchmarks.report`` (the repository root is not on sys.path under importlib mode)."""
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("benchmarks.report")


def headings(text: str) -> list[str]:
    return re.findall(r"^#+ .*$", text, re.M)


def test_docs_page_is_rebuilt_from_the_runs(report: Any, tmp_path: Path) -> None:
    out = report.build_docs([RESULTS / name for name in RUNS], out=tmp_path / "benchmarks.md")
    page = out.read_text(encoding="utf-8")
    current = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert headings(page) == headings(current), (
        f"expected the generated page to have the docs page's sections, got {headings(page)}"
    )
    short = {
        "SQLite (embedded) | 36,179/s | huey: 1,947/s | 51,449/s | 1.8 ms | huey: 6.0 ms",
        "NATS JetStream | 13,535/s | taskiq: 1,467/s | 11,869/s | 2.5 ms | taskiq: 10.2 ms",
        "Redis ¹ | 18,211/s | taskiq: 2,097/s | 20,673/s | 1.1 ms | huey: 0.7 ms",
        "PostgreSQL ¹ | 19,137/s | pgqueuer: 5,443/s | 42,291/s | 5.5 ms | procrastinate: 7.7 ms",
    }
    for row in short:
        assert f"| {row} |" in page, f"expected the row {row!r} in the short table"
        assert f"| {row} |" in current, f"expected docs/benchmarks.md to agree on {row!r}"
    for phrase in ("W1", "W2", "W3", "met", "missed", "end/start"):
        assert not re.search(rf"\b{phrase}\b", page), f"internal shorthand {phrase!r} on the page"
    for w in ("w1", "w2", "w3"):
        name = f"2026-12-07-all-{w}.png"
        assert f"](img/benchmarks/{name})" in page, f"expected the {w} chart on the page"
        assert (tmp_path / "img" / "benchmarks" / name).is_file(), f"expected {name} copied"


def test_a_full_run_alone_has_no_footnote(report: Any, tmp_path: Path) -> None:
    out = report.build_docs([RESULTS / RUNS[0]], out=tmp_path / "benchmarks.md")
    page = out.read_text(encoding="utf-8")
    assert "¹" not in page, "expected no footnote when every row comes from the full run"
    assert "| NATS JetStream | 13,535/s |" in page, "expected OmniQ on NATS in the short table"
    assert "| Redis" not in page, "expected no Redis row: the full run has no OmniQ on Redis"
