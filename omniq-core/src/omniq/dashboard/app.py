"""The dashboard's ASGI app: pages, JSON for live refresh, a server-sent event stream
and POST actions (see :func:`create_app`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from omniq.dashboard.auth import COOKIE, Access
from omniq.dashboard.metrics import CONTENT_TYPE as METRICS_TYPE
from omniq.dashboard.metrics import render as render_metrics
from omniq.dashboard.payloads import show, show_args
from omniq.dashboard.source import STATUSES, Source
from omniq.errors import OmniQError
from omniq.models import TaskEvent, TaskStatus

__all__ = ["create_app"]

HERE = Path(__file__).parent
#: Seconds between two looks at the event store for the live stream.
POLL_INTERVAL = 1.0
#: A stream ends after this long; the browser's EventSource reconnects where it left.
STREAM_SECONDS = 300.0
#: How late (seconds) an event may reach the store after its timestamp and still be
#: streamed; pages also start their stream this far back.
LATE_EVENTS = 5.0
#: Most tasks a listing shows.
MAX_LIMIT = 1000


def _int(text: str | None, default: int) -> int:
    """A query parameter as an int; ``default`` when absent or not a number."""
    try:
        return int(text) if text else default
    except ValueError:
        return default


def _query(filters: dict[str, str], extra: dict[str, str] | None) -> str | None:
    """``?...`` for a link that keeps the non-empty filters, or None without ``extra``
    (no such page)."""
    if extra is None:
        return None
    return "?" + urlencode({k: v for k, v in {**filters, **extra}.items() if v})


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="milliseconds")


def _ago(ts: float | None) -> str:
    if ts is None:
        return "-"
    s = max(0.0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit} ago"
    return f"{int(s)}s ago"


def _event_json(e: TaskEvent) -> dict[str, Any]:
    return {
        "id": e.id,
        "type": e.event_type.value,
        "task_id": e.task_id,
        "queue": e.queue,
        "func": e.func,
        "schedule_id": e.schedule_id,
        "attempt": e.attempt,
        "message": e.message,
        "timestamp": e.timestamp,
        "when": _when(e.timestamp),
    }


class Dashboard:
    """The endpoints, over one :class:`Source` and one :class:`Access`."""

    def __init__(self, oq: Any, access: Access) -> None:
        self.source = Source(oq)
        self.access = access
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.filters["when"] = _when
        self.templates.env.filters["ago"] = _ago
        self.templates.env.filters["show"] = show

    # --- helpers ---------------------------------------------------------------------------

    def page(self, request: Request, template: str, **context: Any) -> Response:
        context.setdefault("message", request.query_params.get("msg"))
        context["can_act"] = self.access.token is not None
        context["now"] = time.time()
        context["stream_since"] = context["now"] - LATE_EVENTS
        context["has_events"] = self.source.has_events
        status_code = context.pop("status_code", 200)
        return self.templates.TemplateResponse(request, template, context, status_code=status_code)

    async def guard(self, request: Request) -> Response | None:
        """A response refusing the request, or None to serve it."""
        token = request.query_params.get("token")
        if token is not None and request.method == "GET" and self.access.matches(token):
            # remember the token in a cookie and drop it from the address bar
            params = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            url = request.url.replace(query=urlencode(params))
            response = RedirectResponse(str(url), status_code=303)
            self.set_cookie(request, response, token)
            return response
        if not self.access.may_read(request):
            if request.url.path.endswith(("/stream", ".json", "/metrics")):
                return JSONResponse({"error": "a token is required"}, status_code=403)
            login = request.url_for("login").include_query_params(next=str(request.url))
            return RedirectResponse(str(login), status_code=303)
        await self.source.connect()
        return None

    def local(self, request: Request, url: str | None) -> str:
        """``url`` when it points into this site, else the overview (no open redirect)."""
        parts = urlsplit(url or "")
        same = parts.netloc in ("", request.url.netloc) and parts.scheme in ("", request.url.scheme)
        if url and same and (parts.netloc or (url.startswith("/") and not url.startswith("//"))):
            return url
        return str(request.url_for("overview"))

    def set_cookie(self, request: Request, response: Response, token: str) -> None:
        root = request.scope.get("root_path") or "/"
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path=root)

    async def form(self, request: Request) -> dict[str, str]:
        """The urlencoded form of a POST (no multipart needed)."""
        body = (await request.body()).decode("utf-8", "replace")
        pairs = parse_qsl(body, keep_blank_values=True)
        form = dict(pairs)
        form["ids"] = ",".join(v for k, v in pairs if k == "ids")  # checkboxes of a selection
        return form

    # --- pages -----------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        if (refused := await self.guard(request)) is not None:
            return refused
        data = await self.overview_data()
        return self.page(request, "overview.html", statuses=STATUSES, **data)

    async def overview_data(self) -> dict[str, Any]:
        workers = await self.source.workers()
        paused = await self.source.paused_queues()
        queues = await self.source.queues(workers, paused)
        return {
            "counts": await self.source.counts(queues),
            "workers": workers,
            "paused": paused,
            "throughput": await self.source.throughput(),
        }

    async def overview_json(self, request: Request) -> Response:
        if (refused := await self.guard(request)) is not None:
            return refused
        data = await self.overview_data()
        return JSONResponse(
            {
                "counts": data["counts"],
                "paused": sorted(data["paused"] or ()),
                "workers": [
                    {"id": w.id, "host": w.host, "running": w.running, "processed": w.processed}
                    for w in data["workers"] or []
                ],
                "throughput": data["throughput"],
            }
        )

    async def metrics(self, request: Request) -> Response:
        """Prometheus text: tasks per queue and status, paused queues, live workers."""
        if (refused := await self.guard(request)) is not None:
            return refused
        workers = await self.source.workers()
        paused = await self.source.paused_queues()
        counts = await self.source.counts(await self.source.queues(workers, paused))
        return Response(render_metrics(counts, paused, workers), media_type=METRICS_TYPE)

    async def tasks(self, request: Request) -> Response:
        if (refused := await self.guard(request)) is not None:
            return refused
        q = request.query_params
        queue = q.get("queue") or None
        name = (q.get("name") or "").strip()
        status: TaskStatus | None = None
        if q.get("status"):
            try:
                status = TaskStatus(q["status"])
            except ValueError:
                return Response(f"unknown status {q['status']!r}", status_code=400)
        limit = max(1, min(MAX_LIMIT, _int(q.get("limit"), 50)))
        filters = {"queue": queue or "", "status": status.value if status else ""}
        filters.update(name=name, limit=str(limit))
        total = await self.source.count(queue, status)
        if name:
            # The name is matched here, not by the backend: page with a cursor into the
            # unfiltered listing (``skip``), reading at most MAX_LIMIT tasks per page.
            start = max(0, _int(q.get("skip"), 0))
            window = await self.source.list_tasks(queue, status, MAX_LIMIT, start)
            tasks, end = [], start + len(window)
            for i, t in enumerate(window):
                if name in t.func:
                    tasks.append(t)
                    if len(tasks) == limit:
                        end = start + i + 1
                        break
            newer = {"skip": "0"} if start else None  # back to the newest
            older = {"skip": str(end)} if end < total and window else None
        else:
            page = max(0, _int(q.get("page"), 0))
            start = page * limit
            tasks = await self.source.list_tasks(queue, status, limit, start)
            end = start + len(tasks)
            newer = {"page": str(page - 1)} if page else None
            older = {"page": str(page + 1)} if end < total and tasks else None
        return self.page(
            request,
            "tasks.html",
            tasks=tasks,
            total=total,
            first=start + 1,
            last=end,
            statuses=STATUSES,
            newer_url=_query(filters, newer),
            older_url=_query(filters, older),
            queue=filters["queue"],
            status=filters["status"],
            name=name,
            limit=limit,
        )

    async def task(self, request: Request) -> Response:
        if (refused := await self.guard(request)) is not None:
            return refused
        task_id = request.path_params["task_id"]
        error = None
        try:
            task = await self.source.get_task(task_id)
        except OmniQError as e:  # a payload that cannot be decoded here
            task, error = None, f"{type(e).__name__}: {e}"
        try:
            result = await self.source.get_result(task_id)
        except OmniQError as e:
            result, error = None, f"{type(e).__name__}: {e}"
        events = await self.source.events(task_id=task_id, limit=500)
        if task is None and result is None and not events and error is None:
            return self.page(request, "missing.html", task_id=task_id, status_code=404)
        dependencies = []
        for dep in task.depends_on if task else []:
            try:
                found = await self.source.get_task(dep)
            except OmniQError:
                found = None
            dependencies.append((dep, found.effective_status().value if found else "unknown"))
        return self.page(
            request,
            "task.html",
            task_id=task_id,
            task=task,
            status=task.effective_status().value if task else (result and result.status.value),
            args=show_args(task.args, task.kwargs) if task else [],
            result=result,
            events=events,
            dependencies=dependencies,
            error=error,
        )

    async def schedules(self, request: Request) -> Response:
        if (refused := await self.guard(request)) is not None:
            return refused
        schedules = await self.source.schedules()
        return self.page(request, "schedules.html", schedules=schedules)

    async def login(self, request: Request) -> Response:
        if request.method == "POST":
            form = await self.form(request)
            nxt = self.local(request, form.get("next"))
            if self.access.matches(form.get("token")):
                response = RedirectResponse(nxt, status_code=303)
                self.set_cookie(request, response, form["token"])
                return response
            return self.page(request, "login.html", next=nxt, failed=True, status_code=403)
        nxt = self.local(request, request.query_params.get("next"))
        return self.page(request, "login.html", next=nxt, failed=False)

    # --- live updates ----------------------------------------------------------------------

    async def stream(self, request: Request) -> Response:
        """Server-sent events: each stored event after ``since`` (default: now), polled
        from the event store every second; ``limit`` ends the stream after that many."""
        if (refused := await self.guard(request)) is not None:
            return refused
        q = request.query_params
        task_id = q.get("task_id") or None
        try:
            since = float(request.headers.get("last-event-id") or q.get("since") or time.time())
            limit = int(q["limit"]) if q.get("limit") else None
        except ValueError:
            return Response("since and limit must be numbers", status_code=400)
        return StreamingResponse(
            self._events(request, task_id, since, limit),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _events(
        self, request: Request, task_id: str | None, since: float, limit: int | None
    ) -> AsyncIterator[str]:
        # Events reach the store a little after their timestamp (writers buffer them), so
        # each look goes LATE_EVENTS seconds back and skips the ids already sent.
        seen: dict[str, float] = {}
        cursor = since
        sent = 0
        yield "retry: 2000\n\n"
        deadline = time.monotonic() + STREAM_SECONDS
        while time.monotonic() < deadline:
            start = cursor - LATE_EVENTS if seen else cursor
            for e in await self.source.events(task_id=task_id, since=start, limit=1000):
                if e.id in seen or e.timestamp < since:
                    continue
                seen[e.id] = e.timestamp
                cursor = max(cursor, e.timestamp)
                yield f"id: {cursor!r}\nevent: omniq\ndata: {json.dumps(_event_json(e))}\n\n"
                sent += 1
                if limit is not None and sent >= limit:
                    return
            seen = {i: ts for i, ts in seen.items() if ts >= cursor - LATE_EVENTS}
            if await request.is_disconnected():
                return
            yield ": keep-alive\n\n"
            await asyncio.sleep(POLL_INTERVAL)

    # --- actions ---------------------------------------------------------------------------

    async def act(self, request: Request) -> Response:
        """POST /act/{what}/{target}: every action, each checked against the token."""
        form = await self.form(request)
        if not self.access.allows(request, form):
            return JSONResponse(
                {"error": "refused: this action needs the dashboard's access token"},
                status_code=403,
            )
        await self.source.connect()
        what = request.path_params["what"]
        target = request.path_params["target"]
        try:
            message = await self._do(what, target, form)
        except OmniQError as e:
            message, code = f"{type(e).__name__}: {e}", 409
        except NotImplementedError as e:
            message, code = str(e), 501
        else:
            code = 200
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"ok": code == 200, "message": message}, status_code=code)
        back = self.local(request, form.get("next") or request.headers.get("referer"))
        back = back.split("?msg=")[0].split("&msg=")[0]
        sep = "&" if "?" in back else "?"
        return RedirectResponse(f"{back}{sep}{urlencode({'msg': message})}", status_code=303)

    async def _do(self, what: str, target: str, form: dict[str, str]) -> str:
        s = self.source
        if what == "requeue":
            task = await s.requeue(target)
            return f"task {task.id} re-queued"
        if what == "cancel":
            done = await s.cancel(target)
            return f"task {target} cancelled" if done else f"task {target} was not cancellable"
        if what == "pause-queue":
            await s.pause_queue(target)
            return f"queue {target} paused"
        if what == "resume-queue":
            await s.resume_queue(target)
            return f"queue {target} resumed"
        if what == "requeue-failed":
            queue = None if target == "*" else target
            failed = await s.list_tasks(queue, TaskStatus.FAILED, MAX_LIMIT)
            name = form.get("name", "")
            n = 0
            for t in failed:
                if name in t.func:
                    try:
                        await s.requeue(t.id)
                        n += 1
                    except OmniQError:
                        pass  # re-queued meanwhile by someone else
            return f"{n} failed task{'s' if n != 1 else ''} re-queued"
        if what in ("requeue-selected", "cancel-selected"):
            ids = [i for i in form.get("ids", "").split(",") if i]
            n = 0
            for task_id in ids:
                try:
                    if what == "cancel-selected":
                        n += await s.cancel(task_id)
                    else:
                        await s.requeue(task_id)
                        n += 1
                except OmniQError:
                    pass  # not ended (re-queue) or unknown: left as it is
            verb = "cancelled" if what == "cancel-selected" else "re-queued"
            return f"{n} of {len(ids)} selected task{'s' if len(ids) != 1 else ''} {verb}"
        if what in ("pause-schedule", "resume-schedule", "delete-schedule"):
            verb = what.split("-")[0]
            done = await s.schedule_action(verb, target)
            return f"schedule {target} {verb}d" if done else f"no schedule {target}"
        raise OmniQError(f"unknown action {what!r}")


def create_app(
    oq: Any, token: str | None = None, *, protect_reads: bool = False, debug: bool = False
) -> Starlette:
    """The dashboard of ``oq`` (an ``OmniQ`` or ``AsyncOmniQ``) as an ASGI app.

    ``token`` is required by every action (POST); without one the dashboard is read
    only. ``protect_reads=True`` requires it for every page too (``omniq dashboard`` sets
    it when bound beyond loopback). Mount it anywhere: ``app.mount("/omniq", ...)``.
    """
    d = Dashboard(oq, Access(token, protect_reads))
    routes = [
        Route("/", d.overview, name="overview"),
        Route("/overview.json", d.overview_json, name="overview_json"),
        Route("/metrics", d.metrics, name="metrics"),
        Route("/tasks", d.tasks, name="tasks"),
        Route("/tasks/{task_id}", d.task, name="task"),
        Route("/schedules", d.schedules, name="schedules"),
        Route("/stream", d.stream, name="stream"),
        Route("/login", d.login, methods=["GET", "POST"], name="login"),
        Route("/act/{what}/{target:path}", d.act, methods=["POST"], name="act"),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(debug=debug, routes=routes)
    app.state.dashboard = d
    return app
