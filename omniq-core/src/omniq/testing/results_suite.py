"""Conformance tests for result storage (round trips of every type, TTL, waits)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import time
import uuid
from typing import Any

import anyio
import msgspec
import pytest

from omniq.errors import SerializationError
from omniq.models import TaskResult, TaskStatus
from omniq.serialization import default_manager
from omniq.storage.base import BaseResultStorage
from omniq.testing.base import ConformanceBase, Factory


class Point(msgspec.Struct):
    x: int
    y: float


@dataclasses.dataclass
class Box:
    name: str
    sizes: list[int]


class NotMsgspec:
    """Only dill can encode this (a plain class with a lambda inside)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.fn: Any = lambda v: v * n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NotMsgspec) and other.n == self.n and other.fn(3) == 3 * self.n


ROUND_TRIP_VALUES: list[tuple[Any, Any]] = [
    (None, None),
    (True, bool),
    (42, int),
    (-(2**63), int),
    (3.5, float),
    ("héllo", str),
    (b"\x00\xffbytes", bytes),
    ([1, "a", None], list[Any]),
    ({"a": {"b": [1, 2]}}, dict[str, Any]),
    ((1, "two"), tuple[int, str]),
    ({1, 2, 3}, set[int]),
    (frozenset({"x"}), frozenset[str]),
    (dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.UTC), dt.datetime),
    (dt.date(2026, 1, 2), dt.date),
    (dt.timedelta(seconds=90), dt.timedelta),
    (uuid.UUID("12345678-1234-5678-1234-567812345678"), uuid.UUID),
    (decimal.Decimal("1.10"), decimal.Decimal),
    (Point(1, 2.5), Point),
    (Box("b", [1, 2]), Box),
]


class ResultStorageConformance(ConformanceBase):
    """Every result storage must pass these. Needs the ``make_result_storage`` fixture."""

    #: False for backends that keep Python objects (memory) rather than bytes.
    stores_bytes = True

    @pytest.fixture
    async def result_storage(self, make_result_storage: Factory) -> BaseResultStorage:
        return await make_result_storage()  # type: ignore[no-any-return]

    async def test_set_get_overwrite_delete(self, result_storage: BaseResultStorage) -> None:
        r = TaskResult(task_id="t1", status=TaskStatus.SUCCESS, result=5, attempt=1)
        await result_storage.set(r)
        got = await result_storage.get("t1")
        assert got is not None and got.result == 5 and got.status is TaskStatus.SUCCESS
        assert got.attempt == 1
        await result_storage.set(
            TaskResult(task_id="t1", status=TaskStatus.FAILED, error="E: x", traceback="tb")
        )
        got = await result_storage.get("t1")
        assert got is not None and got.status is TaskStatus.FAILED and got.traceback == "tb"
        assert await result_storage.delete("t1")
        assert await result_storage.get("t1") is None
        assert not await result_storage.delete("t1")

    @pytest.mark.parametrize(("value", "type_"), ROUND_TRIP_VALUES, ids=lambda v: repr(v)[:30])
    async def test_round_trip_msgspec_types(
        self, result_storage: BaseResultStorage, value: Any, type_: Any
    ) -> None:
        tid = f"rt-{uuid.uuid4().hex}"
        await result_storage.set(TaskResult(task_id=tid, status=TaskStatus.SUCCESS, result=value))
        got = await result_storage.get(tid)
        assert got is not None
        back = got.result if type_ is None else msgspec.convert(got.result, type_, strict=False)
        assert back == value

    async def test_round_trip_dill_only_object(self, result_storage: BaseResultStorage) -> None:
        obj = NotMsgspec(7)
        await result_storage.set(TaskResult(task_id="d1", status=TaskStatus.SUCCESS, result=obj))
        got = await result_storage.get("d1")
        assert got is not None and got.result == obj

    async def test_dill_payload_with_wrong_key_is_refused(
        self, result_storage: BaseResultStorage, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        if not self.stores_bytes:
            pytest.skip(f"{type(result_storage).__name__} keeps objects, not signed bytes")
        await result_storage.set(
            TaskResult(task_id="d2", status=TaskStatus.SUCCESS, result=NotMsgspec(1))
        )
        monkeypatch.setenv("OMNIQ_SECRET_KEY", "a-different-key")
        default_manager()
        with pytest.raises(SerializationError, match="signature"):
            await result_storage.get("d2")

    async def test_ttl_hides_and_cleanup_deletes(self, result_storage: BaseResultStorage) -> None:
        now = time.time()
        await result_storage.set(
            TaskResult(task_id="old", status=TaskStatus.SUCCESS, result=1, expires_at=now + 0.3)
        )
        await result_storage.set(
            TaskResult(task_id="new", status=TaskStatus.SUCCESS, result=2, expires_at=now + 600)
        )
        assert await result_storage.get("old") is not None
        await anyio.sleep(0.5)
        assert await result_storage.get("old") is None
        assert await result_storage.cleanup_expired() >= 1
        got = await result_storage.get("new")
        assert got is not None and got.result == 2

    async def test_wait_returns_when_another_instance_sets(
        self, result_storage: BaseResultStorage, make_result_storage: Factory
    ) -> None:
        writer: BaseResultStorage = await make_result_storage()
        got: list[TaskResult | None] = []

        async def waiter() -> None:
            got.append(await result_storage.wait("w1", timeout=10))

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.sleep(0.2)
            await writer.set(TaskResult(task_id="w1", status=TaskStatus.SUCCESS, result="x"))
        assert got and got[0] is not None and got[0].result == "x"

    async def test_wait_for_existing_and_timeout(self, result_storage: BaseResultStorage) -> None:
        await result_storage.set(TaskResult(task_id="e1", status=TaskStatus.SUCCESS, result=1))
        got = await result_storage.wait("e1", timeout=1)
        assert got is not None and got.result == 1
        t0 = time.monotonic()
        assert await result_storage.wait("missing", timeout=0.3) is None
        assert time.monotonic() - t0 >= 0.25

    async def test_list_by_status(self, result_storage: BaseResultStorage) -> None:
        for i in range(3):
            await result_storage.set(TaskResult(task_id=f"s{i}", status=TaskStatus.SUCCESS))
        await result_storage.set(TaskResult(task_id="f0", status=TaskStatus.FAILED))
        assert len(await result_storage.list()) == 4
        assert {r.task_id for r in await result_storage.list(TaskStatus.FAILED)} == {"f0"}
        assert len(await result_storage.list(limit=2)) == 2
