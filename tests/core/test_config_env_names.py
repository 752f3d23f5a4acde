"""Unknown ``OMNIQ_*`` environment variables (and the design documents' ``OMNIQ_BACKEND``
and ``NATS_SERVERS``) are reported once, with what to set instead, not silently ignored."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from omniq.config import OmniQConfig, load_config
from omniq.config import _env_names as env_names

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("OMNIQ_") or name == "NATS_SERVERS":
            monkeypatch.delenv(name)
    monkeypatch.setattr(env_names, "_reported", set())  # once per process: start afresh
    yield


def _reports(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "omniq.config"]


def test_unknown_name_is_reported_once_with_the_closest_known_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OMNIQ_MAX_WORKER", "3")
    with caplog.at_level(logging.WARNING, logger="omniq.config"):
        assert load_config().max_workers == 10  # ignored: the default stays
        load_config()
        load_config()
    assert _reports(caplog) == [
        "unknown environment variable OMNIQ_MAX_WORKER is ignored; did you mean OMNIQ_MAX_WORKERS?"
    ]
    assert caplog.records[0].levelno == logging.WARNING


def test_seed_names_say_what_to_use_instead(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OMNIQ_BACKEND", "nats")
    monkeypatch.setenv("NATS_SERVERS", "nats://a:4222,nats://b:4222")
    with caplog.at_level(logging.WARNING, logger="omniq.config"):
        config = load_config()
    assert config.task_queue is not None and config.task_queue.type == "sqlite"
    backend, servers = sorted(_reports(caplog), key=lambda m: "NATS_SERVERS" in m)
    assert "OMNIQ_BACKEND" in backend and "OMNIQ_TASK_QUEUE_TYPE=nats" in backend
    assert "the task queue is sqlite" in backend
    assert "NATS_SERVERS" in servers and "OMNIQ_TASK_QUEUE_URL=nats://host:4222," in servers


def test_nats_servers_is_not_reported_when_the_queue_is_nats(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NATS_SERVERS", "nats://a:4222")  # another program's, perhaps
    monkeypatch.setenv("OMNIQ_TASK_QUEUE_URL", "nats://a:4222")
    with caplog.at_level(logging.WARNING, logger="omniq.config"):
        load_config()
        load_config(task_queue="tls://a:4222")
    assert _reports(caplog) == []


def test_other_spellings(monkeypatch: pytest.MonkeyPatch) -> None:
    messages = dict(
        env_names.unknown_env_messages(
            {
                "OMNIQ_max_workers": "2",
                "OMNIQ_COMPLETELY_DIFFERENT": "1",
                "OMNIQ_BACKEND": "nats://user:pw@host:4222",
                "OMNIQ_MAX_WORKERS": "2",
                "PATH": "/bin",
            }
        )
    )
    assert set(messages) == {"OMNIQ_max_workers", "OMNIQ_COMPLETELY_DIFFERENT", "OMNIQ_BACKEND"}
    assert messages["OMNIQ_max_workers"].endswith("did you mean OMNIQ_MAX_WORKERS?")
    assert "no OmniQ setting has that name" in messages["OMNIQ_COMPLETELY_DIFFERENT"]
    assert "OMNIQ_TASK_QUEUE_TYPE=<type>" in messages["OMNIQ_BACKEND"]
    assert "pw" not in messages["OMNIQ_BACKEND"]  # values are not echoed


def test_only_the_environment_is_checked(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OMNIQ_MAX_WORKER", "3")
    with caplog.at_level(logging.WARNING, logger="omniq.config"):
        load_config(OmniQConfig())  # a ready config: the environment is not read
    assert _reports(caplog) == []


def test_registered_names_are_known(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from omniq.config.loader import register_env_names

    monkeypatch.setattr(env_names, "_registered", set())
    monkeypatch.setenv("OMNIQ_ACME_TOKEN", "x")
    register_env_names("OMNIQ_ACME_TOKEN")
    with caplog.at_level(logging.WARNING, logger="omniq.config"):
        load_config()
    assert _reports(caplog) == []


_READS = re.compile(
    r"""(?:environ(?:\.get)?|getenv|env\.get|setenv|delenv)\s*[(\[]\s*["'](OMNIQ_[A-Z0-9_]+)["']"""
)


def test_every_name_the_project_reads_is_known() -> None:
    """Grep the sources, tests and examples: a variable read anywhere is never reported."""
    read: dict[str, str] = {}
    for top in ("omniq-core", "omniq-backend-sqlite", "omniq-backend-nats", "tests", "examples"):
        for path in (REPO / top).rglob("*.py"):
            if path.resolve() == Path(__file__).resolve():
                continue  # its names are unknown on purpose
            for name in _READS.findall(path.read_text(encoding="utf-8", errors="replace")):
                read.setdefault(name, str(path.relative_to(REPO)))
    assert {"OMNIQ_CONFIG", "OMNIQ_PLUGINS", "OMNIQ_SECRET_KEY"} <= set(read)
    unknown = {n: where for n, where in read.items() if n not in env_names.known_env_names()}
    assert not unknown, f"read but reported as unknown: {unknown}"
    documented = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert "OMNIQ_BACKEND" in documented and "NATS_SERVERS" in documented
