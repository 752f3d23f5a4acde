"""A FastAPI app that enqueues tasks and reports their state (needs ``fastapi``).

Run the web app and a worker, in two terminals, from this directory:

    uvicorn web:api                          # pip install fastapi uvicorn
    omniq worker --app app:oq --queues default,reports

then ``curl -X POST 'localhost:8000/signup?email=ada@example.com'`` and
``curl localhost:8000/tasks/TASK_ID``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from app import oq, send_welcome, word_count
from fastapi import FastAPI, HTTPException


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    """Connect OmniQ when the web app starts, close it when it stops."""
    async with oq:
        yield


api = FastAPI(lifespan=lifespan)


@api.post("/signup")
async def signup(email: str) -> dict[str, str]:
    """Enqueue the welcome mail and answer at once, with the task's id."""
    handle = await send_welcome.enqueue(email)
    return {"task_id": handle.id}


@api.post("/count")
async def count(text: str) -> dict[str, str]:
    """Enqueue a word count on the ``reports`` queue."""
    handle = await word_count.enqueue(text)
    return {"task_id": handle.id}


@api.get("/tasks/{task_id}")
async def task_state(task_id: str) -> dict[str, Any]:
    """The task's status, and its result or error once it ended."""
    result = await oq.get_result(task_id)
    if result is not None:
        return {"status": result.status.value, "result": result.result, "error": result.error}
    status = await oq.status(task_id)
    if status is None:
        raise HTTPException(status_code=404, detail=f"no task {task_id}")
    return {"status": status.value}
