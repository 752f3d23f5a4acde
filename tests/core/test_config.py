"""Tests for omniq.config: layers and precedence, env vars, validation, YAML, redaction."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import omniq.config as config_pkg
from omniq.config import (
    ComponentConfig,
    OmniQConfig,
    env_config,
    load_config,
    redact_url,
    settings,
    setup_logging,
    yaml_config,
)
from omniq.config._fields import COMPONENTS
from omniq.config.logging import RedactingFilter
from omniq.config.model import FIELDS
from omniq.errors import ConfigurationError

PASSWORD = "hunter2-Sup3rS3cret"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without OMNIQ_* variables (CI sets some)."""
    for name in list(os.environ):
        if name.startswith("OMNIQ_"):
            monkeypatch.delenv(name)


@pytest.fixture
def restore_logging() -> Any:
    logger = logging.getLogger("omniq")
    handlers, level = list(logger.handlers), logger.level
    yield logger
    for handler in logger.handlers:
        if handler not in handlers:
            logger.removeHandler(handler)
    logger.setLevel(level)
    for name in ("omniq.worker", "omniq.queue", "omniq.test"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def write_yaml(tmp_path: Path, text: str, name: str = "omniq.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- defaults


def test_defaults_come_from_settings() -> None:
    config = load_config()
    assert config.task_queue == ComponentConfig(type="sqlite", url=None)
    assert config.result_storage is None
    assert config.event_storage is None
    assert config.schedule_storage is None
    assert config.events_enabled is False
    assert config.base_dir == settings.BASE_DIR == ".omniq"
    assert config.default_worker == "async"
    assert config.max_workers == 10
    assert config.retry_attempts == 0
    assert config.retry_delay == 1.0
    assert config.result_ttl == 86400.0
    assert config.log_level == "INFO"
    assert config.lease_seconds == 30.0
    assert config.old_secret_keys == []
    assert config.disabled_plugins == []
    assert config == OmniQConfig()


def test_every_field_has_a_settings_constant_and_a_converter() -> None:
    assert set(FIELDS) == set(OmniQConfig.__struct_fields__)
    for name in FIELDS:
        if name in COMPONENTS:
            assert hasattr(settings, f"{name.upper()}_TYPE")
            assert hasattr(settings, f"{name.upper()}_URL")
        else:
            assert hasattr(settings, name.upper()), name


def test_public_names() -> None:
    for name in (
        "ComponentConfig",
        "OmniQConfig",
        "load_config",
        "env_config",
        "redact_url",
        "setup_logging",
        "settings",
    ):
        assert name in config_pkg.__all__
        assert hasattr(config_pkg, name)


# ------------------------------------------------------------------------- precedence


def test_precedence_settings_yaml_env_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "MAX_WORKERS", 2)
    monkeypatch.setattr(settings, "RETRY_DELAY", 9.0)
    monkeypatch.setattr(settings, "TASK_TTL", 11.0)
    monkeypatch.setattr(settings, "LOG_LEVEL", "ERROR")
    # settings alone
    config = load_config()
    assert (config.max_workers, config.retry_delay, config.task_ttl) == (2, 9.0, 11.0)
    assert config.log_level == "ERROR"

    path = write_yaml(tmp_path, "max_workers: 3\nretry_delay: 8\nlog_level: warning\n")
    config = load_config(path)
    assert (config.max_workers, config.retry_delay, config.task_ttl) == (3, 8.0, 11.0)
    assert config.log_level == "WARNING"

    monkeypatch.setenv("OMNIQ_MAX_WORKERS", "4")
    monkeypatch.setenv("OMNIQ_LOG_LEVEL", "debug")
    config = load_config(path)
    assert (config.max_workers, config.retry_delay, config.log_level) == (4, 8.0, "DEBUG")

    config = load_config(path, max_workers=5, task_ttl=None)
    assert (config.max_workers, config.retry_delay, config.task_ttl) == (5, 8.0, None)
    assert config.log_level == "DEBUG"


def test_omniq_config_env_names_the_yaml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_yaml(tmp_path, "max_workers: 7\ntask_queue: memory\n")
    monkeypatch.setenv("OMNIQ_CONFIG", str(path))
    config = load_config()
    assert config.max_workers == 7
    assert config.task_queue == ComponentConfig(type="memory")
    monkeypatch.setenv("OMNIQ_MAX_WORKERS", "8")
    assert load_config().max_workers == 8


def test_dict_source_sits_between_env_and_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIQ_MAX_WORKERS", "4")
    monkeypatch.setenv("OMNIQ_RETRY_ATTEMPTS", "2")
    config = load_config({"max_workers": 6})
    assert (config.max_workers, config.retry_attempts) == (6, 2)
    assert load_config({"max_workers": 6}, max_workers=9).max_workers == 9


def test_omniq_config_source_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    original = load_config(task_queue="redis://127.0.0.1:6379/0", max_workers=3)
    monkeypatch.setenv("OMNIQ_MAX_WORKERS", "50")
    assert load_config(original) == original
    assert load_config(original, max_workers=4).max_workers == 4


def test_source_path_does_not_read_omniq_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMNIQ_CONFIG", str(tmp_path / "missing.yaml"))
    path = write_yaml(tmp_path, "max_workers: 2\n")
    assert load_config(path).max_workers == 2
    assert load_config(str(path)).max_workers == 2


def test_worker_alias_and_case_insensitive_keys() -> None:
    assert load_config(worker="Thread").default_worker == "thread"
    assert load_config({"MAX_WORKERS": 3}).max_workers == 3


def test_invalid_source_type() -> None:
    with pytest.raises(ConfigurationError, match="expected None, a path"):
        load_config(42)  # type: ignore[arg-type]


# ---------------------------------------------------------------- environment variables

ENV_CASES: list[tuple[str, str, Any]] = [
    ("OMNIQ_LOG_LEVEL", "debug", lambda c: c.log_level == "DEBUG"),
    ("OMNIQ_DISABLE_LOGGING", "true", lambda c: c.disable_logging is True),
    ("OMNIQ_LOG_FORMAT", "JSON", lambda c: c.log_format == "json"),
    ("OMNIQ_WORKER_STATS_INTERVAL", "none", lambda c: c.worker_stats_interval is None),
    ("OMNIQ_TASK_QUEUE_TYPE", "memory", lambda c: c.task_queue.type == "memory"),
    (
        "OMNIQ_TASK_QUEUE_URL",
        "nats://127.0.0.1:4222",
        lambda c: c.task_queue == ComponentConfig(url="nats://127.0.0.1:4222"),
    ),
    ("OMNIQ_RESULT_STORAGE_TYPE", "redis", lambda c: c.result_storage.type == "redis"),
    (
        "OMNIQ_RESULT_STORAGE_URL",
        "redis://127.0.0.1:6379/0",
        lambda c: c.result_storage.url == "redis://127.0.0.1:6379/0",
    ),
    ("OMNIQ_EVENT_STORAGE_TYPE", "sqlite", lambda c: c.event_storage.type == "sqlite"),
    (
        "OMNIQ_EVENT_STORAGE_URL",
        "sqlite:///events.db",
        lambda c: c.event_storage.url == "sqlite:///events.db" and c.events_enabled,
    ),
    ("OMNIQ_SCHEDULE_STORAGE_TYPE", "postgres", lambda c: c.schedule_storage.type == "postgres"),
    (
        "OMNIQ_SCHEDULE_STORAGE_URL",
        "postgresql://db/app",
        lambda c: c.schedule_storage.url == "postgresql://db/app",
    ),
    ("OMNIQ_FSSPEC_URI", "s3://bucket/prefix", lambda c: c.fsspec_uri == "s3://bucket/prefix"),
    ("OMNIQ_DEFAULT_WORKER", "process", lambda c: c.default_worker == "process"),
    ("OMNIQ_MAX_WORKERS", "4", lambda c: c.max_workers == 4),
    ("OMNIQ_THREAD_WORKERS", "3", lambda c: c.thread_workers == 3),
    ("OMNIQ_PROCESS_WORKERS", "2", lambda c: c.process_workers == 2),
    ("OMNIQ_GEVENT_WORKERS", "100", lambda c: c.gevent_workers == 100),
    ("OMNIQ_TASK_TIMEOUT", "2.5", lambda c: c.task_timeout == 2.5),
    ("OMNIQ_TASK_TTL", "60", lambda c: c.task_ttl == 60.0),
    ("OMNIQ_RETRY_ATTEMPTS", "3", lambda c: c.retry_attempts == 3),
    ("OMNIQ_RETRY_DELAY", "0.5", lambda c: c.retry_delay == 0.5),
    ("OMNIQ_RESULT_TTL", "none", lambda c: c.result_ttl is None),
    (
        "OMNIQ_COMPONENT_LOG_LEVELS",
        '{"worker": "debug", "omniq.queue": "warning"}',
        lambda c: c.component_log_levels == {"worker": "DEBUG", "omniq.queue": "WARNING"},
    ),
    ("OMNIQ_SECRET_KEY", "s3cr3t", lambda c: c.secret_key == "s3cr3t"),
    ("OMNIQ_OLD_SECRET_KEYS", "k1, k2,", lambda c: c.old_secret_keys == ["k1", "k2"]),
    ("OMNIQ_BASE_DIR", "/tmp/omniq-state", lambda c: c.base_dir == "/tmp/omniq-state"),
    ("OMNIQ_WORKER_PREFETCH", "0", lambda c: c.worker_prefetch == 0),
    (
        "OMNIQ_TASK_IMPORT_ALLOWLIST",
        "myapp.tasks, other",
        lambda c: c.task_import_allowlist == ["myapp.tasks", "other"],
    ),
    ("OMNIQ_LEASE_SECONDS", "12", lambda c: c.lease_seconds == 12.0),
    ("OMNIQ_HEARTBEAT_INTERVAL", "5", lambda c: c.heartbeat_interval == 5.0),
    ("OMNIQ_SHUTDOWN_GRACE", "0", lambda c: c.shutdown_grace == 0.0),
    ("OMNIQ_EVENT_RETENTION", "3600", lambda c: c.event_retention == 3600.0),
    ("OMNIQ_DISABLE_PLUGIN_AUTOLOAD", "on", lambda c: c.disable_plugin_autoload is True),
    (
        "OMNIQ_DISABLED_PLUGINS",
        "omniq_nats,omniq_redis",
        lambda c: c.disabled_plugins == ["omniq_nats", "omniq_redis"],
    ),
    ("OMNIQ_TRACE_PLUGINS", "YES", lambda c: c.trace_plugins is True),
    ("OMNIQ_REQUIRE_SERVICES", "1", lambda c: c.require_services is True),
]


@pytest.mark.parametrize(("name", "value", "check"), ENV_CASES, ids=[c[0] for c in ENV_CASES])
def test_env_var_is_honoured(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, check: Any
) -> None:
    monkeypatch.setenv(name, value)
    assert check(load_config())
    assert name[len("OMNIQ_") :].lower() in env_config()


def test_env_cases_cover_every_setting() -> None:
    names = {case[0] for case in ENV_CASES}
    for field in FIELDS:
        if field in COMPONENTS:
            assert {f"OMNIQ_{field.upper()}_TYPE", f"OMNIQ_{field.upper()}_URL"} <= names
        else:
            assert f"OMNIQ_{field.upper()}" in names


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        *[(word, True) for word in ("1", "true", "TRUE", "yes", "Yes", "on", "ON")],
        *[(word, False) for word in ("0", "false", "False", "no", "NO", "off", "Off")],
    ],
)
def test_boolean_spellings(monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool) -> None:
    monkeypatch.setenv("OMNIQ_DISABLE_LOGGING", raw)
    assert load_config().disable_logging is expected


