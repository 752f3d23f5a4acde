"""``omniq migrations show|apply``: the generic command over a backend's migration hook.

A backend takes part by giving its components ``migration_status()`` and
``apply_migrations()`` (see :class:`omniq.cli_migrations.Migrating`); the PostgreSQL
backend's real use is tested in tests/backends/test_postgres_backend.py. Here: a
component with the hook (no server), and the memory backend, which has none.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from omniq import cli, cli_engine
from omniq.cli_migrations import Migrating


class FakeStore:
    """A component whose store knows three migrations and has the first one."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.applied = {1}
        self.apply_calls = 0

    async def migration_status(self) -> list[tuple[int, str, bool]]:
        return [(v, f"step {v}", v in self.applied) for v in (1, 2, 3)]

    async def apply_migrations(self) -> list[int]:
        self.apply_calls += 1
        new = sorted({1, 2, 3} - self.applied)
        self.applied |= set(new)
        return new


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    """An app whose four components are two stores: one shared by three, and events."""
    shared = FakeStore("fake://db?schema=app")
    events = FakeStore("fake://events")
    app = SimpleNamespace(
        task_queue=shared, result_storage=shared, schedule_storage=shared, event_storage=events
    )
    monkeypatch.setattr(cli_engine, "load_app", lambda spec: app)
    return shared


def test_hook_protocol_is_duck_typed(store: FakeStore) -> None:
    assert isinstance(store, Migrating), "a component with both methods takes part"
    assert not isinstance(object(), Migrating)


def test_show_lists_each_store_once_and_changes_nothing(
    store: FakeStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["migrations", "show", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    urls = [s["url"] for s in out["stores"]]
    assert urls == ["fake://db?schema=app", "fake://events"], f"one entry per store: {urls}"
    states = [(m["version"], m["applied"]) for m in out["stores"][0]["migrations"]]
    assert states == [(1, True), (2, False), (3, False)]
    assert out["stores"][0]["applied_now"] == []
    assert store.apply_calls == 0, "show must not apply anything"


def test_apply_applies_once_per_store_then_reports_up_to_date(
    store: FakeStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["migrations", "apply"]) == 0
    text = capsys.readouterr().out
    assert "applied 2, 3" in text, text
    assert "applied now" in text
    assert store.apply_calls == 1, "a store shared by three components is migrated once"
    assert cli.main(["migrations", "apply", "--json"]) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert out["stores"][0]["applied_now"] == []
    assert all(m["applied"] for m in out["stores"][0]["migrations"])


def test_backend_without_migrations_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["migrations", "show", "--url", "memory://cli-migrations"]) == 0
    out = capsys.readouterr().out
    assert "AsyncMemoryQueue" in out and "no schema migrations" in out, out
    # asking to apply what does not exist is an error
    assert cli.main(["migrations", "apply", "--url", "memory://cli-migrations"]) == 2
    capsys.readouterr()
    assert cli.main(["migrations", "show", "--url", "memory://x", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stores"] == [] and "no schema migrations" in out["message"], out


def test_unknown_scheme_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["migrations", "show", "--url", "nosuch://x"]) == 2
    assert "nosuch" in capsys.readouterr().err
