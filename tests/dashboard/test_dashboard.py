"""The dashboard over a memory and an SQLite app with a real worker: pages, actions,
the token, the event stream."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from starlette.testclient import TestClient

from omniq import OmniQ
from omniq.dashboard import create_app
from omniq.models import ScheduleState, TaskStatus

from .conftest import TOKEN, Env, wait_until

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _final(env: Env, task_id: str, status: TaskStatus) -> bool:
    t = env.oq.get_task_sync(task_id)
    return t is not None and t.status is status


def test_every_page_renders(env: Env) -> None:
    h = env.tasks["add"].enqueue_sync(2, 3)
    assert h.result_sync(timeout=15) == 5
    bad = env.tasks["flaky"].enqueue_sync("first")
    wait_until(lambda: _final(env, bad.id, TaskStatus.FAILED), what="the flaky task to fail")
    sid = env.oq.schedule_sync(env.tasks["add"], args=(1, 1), interval=3600)

    c = env.client
    r = c.get("/")
    assert r.status_code == 200, r.text
    assert 'data-queue="default"' in r.text and "Workers" in r.text
    data = c.get("/overview.json").json()
    assert data["counts"]["default"]["success"] >= 1, data
    assert data["counts"]["default"]["failed"] == 1, data
    assert len(data["workers"]) == 1, "the running worker should be listed"

    r = c.get("/tasks", params={"status": "failed"})
    assert r.status_code == 200 and bad.id in r.text and h.id not in r.text
    r = c.get("/tasks", params={"name": "add", "limit": 5})
    assert h.id in r.text and bad.id not in r.text

    r = c.get(f"/tasks/{h.id}")
    assert r.status_code == 200
    assert "dash:add" in r.text and ">5</pre>" in r.text, "the result value should be shown"
    assert "<pre>2</pre>" in r.text and "<pre>3</pre>" in r.text, "arguments as their repr"
    for kind in ("enqueued", "executing", "complete"):
        assert f'data-event="{kind}"' in r.text, f"timeline should have {kind}"
    r = c.get(f"/tasks/{bad.id}")
    assert "RuntimeError" in r.text and "Traceback" in r.text
    assert c.get("/tasks/no-such-task").status_code == 404

    r = c.get("/schedules")
    assert r.status_code == 200 and sid in r.text


def test_actions_change_state(env: Env) -> None:
    c = env.client
    bad = env.tasks["flaky"].enqueue_sync("again")
    wait_until(lambda: _final(env, bad.id, TaskStatus.FAILED), what="the flaky task to fail")
    env.flaky["fail"] = False
    r = c.post(f"/act/requeue/{bad.id}", headers={**AUTH, "Accept": "application/json"})
    assert r.status_code == 200, r.text
    assert bad.result_sync(timeout=15) == "again ok"

    # pause the slow queue (no worker on it), cancel a task there, resume
    r = c.post("/act/pause-queue/slow", headers=AUTH, follow_redirects=False)
    assert r.status_code == 303 and "msg=" in r.headers["location"]
    assert "slow" in env.oq.paused_queues_sync()
    waiting = env.tasks["slow"].enqueue_sync(0.01)
    assert "badge paused" in c.get("/").text
    r = c.post(f"/act/cancel/{waiting.id}", data={"token": TOKEN})  # token as a form field
    assert r.status_code == 200  # redirect followed to the overview
    assert env.oq.status_sync(waiting.id) is TaskStatus.CANCELLED
    c.post("/act/resume-queue/slow", headers=AUTH)
    assert "slow" not in env.oq.paused_queues_sync()

    sid = env.oq.schedule_sync(env.tasks["add"], args=(1, 1), interval=3600)
    c.post(f"/act/pause-schedule/{sid}", headers=AUTH)
    assert env.oq.get_schedule_sync(sid).state is ScheduleState.PAUSED
    c.post(f"/act/resume-schedule/{sid}", headers=AUTH)
    assert env.oq.get_schedule_sync(sid).state is ScheduleState.ACTIVE
    c.post(f"/act/delete-schedule/{sid}", headers=AUTH)
    assert env.oq.get_schedule_sync(sid) is None


def test_requeue_all_failed_matching_a_filter(env: Env) -> None:
    bad = [env.tasks["flaky"].enqueue_sync(f"n{i}") for i in range(3)]
    for h in bad:
        wait_until(lambda h=h: _final(env, h.id, TaskStatus.FAILED), what="failures")
    env.flaky["fail"] = False
    r = env.client.post(
        "/act/requeue-failed/default",
        data={"name": "flaky"},
        headers={**AUTH, "Accept": "application/json"},
    )
    assert r.json()["message"] == "3 failed tasks re-queued", r.text
    assert [h.result_sync(timeout=15) for h in bad] == ["n0 ok", "n1 ok", "n2 ok"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
def test_refused_without_the_right_token(env: Env, headers: dict[str, str]) -> None:
    c = env.client
    bad = env.tasks["flaky"].enqueue_sync("x")
    wait_until(lambda: _final(env, bad.id, TaskStatus.FAILED), what="the flaky task to fail")
    sid = env.oq.schedule_sync(env.tasks["add"], args=(1, 1), interval=3600)
    attempts = [
        f"/act/requeue/{bad.id}",
        "/act/requeue-failed/*",
        "/act/pause-queue/default",
        f"/act/pause-schedule/{sid}",
        f"/act/delete-schedule/{sid}",
    ]
    for path in attempts:
        r = c.post(path, headers=headers, data={"token": "nope"} if headers else None)
        assert r.status_code == 403, f"{path} without the right token: {r.status_code}"
    assert env.oq.get_task_sync(bad.id).status is TaskStatus.FAILED, "the task must stay failed"
    assert env.oq.paused_queues_sync() == set()
    assert env.oq.get_schedule_sync(sid).state is ScheduleState.ACTIVE
    # a read-only dashboard (no token) refuses every action too
    with TestClient(create_app(env.oq)) as ro:
        assert ro.get("/").status_code == 200
        assert ro.post(f"/act/requeue/{bad.id}", headers=AUTH).status_code == 403
    assert env.oq.get_task_sync(bad.id).status is TaskStatus.FAILED


def test_protected_reads_need_the_token(env: Env) -> None:
    with TestClient(create_app(env.oq, TOKEN, protect_reads=True)) as c:
        r = c.get("/tasks", follow_redirects=False)
        assert r.status_code == 303 and "/login" in r.headers["location"]
        assert c.get("/stream").status_code == 403
        assert c.get("/tasks", headers=AUTH).status_code == 200
        # ?token= sets the cookie, then pages open without it
        r = c.get("/tasks?token=" + TOKEN, follow_redirects=False)
        assert r.status_code == 303 and "token" not in r.headers["location"]
        assert c.get("/tasks").status_code == 200


def test_stream_yields_events(env: Env) -> None:
    h = env.tasks["add"].enqueue_sync(20, 22)
    assert h.result_sync(timeout=15) == 42
    with env.client.stream("GET", "/stream", params={"since": 0, "task_id": h.id, "limit": 3}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        body = "".join(r.iter_text())
    events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events] == ["enqueued", "executing", "complete"], body
    assert all(e["task_id"] == h.id for e in events)


def test_mounted_under_a_prefix(env: Env) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    outer = Starlette(routes=[Mount("/omniq", create_app(env.oq, TOKEN))])
    h = env.tasks["add"].enqueue_sync(1, 1)
    h.result_sync(timeout=15)
    with TestClient(outer) as c:
        r = c.get("/omniq/tasks")
        assert r.status_code == 200 and f'href="http://testserver/omniq/tasks/{h.id}"' in r.text
        assert c.get("/omniq/static/dashboard.js").status_code == 200


def test_dill_arguments_are_not_unpickled(tmp_path: object) -> None:
    """The dashboard process's SafeViewManager keeps dill values as bytes."""
    from omniq.dashboard.payloads import DillPayload, SafeViewManager
    from omniq.models import Task

    class Point:
        def __init__(self, x: int) -> None:
            self.x = x

    writer = SafeViewManager("k" * 32)
    data = writer.encode(Task(func="f", args=(1,), kwargs={"p": Point(3)}, serializer=None))
    shown = SafeViewManager(None).decode_task(data)
    assert shown.args == (1,)
    p = shown.kwargs["p"]
    assert isinstance(p, DillPayload) and "Point" in repr(p) and "not unpickled" in repr(p)
    # written back untouched (a re-queue from the dashboard keeps the payload)
    again = SafeViewManager(None).encode(shown)
    assert SafeViewManager("k" * 32).decode_task(again).kwargs["p"].raw == p.raw