def test_env_config_alone_and_empty_values_ignored() -> None:
    env = {
        "OMNIQ_MAX_WORKERS": "5",
        "OMNIQ_TASK_TIMEOUT": "",
        "OMNIQ_UNRELATED_THING": "x",
        "OMNIQ_CONFIG": "/nowhere.yaml",
        "omniq_max_workers": "6",
        "PATH": "/bin",
    }
    assert env_config(env) == {"max_workers": 5}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OMNIQ_MAX_WORKERS", "abc"),
        ("OMNIQ_MAX_WORKERS", "0"),
        ("OMNIQ_MAX_WORKERS", "-3"),
        ("OMNIQ_MAX_WORKERS", "2.5"),
        ("OMNIQ_THREAD_WORKERS", "zero"),
        ("OMNIQ_RETRY_ATTEMPTS", "-1"),
        ("OMNIQ_TASK_TIMEOUT", "soon"),
        ("OMNIQ_TASK_TIMEOUT", "-1"),
        ("OMNIQ_TASK_TIMEOUT", "nan"),
        ("OMNIQ_RETRY_DELAY", "fast"),
        ("OMNIQ_LEASE_SECONDS", "0"),
        ("OMNIQ_WORKER_PREFETCH", "-3"),
        ("OMNIQ_DISABLE_LOGGING", "maybe"),
        ("OMNIQ_TRACE_PLUGINS", "2"),
        ("OMNIQ_REQUIRE_SERVICES", "sure"),
        ("OMNIQ_COMPONENT_LOG_LEVELS", "{not json"),
        ("OMNIQ_COMPONENT_LOG_LEVELS", '["worker"]'),
        ("OMNIQ_COMPONENT_LOG_LEVELS", '{"worker": "LOUD"}'),
        ("OMNIQ_LOG_LEVEL", "VERBOSE"),
        ("OMNIQ_TASK_QUEUE_URL", "not-a-url"),
        ("OMNIQ_TASK_QUEUE_TYPE", "my backend!"),
    ],
)
def test_bad_env_value_names_variable_value_and_expectation(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        load_config()
    message = str(info.value)
    assert name in message
    assert value in message
    assert "expected" in message


def test_bad_int_message_says_what_is_expected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIQ_MAX_WORKERS", "0")
    with pytest.raises(ConfigurationError, match=r"expected an integer >= 1"):
        load_config()


def test_log_level_error_lists_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIQ_LOG_LEVEL", "loud")
    with pytest.raises(ConfigurationError, match="DEBUG, INFO, WARNING, ERROR, CRITICAL, DISABLED"):
        load_config()


def test_bad_secret_is_not_echoed() -> None:
    with pytest.raises(ConfigurationError) as info:
        load_config({"secret_key": 987654321})
    assert "987654321" not in str(info.value)
    assert "secret_key" in str(info.value)


def test_bad_url_value_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIQ_RESULT_STORAGE_TYPE", f"redis://u:{PASSWORD}@h bad")
    with pytest.raises(ConfigurationError) as info:
        load_config()
    assert PASSWORD not in str(info.value)


def test_heartbeat_must_be_shorter_than_lease() -> None:
    with pytest.raises(ConfigurationError, match="heartbeat_interval"):
        load_config(lease_seconds=10, heartbeat_interval=10)


def test_direct_construction_validates_and_normalizes() -> None:
    assert OmniQConfig(log_level="warn").log_level == "WARNING"
    with pytest.raises(ConfigurationError, match=r"OmniQConfig\.max_workers"):
        OmniQConfig(max_workers=0)


# ------------------------------------------------------------------------------- YAML


def test_yaml_nested_and_flat_component_forms(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path,
        """
task_queue:
  type: nats
  url: nats://127.0.0.1:4222
  servers: [nats://a:4222, nats://b:4222]
  options: {stream_prefix: test}
result_storage_type: redis
result_storage_url: redis://127.0.0.1:6379/1
result_storage_options: {key_prefix: t1}
event_storage: sqlite:///events.db
disabled_plugins: [a, b]
component_log_levels: {worker: debug}
""",
    )
    config = load_config(path)
    assert config.task_queue == ComponentConfig(
        type="nats",
        url="nats://127.0.0.1:4222",
        options={"servers": ["nats://a:4222", "nats://b:4222"], "stream_prefix": "test"},
    )
    assert config.result_storage == ComponentConfig(
        type="redis", url="redis://127.0.0.1:6379/1", options={"key_prefix": "t1"}
    )
    assert config.event_storage == ComponentConfig(url="sqlite:///events.db")
    assert config.disabled_plugins == ["a", "b"]
    assert config.component_log_levels == {"worker": "DEBUG"}
    assert yaml_config(path)["result_storage_type"] == "redis"


def test_yaml_missing_file_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigurationError, match="does not exist") as info:
        load_config(missing)
    assert str(missing) in str(info.value)


