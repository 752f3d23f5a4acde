"""What core gives every backend so it does not write it again: conventional specs, lazy
package exports, the bundle's connect/close, the claim and listing templates."""

from __future__ import annotations

import builtins
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from omniq.models import Task, TaskQuery
from omniq.plugins import BackendSpec
from omniq.plugins.lazy import lazy_exports
from omniq.storage.base import BackendBundle
from omniq.storage.memory import AsyncMemoryQueue


def test_conventional_spec_names_the_classes() -> None:
    spec = BackendSpec.conventional("acme", "omniq_acme", "Acme", schemes=("acme",))
    assert spec.task_queue == "omniq_acme:AsyncAcmeQueue"
    assert spec.result_storage == "omniq_acme:AsyncAcmeResultStorage"
    assert spec.event_storage == "omniq_acme:AsyncAcmeEventStorage"
    assert spec.schedule_storage == "omniq_acme:AsyncAcmeScheduleStorage"
    assert spec.bundle == "omniq_acme:AcmeBackend" and spec.schemes == ("acme",)
    assert BackendSpec.conventional("m", "x", "M", bundle=False).bundle is None


def test_lazy_exports_import_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = types.ModuleType("lazy_pkg")
    pkg.__path__ = []  # a package
    sub = types.ModuleType("lazy_pkg._impl")
    sub.Thing = object()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lazy_pkg", pkg)
    monkeypatch.setitem(sys.modules, "lazy_pkg._impl", sub)
    getattr_, dir_ = lazy_exports("lazy_pkg", {"_impl": ["Thing"]})
    assert "Thing" in dir_()
    assert getattr_("Thing") is sub.Thing  # type: ignore[attr-defined]
    assert pkg.__dict__["Thing"] is sub.Thing, "cached on the package after the first use"
    with pytest.raises(AttributeError, match="module 'lazy_pkg' has no attribute 'Nope'"):
        getattr_("Nope")


class _Part:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    async def connect(self) -> None:
        self.log.append(f"connect {self.name}")

    async def close(self) -> None:
        self.log.append(f"close {self.name}")


class _Bundle(BackendBundle):
    def __init__(self, url: str | None = None, **options: Any) -> None:
        self.url = url or "acme://"
        self.log: list[str] = []
        self.task_queue, self.result_storage, self.event_storage, self.schedule_storage = (
            _Part(self.log, n) for n in ("q", "r", "e", "s")
        )

    async def close_shared(self) -> None:
        self.log.append("close shared")


@pytest.mark.anyio
async def test_bundle_connects_and_closes_every_component_then_what_they_share() -> None:
    b = _Bundle.from_url("acme://here")
    assert repr(b) == "_Bundle('acme://here')"
    async with b.async_context():
        assert b.log == ["connect q", "connect r", "connect e", "connect s"]
    assert b.log[4:] == ["close q", "close r", "close e", "close s", "close shared"]


class _Counting(AsyncMemoryQueue):
    calls: builtins.list[tuple[Any, ...]]

    async def claim_ready(
        self, queues: builtins.list[str], limit: int, worker_id: str, lease: float, wait: float
    ) -> builtins.list[Task]:
        self.calls.append((queues, limit))
        return await super().claim_ready(queues, limit, worker_id, lease, wait)

    async def select_tasks(self, query: TaskQuery) -> builtins.list[Task]:
        self.calls.append((query,))
        return await super().select_tasks(query)


@pytest.mark.anyio
async def test_dequeue_many_checks_its_arguments_then_claims_and_list_builds_a_query() -> None:
    q = _Counting("memory://kit")
    q.calls = []
    assert await q.dequeue_many(["default"], 0, worker_id="w") == []
    assert await q.dequeue_many((), 5, worker_id="w") == []
    assert q.calls == [], "nothing to claim: the backend is not asked"
    assert await q.dequeue_many(("a", "b"), 3, worker_id="w") == []
    assert q.calls == [(["a", "b"], 3)], "queues arrive as a list"
    q.calls.clear()
    await q.list_tasks("a", None, 7)
    assert q.calls == [(TaskQuery("a", None, 7),)]


@pytest.mark.anyio
async def test_a_queue_that_implements_no_claim_says_so() -> None:
    class Half(AsyncMemoryQueue):
        claim_ready = AsyncMemoryQueue.__mro__[1].claim_ready  # type: ignore[assignment]

    with pytest.raises(NotImplementedError, match="Half implements neither claim_ready"):
        await Half("memory://half").dequeue_many(["default"], 1, worker_id="w")


def test_same_store_compares_where_components_keep_their_data(tmp_path: Path) -> None:
    """A queue writes a result in the completion's own atomic step only when the result
    storage is on the same store: ``store_key`` says where, ``same_store`` compares."""
    from omniq_file import AsyncFileQueue, AsyncFileResultStorage
    from omniq_postgres import AsyncPostgresQueue, AsyncPostgresResultStorage
    from omniq_redis import AsyncRedisQueue, AsyncRedisResultStorage

    from omniq_sqlite import AsyncSQLiteQueue, AsyncSQLiteResultStorage
    from omniq_sqlite._database import Database

    db = tmp_path / "a.db"
    assert AsyncSQLiteQueue(f"sqlite:///{db}").same_store(
        AsyncSQLiteResultStorage(f"sqlite:///{db}")
    )
    assert not AsyncSQLiteQueue(f"sqlite:///{db}").same_store(
        AsyncSQLiteResultStorage(f"sqlite:///{tmp_path / 'b.db'}")
    ), "another file is another store"
    mem = Database.from_url("sqlite:///:memory:")
    assert AsyncSQLiteQueue(database=mem).same_store(AsyncSQLiteResultStorage(database=mem))
    assert not AsyncSQLiteQueue("sqlite:///:memory:").same_store(
        AsyncSQLiteResultStorage("sqlite:///:memory:")
    ), "two in-memory databases are two stores"
    url = "redis://127.0.0.1:6379/0"
    assert AsyncRedisQueue(url, prefix="a").same_store(AsyncRedisResultStorage(url, prefix="a"))
    assert not AsyncRedisQueue(url, prefix="a").same_store(AsyncRedisResultStorage(url, prefix="b"))
    dsn = "postgresql://127.0.0.1:5432/test"
    assert AsyncPostgresQueue(dsn, schema="a").same_store(
        AsyncPostgresResultStorage(dsn, schema="a")
    )
    assert not AsyncPostgresQueue(dsn, schema="a").same_store(
        AsyncPostgresResultStorage(dsn, schema="b")
    )
    root = f"file://{tmp_path / 'files'}"
    assert AsyncFileQueue(root).same_store(AsyncFileResultStorage(root))
    assert not AsyncFileQueue(root).same_store(AsyncFileResultStorage(f"{root}-other"))
    assert not AsyncFileQueue(root).same_store(AsyncSQLiteResultStorage(f"sqlite:///{db}")), (
        "components of different backends never share a store"
    )