def test_cli_registers_the_command() -> None:
    from omniq.cli import build_parser

    args = build_parser().parse_args(["dashboard", "-A", "x:oq", "--port", "9999"])
    assert (args.host, args.port, args.token) == ("127.0.0.1", 9999, None)


def test_cli_refuses_a_public_host_without_token(capsys: pytest.CaptureFixture[str]) -> None:
    from omniq.cli import main

    assert main(["dashboard", "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "--token" in capsys.readouterr().err


def test_metrics_match_the_run(env: Env) -> None:
    done = [env.tasks["add"].enqueue_sync(i, i) for i in range(4)]
    bad = env.tasks["flaky"].enqueue_sync("m")
    assert [h.result_sync(timeout=15) for h in done] == [0, 2, 4, 6]
    wait_until(lambda: _final(env, bad.id, TaskStatus.FAILED), what="the flaky task to fail")
    env.oq.pause_queue_sync("slow")
    r = env.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    lines = set(r.text.splitlines())
    assert 'omniq_tasks{queue="default",status="success"} 4' in lines, r.text
    assert 'omniq_tasks{queue="default",status="failed"} 1' in lines, r.text
    assert 'omniq_queue_paused{queue="slow"} 1' in lines, r.text
    assert "omniq_workers 1" in lines, r.text
    with TestClient(create_app(env.oq, TOKEN, protect_reads=True)) as c:
        assert c.get("/metrics").status_code == 403
        assert c.get("/metrics", headers=AUTH).status_code == 200


def test_selected_tasks_are_retried_or_cancelled(env: Env) -> None:
    bad = [env.tasks["flaky"].enqueue_sync(f"s{i}") for i in range(3)]
    for h in bad:
        wait_until(lambda h=h: _final(env, h.id, TaskStatus.FAILED), what="failures")
    env.flaky["fail"] = False
    page = env.client.get("/tasks", params={"status": "failed"}).text
    assert page.count('name="ids"') == 3, "each failed task should have a checkbox"
    picked = [("ids", bad[0].id), ("ids", bad[2].id), ("token", TOKEN)]
    r = env.client.post(
        "/act/requeue-selected/_",
        content=urlencode(picked),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
    )
    assert r.json()["message"] == "2 of 2 selected tasks re-queued", r.text
    assert bad[0].result_sync(timeout=15) == "s0 ok" and bad[2].result_sync(timeout=15) == "s2 ok"
    assert env.oq.status_sync(bad[1].id) is TaskStatus.FAILED, "an unselected task stays failed"
    env.oq.pause_queue_sync("slow")
    waiting = [env.tasks["slow"].enqueue_sync(0.01) for _ in range(2)]
    r = env.client.post(
        "/act/cancel-selected/_",
        content=urlencode([("ids", w.id) for w in waiting]),
        headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200
    assert all(env.oq.status_sync(w.id) is TaskStatus.CANCELLED for w in waiting)


def test_without_event_storage() -> None:
    oq = OmniQ(task_queue="memory://", worker="thread")

    @oq.task(name="dash:plain")
    def plain(x: int) -> int:
        return x

    with oq, oq.start_worker_sync(), TestClient(create_app(oq, TOKEN)) as c:
        h = plain.enqueue_sync(7)
        assert h.result_sync(timeout=15) == 7
        assert "Event storage is off" in c.get("/").text
        page = c.get(f"/tasks/{h.id}")
        assert page.status_code == 200 and ">7</pre>" in page.text
        assert "no timeline" in page.text


def test_no_open_redirect_and_no_cookie_for_a_wrong_token(env: Env) -> None:
    c = env.client
    r = c.post("/login", data={"token": TOKEN, "next": "https://evil.example/"},
               follow_redirects=False)  # fmt: skip
    assert r.status_code == 303 and r.headers["location"] == "http://testserver/"
    r = c.post("/act/pause-queue/q1", data={"token": TOKEN, "next": "//evil.example/x"},
               follow_redirects=False)  # fmt: skip
    assert r.headers["location"].startswith("http://testserver/?msg=")
    r = c.get("/login?next=/tasks")
    assert r.status_code == 200 and 'value="/tasks"' in r.text
    r = c.get("/tasks?token=wrong", follow_redirects=False)
    assert r.status_code == 200 and "set-cookie" not in r.headers


def _page_ids(html: str, ids: list[str]) -> list[str]:
    """The task ids of ``ids`` on a tasks page, in the order shown."""
    shown = [i for i in ids if f'data-task="{i}"' in html]
    return sorted(shown, key=lambda i: html.index(f'data-task="{i}"'))


def _link(html: str, which: str) -> str | None:
    """The href of the pager's ``newer``/``older`` link, unescaped, or None."""
    import html as html_lib
    import re

    m = re.search(rf'<a href="([^"]*)" rel="\w+" data-page-link="{which}"', html)
    return html_lib.unescape(m.group(1)) if m else None


def test_task_list_pages_keep_the_filters(env: Env) -> None:
    # the "slow" queue has no worker: its 120 tasks stay pending, oldest first
    handles = env.tasks["slow"].map_sync(range(120))
    newest = [h.id for h in handles][::-1]
    c = env.client
    filters = {"queue": "slow", "status": "pending", "limit": 50}
    r = c.get("/tasks", params=filters)
    assert r.status_code == 200, r.text
    assert _page_ids(r.text, newest) == newest[:50], "page 0: the 50 newest, newest first"
    assert "tasks 1&ndash;50 of 120" in r.text
    assert _link(r.text, "newer") is None, "the first page has no newer page"
    older = _link(r.text, "older")
    assert older is not None, "page 0 should link to older tasks"
    for kept in ("queue=slow", "status=pending", "limit=50", "page=1"):
        assert kept in older, f"the older link should keep {kept}: {older}"

    r = c.get("/tasks" + older)
    assert _page_ids(r.text, newest) == newest[50:100], "page 1: the next 50"
    assert "tasks 51&ndash;100 of 120" in r.text
    assert "page=0" in (_link(r.text, "newer") or ""), "page 1 links back to page 0"
    older = _link(r.text, "older")
    assert older is not None and "page=2" in older

    r = c.get("/tasks" + older)
    assert _page_ids(r.text, newest) == newest[100:], "page 2: the last 20"
    assert "tasks 101&ndash;120 of 120" in r.text
    assert _link(r.text, "older") is None, "the last page has no older link"
    assert "page=1" in (_link(r.text, "newer") or "")

    r = c.get("/tasks", params={**filters, "page": 7})
    assert r.status_code == 200 and _page_ids(r.text, newest) == [], "past the end: empty"

    # a name filter pages with a cursor into the unfiltered listing
    r = c.get("/tasks", params={"queue": "slow", "name": "dash:slow", "limit": 50})
    assert _page_ids(r.text, newest) == newest[:50]
    older = _link(r.text, "older")
    assert older is not None and "skip=50" in older and "name=dash%3Aslow" in older, older
    r = c.get("/tasks" + older)
    assert _page_ids(r.text, newest) == newest[50:100], "the second page of name matches"
    assert "skip=0" in (_link(r.text, "newer") or ""), "newest page link with a name filter"
    r = c.get("/tasks", params={"queue": "slow", "name": "no-such", "limit": 50})
    assert _page_ids(r.text, newest) == [] and _link(r.text, "older") is None