def test_yaml_missing_file_from_env_names_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nope.yaml"
    monkeypatch.setenv("OMNIQ_CONFIG", str(missing))
    with pytest.raises(ConfigurationError) as info:
        load_config()
    assert str(missing) in str(info.value)
    assert "OMNIQ_CONFIG" in str(info.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_yaml_not_a_mapping_names_path(tmp_path: Path, text: str) -> None:
    path = write_yaml(tmp_path, text)
    with pytest.raises(ConfigurationError, match="expected a mapping") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_yaml_syntax_error_names_path(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "max_workers: [1, 2\n")
    with pytest.raises(ConfigurationError, match="not valid YAML") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_empty_yaml_is_empty_config(tmp_path: Path) -> None:
    assert load_config(write_yaml(tmp_path, "")) == load_config()


def test_yaml_bad_value_names_path_key_value(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "max_workers: lots\n")
    with pytest.raises(ConfigurationError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "'max_workers'" in message
    assert "lots" in message
    assert "expected an integer >= 1" in message


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("max_worker", "max_workers"),
        ("task_queu_url", "task_queue_url"),
        ("log_levle", "log_level"),
        ("retry_attempt", "retry_attempts"),
    ],
)
def test_unknown_yaml_key_suggests_closest(tmp_path: Path, key: str, suggestion: str) -> None:
    path = write_yaml(tmp_path, f"{key}: 1\n")
    with pytest.raises(ConfigurationError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert repr(key) in message
    assert f"did you mean {suggestion!r}" in message


def test_unknown_dict_and_argument_keys() -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'default_worker'"):
        load_config({"default_workr": "thread"})
    with pytest.raises(ConfigurationError, match="did you mean 'task_timeout'"):
        load_config(task_timout=3)
    with pytest.raises(ConfigurationError, match="valid keys are"):
        load_config(zzzzzz=1)


# ---------------------------------------------------------------------- components


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("nats://127.0.0.1:4222", ComponentConfig(url="nats://127.0.0.1:4222")),
        ("sqlite:///x.db", ComponentConfig(url="sqlite:///x.db")),
        ("memory://", ComponentConfig(url="memory://")),
        ("memory", ComponentConfig(type="memory")),
        ("SQLite", ComponentConfig(type="sqlite")),
        (
            {"type": "redis", "url": "redis://h:6379/0", "key_prefix": "x", "timeout": 3},
            ComponentConfig(
                type="redis", url="redis://h:6379/0", options={"key_prefix": "x", "timeout": 3}
            ),
        ),
        ({"url": "postgresql://db/app"}, ComponentConfig(url="postgresql://db/app")),
        (
            ComponentConfig(type="file", url="memory://", options={"a": 1}),
            ComponentConfig(type="file", url="memory://", options={"a": 1}),
        ),
    ],
)
def test_component_parse(value: Any, expected: ComponentConfig | None) -> None:
    assert ComponentConfig.parse(value) == expected


