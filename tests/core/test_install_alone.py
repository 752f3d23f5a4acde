"""Installed alone: with one backend installed besides memory and no settings, OmniQ uses
it (and ``config show`` says so); otherwise one message lists what is installed and the
setting that chooses. Hints name only packages that exist, never the name typed.

"Installed" is simulated by filtering the discovered ``omniq.plugins`` entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import pytest

from omniq import AsyncOmniQ, cli
from omniq.config import load_config
from omniq.errors import BackendNotFoundError
from omniq.plugins import manager, reset_plugin_manager
from omniq.plugins.resolution import KNOWN_PACKAGES, create_component

REAL = list(entry_points(group=manager.ENTRY_POINT_GROUP))


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """``installed("nats")``: only these backend distributions are discovered."""
    for name in list(os.environ):
        if name.startswith("OMNIQ_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")

    def install(*names: str) -> None:
        missing = set(names) - {ep.name for ep in REAL}
        if missing:
            pytest.skip(f"backends not installed here: {missing}")
        chosen = [ep for ep in REAL if ep.name in names]

        def fake(**kwargs: Any) -> list[EntryPoint]:
            return chosen if kwargs.get("group") == manager.ENTRY_POINT_GROUP else []

        monkeypatch.setattr(manager, "entry_points", fake)
        reset_plugin_manager()

    yield install
    reset_plugin_manager()


@pytest.mark.parametrize("backend", ["nats", "redis", "postgres"])
def test_the_only_backend_installed_is_the_default(
    installed: Callable[..., None], backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    installed(backend)
    assert load_config().task_queue.type == backend
    oq = AsyncOmniQ()  # builds the components (no connection yet)
    assert backend.lower() in type(oq.task_queue).__module__.lower()
    assert cli.main(["config", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["task_queue"]["type"] == backend, "config show shows what is in effect"


def test_sqlite_stays_the_default_next_to_others(installed: Callable[..., None]) -> None:
    installed("sqlite", "nats", "redis")
    assert load_config().task_queue.type == "sqlite"


def test_a_setting_still_wins(
    installed: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    installed("nats")
    monkeypatch.setenv("OMNIQ_TASK_QUEUE_TYPE", "memory")
    assert load_config().task_queue.type == "memory"


def test_several_installed_is_one_message_naming_them(installed: Callable[..., None]) -> None:
    installed("nats", "redis")
    with pytest.raises(BackendNotFoundError) as e:
        AsyncOmniQ()
    message = str(e.value)
    assert "several are installed (nats, redis)" in message
    assert "OMNIQ_TASK_QUEUE_TYPE" in message
    assert "Did you mean" not in message


def test_none_installed_says_what_to_install(installed: Callable[..., None]) -> None:
    installed()
    with pytest.raises(BackendNotFoundError) as e:
        AsyncOmniQ()
    assert "no storage backend is installed besides memory" in str(e.value)
    assert "pip install omniq-backend-sqlite" in str(e.value)


def test_a_hint_never_suggests_back_the_name_typed(installed: Callable[..., None]) -> None:
    installed("nats")
    with pytest.raises(BackendNotFoundError) as e:
        create_component("task_queue", type="redis")
    message = str(e.value)
    assert "Did you mean 'redis'" not in message
    assert "pip install omniq-backend-redis" in message


def test_a_misspelt_name_gets_the_real_one(installed: Callable[..., None]) -> None:
    installed("nats")
    with pytest.raises(BackendNotFoundError) as e:
        create_component("task_queue", type="sqlit")
    assert "Did you mean 'sqlite'?" in str(e.value)
    assert "pip install omniq-backend-sqlite" in str(e.value)


def test_an_unknown_name_names_no_package(installed: Callable[..., None]) -> None:
    installed("nats")
    with pytest.raises(BackendNotFoundError) as e:
        create_component("task_queue", type="kafka")
    message = str(e.value)
    assert "pip install" not in message, "no package named omniq-backend-kafka exists"


def test_known_packages_are_real_distributions() -> None:
    assert set(KNOWN_PACKAGES.values()) == {
        "omniq-backend-sqlite",
        "omniq-backend-nats",
        "omniq-backend-redis",
        "omniq-backend-postgres",
        "omniq-backend-file",
    }


# --- package metadata ---------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
DISTRIBUTIONS = sorted(
    p.parent for p in REPO.glob("omniq-*/pyproject.toml") if (p.parent / "src").is_dir()
)


@pytest.mark.parametrize("root", DISTRIBUTIONS, ids=lambda p: p.name)
def test_each_distribution_has_the_metadata_of_a_real_package(root: Path) -> None:
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project.get("readme") == "README.md" and (root / "README.md").is_file()
    assert project.get("license") == "MIT"
    assert project.get("license-files") == ["LICENSE"] and (root / "LICENSE").is_file()
    assert "MIT License" in (root / "LICENSE").read_text()
    assert {"Homepage", "Repository", "Issues"} <= set(project.get("urls", {}))
    assert any(
        c.startswith("Programming Language :: Python :: 3.11") for c in project["classifiers"]
    )
    if project["name"] == "omniq-core":
        assert project["optional-dependencies"]["testing"] == ["pytest>=8"]
    else:
        (core,) = [d for d in project["dependencies"] if d.startswith("omniq-core")]
        assert ">=" in core and "<" in core, f"{project['name']}: omniq-core unbounded: {core}"


def test_the_conformance_suite_says_what_to_install_without_pytest() -> None:
    code = "import sys; sys.modules['pytest'] = None; import omniq.testing"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "pip install 'omniq-core[testing]'" in done.stderr
