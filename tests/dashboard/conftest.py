"""Dashboards over a memory and an SQLite app, each with a real worker."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the dashboard extra (starlette) is not installed")

with warnings.catch_warnings():  # starlette 1.x would rather have httpx2 than httpx
    warnings.filterwarnings("ignore", message=".*httpx2")
    from starlette.testclient import TestClient

from omniq import OmniQ
from omniq.dashboard import create_app

TOKEN = "s3cret-token"


@dataclass
class Env:
    """An app with registered tasks, its running worker and a dashboard client."""

    oq: OmniQ
    client: TestClient
    tasks: dict[str, Any]
    flaky: dict[str, bool] = field(default_factory=dict)


def wait_until(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def make_app(kind: str, tmp_path: Path) -> OmniQ:
    """An app on the memory backend or on SQLite, with event storage on."""
    if kind == "memory":
        return OmniQ(task_queue="memory://", event_storage="memory://", worker="thread")
    url = f"sqlite:///{tmp_path / 'dash.db'}"
    return OmniQ(task_queue=url, event_storage=url, worker="thread")


def register(oq: OmniQ, flaky: dict[str, bool]) -> dict[str, Any]:
    """The tasks the tests run: ``add``, ``flaky`` (fails while ``flaky["fail"]``)."""

    @oq.task(name="dash:add")
    def add(x: int, y: int) -> int:
        return x + y

    @oq.task(name="dash:flaky")
    def flaky_task(label: str) -> str:
        if flaky.get("fail", True):
            raise RuntimeError(f"flaky {label} failed on purpose")
        return f"{label} ok"

    @oq.task(name="dash:slow", queue="slow")
    def slow(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    return {"add": add, "flaky": flaky_task, "slow": slow}


@pytest.fixture(params=["memory", "sqlite"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    flaky = {"fail": True}
    oq = make_app(request.param, tmp_path)
    tasks = register(oq, flaky)
    with (
        oq,
        oq.start_worker_sync(queues=["default"], concurrency=2),
        TestClient(create_app(oq, token=TOKEN)) as client,
    ):
        yield Env(oq=oq, client=client, tasks=tasks, flaky=flaky)