@pytest.mark.parametrize("value", ["", "no spaces allowed", 42, ["nats://x"], {"url": 5}])
def test_component_parse_rejects(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="expected"):
        ComponentConfig.parse(value, where="task_queue")


def test_parse_copies_options() -> None:
    original = ComponentConfig(type="memory", options={"a": 1})
    parsed = ComponentConfig.parse(original)
    parsed.options["b"] = 2
    assert original.options == {"a": 1}


def test_url_without_type_leaves_type_to_the_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIQ_TASK_QUEUE_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("OMNIQ_RESULT_STORAGE_URL", "nats://127.0.0.1:4222")
    config = load_config()
    assert config.task_queue.type is None  # the default "sqlite" is not applied
    assert config.result_storage == ComponentConfig(url="nats://127.0.0.1:4222")


def test_default_type_without_url_keeps_url_none() -> None:
    assert load_config().task_queue == ComponentConfig(type="sqlite", url=None)


def test_yaml_type_kept_when_env_gives_only_a_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_yaml(tmp_path, "task_queue: {type: nats, url: 'nats://a:4222', queue_group: g}\n")
    monkeypatch.setenv("OMNIQ_TASK_QUEUE_URL", "nats://b:4222")
    assert load_config(path).task_queue == ComponentConfig(
        type="nats", url="nats://b:4222", options={"queue_group": "g"}
    )


