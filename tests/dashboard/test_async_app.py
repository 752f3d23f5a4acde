"""The dashboard over an AsyncOmniQ, served on the app's own event loop."""

from __future__ import annotations

import httpx
import pytest

from omniq import AsyncOmniQ
from omniq.dashboard import create_app
from omniq.models import TaskStatus

from .conftest import TOKEN

pytestmark = pytest.mark.anyio


async def test_async_app_pages_and_actions() -> None:
    oq = AsyncOmniQ(task_queue="memory://", event_storage="memory://", worker="async")

    @oq.task(name="dash:double")
    async def double(x: int) -> int:
        return 2 * x

    async with oq, oq.start_worker(queues=["default"]):
        h = await double.enqueue(21)
        assert await h.result(timeout=15) == 42
        transport = httpx.ASGITransport(app=create_app(oq, token=TOKEN))
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as c:
            r = await c.get(f"/tasks/{h.id}")
            assert r.status_code == 200 and ">42</pre>" in r.text
            assert (await c.get("/")).status_code == 200
            r = await c.post(f"/act/requeue/{h.id}", headers={"Authorization": "Bearer x"})
            assert r.status_code == 403
            r = await c.post(
                f"/act/requeue/{h.id}",
                headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"},
            )
            assert r.status_code == 200, r.text
        assert await h.result(timeout=15) == 42
        assert (await oq.get_task(h.id)).status is TaskStatus.SUCCESS
        assert (await oq.get_task(h.id)).attempt == 2, "the task should have run a second time"
