"""Fixtures of the fault suite: one harness per backend, parametrised.

How a backend joins (say Redis):

1. write ``RedisHarness(Harness)`` in ``harness.py`` (``url``, and the fault hooks it
   supports: ``corrupt``/``corruption_kinds``, ``max_payload``, ``pause``,
   ``check_integrity``, and for a server of its own ``kill_server``/``start_server``);
2. add a ``redis_backend`` fixture below (skip, or fail under OMNIQ_REQUIRE_SERVICES=1,
   when its server is unreachable), and ``redis_private_backend`` if the suite may kill
   and restart a server of the test's own;
3. add ``"redis"`` to ``PROCESS_BACKENDS`` (and to ``SERVER_BACKENDS`` with step 2's
   private fixture).

Tests ask for ``backend`` (every process backend), ``restartable_backend`` (a server of
the test's own) or ``inproc_backend`` (also memory, for in-process tests).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from omniq.plugins import get_plugin_manager
from tests.faults.harness import (
    FileHarness,
    Harness,
    MemoryHarness,
    NatsHarness,
    NatsPrivateHarness,
    PostgresHarness,
    PostgresPrivateHarness,
    RedisHarness,
    RedisPrivateHarness,
    SQLiteHarness,
)

#: Backends whose store other processes reach (worker subprocess tests).
PROCESS_BACKENDS = ["sqlite", "nats", "postgres", "redis", "file"]
#: Backends with a server a test may kill and restart (``<name>_private_backend``).
SERVER_BACKENDS = ["nats", "redis", "postgres"]
#: Backends for in-process tests.
INPROCESS_BACKENDS = ["memory", *PROCESS_BACKENDS]


def _require_installed(name: str) -> None:
    if name in get_plugin_manager().backends():
        return
    message = f"OmniQ backend {name!r} is not installed"
    if os.environ.get("OMNIQ_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (OMNIQ_REQUIRE_SERVICES=1)")
    pytest.skip(message)


# --- one fixture per backend ------------------------------------------------------------


@pytest.fixture
def memory_backend(tmp_path: Path) -> Iterator[Harness]:
    h = MemoryHarness(tmp_path / "memory")
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def sqlite_backend(tmp_path: Path) -> Iterator[Harness]:
    _require_installed("sqlite")
    h = SQLiteHarness(tmp_path / "sqlite")
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def file_backend(tmp_path: Path) -> Iterator[Harness]:
    _require_installed("file")
    h = FileHarness(tmp_path / "file")
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def nats_backend(tmp_path: Path) -> Iterator[Harness]:
    from tests.backends import test_nats_support as support

    _require_installed("nats")
    support.require_nats()
    h = NatsHarness(tmp_path / "nats", support.URL)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def nats_private_backend(tmp_path: Path) -> Iterator[Harness]:
    from tests.backends import test_nats_support as support

    _require_installed("nats")
    support.require_nats_binary()
    h = NatsPrivateHarness(tmp_path / "nats-private")
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def postgres_backend(tmp_path: Path) -> Iterator[Harness]:
    from tests.backends import test_postgres as support

    _require_installed("postgres")
    support.require_postgres()
    h = PostgresHarness(tmp_path / "postgres", support.SERVER_URL)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def redis_backend(tmp_path: Path) -> Iterator[Harness]:
    from tests.backends import test_redis_support as support

    _require_installed("redis")
    support.require_redis()
    h = RedisHarness(tmp_path / "redis", support.URL)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def redis_private_backend(tmp_path: Path) -> Iterator[Harness]:
    from tests.backends import test_redis_support as support

    _require_installed("redis")
    support.require_redis_binary()
    h = RedisPrivateHarness(tmp_path / "redis-private")
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def postgres_private_backend(tmp_path: Path) -> Iterator[Harness]:
    _require_installed("postgres")
    if not (PostgresPrivateHarness.BIN / "initdb").exists():
        message = f"PostgreSQL server binaries not found in {PostgresPrivateHarness.BIN}"
        if os.environ.get("OMNIQ_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    h = PostgresPrivateHarness(tmp_path / "postgres-private")
    try:
        yield h
    finally:
        h.close()


# --- parametrised views -------------------------------------------------------------------


@pytest.fixture(params=PROCESS_BACKENDS)
def backend(request: pytest.FixtureRequest) -> Harness:
    """Each backend that worker subprocesses can share."""
    h: Harness = request.getfixturevalue(f"{request.param}_backend")
    return h


@pytest.fixture(params=PROCESS_BACKENDS)
def restartable_backend(request: pytest.FixtureRequest) -> Harness:
    """Each backend with a server of the test's own, which the test may kill."""
    if request.param not in SERVER_BACKENDS:
        pytest.skip(f"{request.param} is embedded: it has no server to kill and restart")
    h: Harness = request.getfixturevalue(f"{request.param}_private_backend")
    return h


@pytest.fixture(params=INPROCESS_BACKENDS)
def inproc_backend(request: pytest.FixtureRequest) -> Harness:
    """Each backend, memory included, for tests that run the worker in this process."""
    h: Harness = request.getfixturevalue(f"{request.param}_backend")
    return h