def test_other_type_in_higher_layer_drops_lower_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_yaml(tmp_path, "task_queue: {type: nats, url: 'nats://a:4222'}\n")
    monkeypatch.setenv("OMNIQ_TASK_QUEUE_TYPE", "memory")
    assert load_config(path).task_queue == ComponentConfig(type="memory")


def test_component_argument_replaces_lower_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIQ_TASK_QUEUE_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("OMNIQ_EVENT_STORAGE_TYPE", "sqlite")
    config = load_config(task_queue="memory", event_storage=None)
    assert config.task_queue == ComponentConfig(type="memory")
    assert config.event_storage is None


def test_fsspec_uri_is_the_file_backend_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIQ_TASK_QUEUE_TYPE", "file")
    monkeypatch.setenv("OMNIQ_FSSPEC_URI", "memory://omniq")
    assert load_config().task_queue == ComponentConfig(type="file", url="memory://omniq")
    monkeypatch.setenv("OMNIQ_TASK_QUEUE_URL", "s3://bucket/q")
    assert load_config().task_queue.url == "s3://bucket/q"


def test_settings_type_used_as_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "TASK_QUEUE_TYPE", "memory")
    monkeypatch.setattr(settings, "RESULT_STORAGE_TYPE", "redis")
    config = load_config()
    assert config.task_queue.type == "memory"
    assert config.result_storage == ComponentConfig(type="redis")


