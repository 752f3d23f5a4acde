"""Shared plumbing of the conformance suite: the fixture contract and helpers.

A backend's test module provides these fixtures (see :mod:`omniq.testing`):

* ``make_task_queue``, ``make_result_storage``, ``make_event_storage``,
  ``make_schedule_storage`` — each yields ``async def make() -> component``, a factory of
  NEW connected instances (each with its own connection) over the SAME empty, per-test
  namespace; the fixture closes what it made and removes the namespace at teardown;
* ``process_spec`` (optional) — ``{"task_queue": {"class": "mod:AsyncClass", "url": ...,
  "options": {...}}}`` so the suite can build the same component in other processes;
  return None for in-process backends;
* ``corrupt_task`` (optional) — ``async def corrupt(task_queue, task_id)`` overwriting the
  stored payload of a task with garbage.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from omniq.models import Task

Factory = Callable[[], Awaitable[Any]]


def optional_fixture(request: pytest.FixtureRequest, name: str) -> Any:
    """The value of fixture ``name`` if the backend's test module defines it, else None.

    Looked up by name so the fixture class may come before or after the suite class.
    """
    try:
        return request.getfixturevalue(name)
    except pytest.FixtureLookupError:
        return None


def component_factory(cls: type[Any] | str, **options: Any) -> Any:
    """A ready-made ``make_*`` fixture: builds ``cls.from_url(backend_url, **options)``.

    The backend's fixture class defines a ``backend_url`` fixture naming a fresh,
    per-test namespace (and removing it at teardown)::

        class AcmeFixtures:
            @pytest.fixture
            def backend_url(self):
                yield f"acme://test-{uuid.uuid4().hex}"

            make_task_queue = component_factory(AsyncAcmeQueue)
    """

    @pytest.fixture
    async def make(self: Any, request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
        from omniq.plugins.specs import load_object

        component_cls = load_object(cls, "conformance fixture")
        url = request.getfixturevalue("backend_url")
        made: list[Any] = []

        async def build() -> Any:
            component = component_cls.from_url(url, **options)
            await component.connect()
            made.append(component)
            return component

        yield build
        for component in made:
            await component.close()

    return make


def require(component: Any, flag: str) -> None:
    """Skip (visibly, with the reason) when a component declares a capability False."""
    if not getattr(component, flag, False):
        pytest.skip(f"{type(component).__name__} declares {flag}=False")


def make_task(i: int = 0, **fields: Any) -> Task:
    """A no-op task for tests (``func`` need not exist: storage never runs it)."""
    fields.setdefault("func", "tests:noop")
    fields.setdefault("args", (i,))
    return Task(**fields)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> bool:
    """Poll ``check`` until it returns True or ``timeout`` seconds pass."""
    import anyio

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await anyio.sleep(0.02)
    return await check()


class ConformanceBase:
    """Fixtures every conformance class shares."""

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture(autouse=True)
    def _omniq_secret_key(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # dill round trips need a signing key; tests that need another key change it.
        if not os.environ.get("OMNIQ_SECRET_KEY"):
            monkeypatch.setenv("OMNIQ_SECRET_KEY", "omniq-conformance-test-key")