def test_effective_storages_fall_back_to_task_queue() -> None:
    config = load_config(task_queue="nats://127.0.0.1:4222")
    assert config.effective_result_storage() is config.task_queue
    assert config.effective_schedule_storage() is config.task_queue
    config = load_config(result_storage="memory", schedule_storage="sqlite:///s.db")
    assert config.effective_result_storage() == ComponentConfig(type="memory")
    assert config.effective_schedule_storage() == ComponentConfig(url="sqlite:///s.db")


# ----------------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://user:pw@host:6379/0", "redis://user:***@host:6379/0"),
        ("redis://:pw@host:6379/0", "redis://***@host:6379/0"),
        ("nats://s3cr3ttoken@host:4222", "nats://***@host:4222"),
        ("postgresql://u:p%40ss@db:5432/app?sslmode=require", "postgresql://u:***@db:5432/app?sslmode=require"),
        ("s3://bucket/p?access_key=AK&secret_key=SK&region=eu", "s3://bucket/p?access_key=***&secret_key=***&region=eu"),
        ("az://c?sas_token=abc&account_name=n", "az://c?sas_token=***&account_name=n"),
        ("redis://h/0?password=x&key_prefix=p", "redis://h/0?password=***&key_prefix=p"),
        ("https://h/x?token=t#frag", "https://h/x?token=***#frag"),
        ("redis://u:p@w@host", "redis://u:***@host"),
        ("memory://", "memory://"),
        ("sqlite:///x.db", "sqlite:///x.db"),
        ("not a url", "not a url"),
    ],
)  # fmt: skip
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_credentials_never_in_repr_or_redacted() -> None:
    config = load_config(
        task_queue=f"nats://user:{PASSWORD}@127.0.0.1:4222",
        result_storage={
            "url": f"redis://:{PASSWORD}@127.0.0.1:6379/0",
            "password": PASSWORD,
            "servers": [f"redis://u:{PASSWORD}@h2:6379"],
        },
        event_storage=f"postgresql://app:{PASSWORD}@db/app?sslmode=require",
        fsspec_uri=f"s3://bucket?secret_key={PASSWORD}",
        secret_key=PASSWORD,
        old_secret_keys=[PASSWORD + "old"],
    )
    for text in (repr(config), str(config), str(config.redacted()), repr(config.task_queue)):
        assert PASSWORD not in text
    shown = config.redacted()
    assert shown["secret_key"] == "***"
    assert shown["old_secret_keys"] == ["***"]
    assert shown["task_queue"]["url"] == "nats://user:***@127.0.0.1:4222"
    assert shown["event_storage"]["url"] == "postgresql://app:***@db/app?sslmode=require"
    assert config.secret_key == PASSWORD  # the real value is still there for use
    assert isinstance(shown, dict) and isinstance(shown["task_queue"], dict)


def test_redacting_filter_on_a_record() -> None:
    record = logging.LogRecord(
        "omniq.test", logging.INFO, __file__, 1, "connecting to %s as %s",
        (f"redis://u:{PASSWORD}@h:6379/0", "u"), None,
    )  # fmt: skip
    assert RedactingFilter().filter(record) is True
    assert PASSWORD not in record.getMessage()
    assert "redis://u:***@h:6379/0" in record.getMessage()


def test_log_message_through_installed_handler_is_redacted(
    restore_logging: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    setup_logging(load_config(log_level="DEBUG"))
    with caplog.at_level(logging.DEBUG, logger="omniq"):
        logging.getLogger("omniq.test").info("url=%s", f"nats://tok{PASSWORD}@h:4222")
    assert "nats://***@h:4222" in caplog.text
    assert PASSWORD not in caplog.text


# ------------------------------------------------------------------------- logging


def test_setup_logging_levels_and_idempotence(restore_logging: logging.Logger) -> None:
    config = load_config(log_level="warning", component_log_levels={"worker": "debug"})
    setup_logging(config)
    setup_logging(config)
    logger = restore_logging
    installed = [
        h for h in logger.handlers if any(isinstance(f, RedactingFilter) for f in h.filters)
    ]
    assert len(installed) == 1
    assert logger.level == logging.WARNING
    assert logging.getLogger("omniq.worker").level == logging.DEBUG
    # a new config replaces component levels set before
    setup_logging(load_config(component_log_levels={"omniq.queue": "error"}))
    assert logging.getLogger("omniq.worker").level == logging.NOTSET
    assert logging.getLogger("omniq.queue").level == logging.ERROR
    assert logger.level == logging.INFO


@pytest.mark.parametrize("overrides", [{"log_level": "disabled"}, {"disable_logging": True}])
def test_logging_can_be_silenced(
    restore_logging: logging.Logger, overrides: dict[str, Any]
) -> None:
    setup_logging(load_config(component_log_levels={"worker": "DEBUG"}, **overrides))
    assert not logging.getLogger("omniq").isEnabledFor(logging.CRITICAL)
    assert not logging.getLogger("omniq.worker").isEnabledFor(logging.CRITICAL)


# ----------------------------------------------------------------------- properties


@given(st.integers(min_value=1, max_value=10**9))
def test_max_workers_round_trips_through_env(n: int) -> None:
    assert env_config({"OMNIQ_MAX_WORKERS": str(n)}) == {"max_workers": n}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMNIQ_MAX_WORKERS", f" {n} ")
        assert load_config().max_workers == n


@given(st.integers(max_value=0) | st.text().filter(lambda s: not s.strip().isdigit()))
def test_invalid_max_workers_always_rejected(value: int | str) -> None:
    raw = str(value)
    if not raw.strip():
        return  # empty means "not set"
    try:
        parsed = float(raw)
    except ValueError:
        parsed = None
    if parsed is not None and parsed >= 1 and parsed.is_integer():
        return  # "1e3" or "7.0" are valid integers
    with pytest.raises(ConfigurationError, match="OMNIQ_MAX_WORKERS"):
        env_config({"OMNIQ_MAX_WORKERS": raw})


_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=10)


@hsettings(suppress_health_check=[HealthCheck.too_slow])
@given(
    scheme=st.sampled_from(["redis", "nats", "postgresql", "amqp", "s3", "postgresql+asyncpg"]),
    user=_NAME,
    password=st.text(min_size=1, max_size=40),
    path=st.sampled_from(["", "/0", "/db/app", "/x?sslmode=require"]),
)
def test_generated_password_never_leaks(scheme: str, user: str, password: str, path: str) -> None:
    encoded = quote(password, safe="")
    url = f"{scheme}://{user}:{encoded}@db.example.com:5432{path}"
    redacted = redact_url(url)
    assert redacted == f"{scheme}://{user}:***@db.example.com:5432{path}"
    token_url = f"{scheme}://{encoded}@db.example.com{path}"
    assert redact_url(token_url) == f"{scheme}://***@db.example.com{path}"
    query_url = f"{scheme}://db.example.com/?user={user}&password={encoded}"
    assert redact_url(query_url) == f"{scheme}://db.example.com/?user={user}&password=***"
    config = OmniQConfig(task_queue=ComponentConfig(url=url))
    assert f":{encoded}@" not in repr(config)
    assert f":{encoded}@" not in str(config.redacted())


def test_docs_reference_is_generated_from_the_declarations() -> None:
    from pathlib import Path

    from omniq.config.reference import markdown

    docs = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    assert markdown() in docs, (
        "docs/configuration.md's settings table differs from the declarations on "
        "OmniQConfig: paste the output of `omniq config reference` over it"
    )


def test_every_setting_is_declared_once_and_read_everywhere() -> None:
    from omniq.config import settings
    from omniq.config.model import FIELDS, FLAT_KEYS

    for name, declared in FIELDS.items():
        assert declared.doc, f"setting {name} has no docs text"
        assert hasattr(settings, name.upper()), f"settings.{name.upper()} missing"
    assert settings.TASK_QUEUE_TYPE == "sqlite" and settings.RESULT_TTL == 86400.0
    assert set(FLAT_KEYS) >= {"task_queue_type", "task_queue_url", "event_storage_options"}
    with pytest.raises(AttributeError):
        settings.NO_SUCH_SETTING  # noqa: B018


def test_assigning_a_settings_default_changes_later_configs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from omniq.config import settings

    monkeypatch.setattr(settings, "TASK_TTL", 42, raising=False)
    assert load_config().task_ttl == 42.0
