"""The dashboard in a real browser: Debian's chromium, headless, driven by Playwright,
against the dashboard served by uvicorn over an SQLite app with a running worker.
Screenshots go to the test's tmp dir."""

from __future__ import annotations

import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from omniq import OmniQ
from omniq.models import ScheduleState, TaskStatus

from .conftest import TOKEN, make_app, register, wait_until

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (uv sync --all-packages)"
)
uvicorn = pytest.importorskip("uvicorn", reason="the dashboard extra (uvicorn) is not installed")

CHROMIUM = os.environ.get("OMNIQ_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(
        f"no chromium at {CHROMIUM} (apt-get install chromium, or set OMNIQ_CHROMIUM)",
        allow_module_level=True,
    )

from omniq.dashboard import create_app  # noqa: E402


class Served:
    """The dashboard app served by uvicorn in a thread, on a free loopback port."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> Served:
        self.thread.start()
        wait_until(lambda: self.server.started, what="uvicorn to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture(params=["sqlite", "nats"])
def served(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Any, Served, dict[str, Any], dict[str, bool]]]:
    flaky = {"fail": True}
    prefix = None
    if request.param == "nats":
        from omniq.sync import run_sync
        from tests.backends import test_nats_support as nats_support

        nats_support.require_nats()
        prefix = nats_support.new_prefix()
        url = {"type": "nats", "url": nats_support.URL, "name_prefix": prefix}
        oq = OmniQ(task_queue=url, event_storage=url, worker="thread")
        request.addfinalizer(lambda: run_sync(nats_support.drop_namespace, prefix))
    else:
        oq = make_app("sqlite", tmp_path)
    tasks = register(oq, flaky)
    with (
        oq,
        oq.start_worker_sync(queues=["default"], concurrency=2),
        Served(create_app(oq, token=TOKEN)) as server,
    ):
        yield oq, server, tasks, flaky


def test_dashboard_in_chromium(served: Any, tmp_path: Path) -> None:
    oq, server, tasks, flaky = served
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            # the token in the address sets the cookie and is dropped from the address
            page.goto(server.url + "?token=" + TOKEN)
            assert "token" not in page.url
            page.wait_for_selector('tr[data-queue="default"]')
            page.screenshot(path=str(shots / "1-overview.png"), full_page=True)

            # a task appears live on the task list (no reload: the event stream refreshes)
            page.goto(server.url + "tasks")
            page.wait_for_selector("#live-state")
            h = tasks["add"].enqueue_sync(20, 22)
            row = page.wait_for_selector(f'tr[data-task="{h.id}"]')
            assert row is not None
            page.screenshot(path=str(shots / "2-task-appeared.png"), full_page=True)

            # its page shows the result
            assert h.result_sync(timeout=15) == 42
            page.click(f'tr[data-task="{h.id}"] a')
            page.wait_for_selector("#result-value")
            assert page.inner_text("#result-value").strip() == "42"
            page.screenshot(path=str(shots / "3-task-result.png"), full_page=True)

            # a failed task is retried from the UI and succeeds (the page updates live)
            bad = tasks["flaky"].enqueue_sync("ui")
            wait_until(lambda: oq.status_sync(bad.id) is TaskStatus.FAILED, what="the task to fail")
            page.goto(server.url + f"tasks/{bad.id}")
            assert "RuntimeError" in page.inner_text("#result")
            page.screenshot(path=str(shots / "4-task-failed.png"), full_page=True)
            flaky["fail"] = False
            page.click('button[data-action="requeue"]')
            page.wait_for_selector('#task-status:has-text("success")')
            assert bad.result_sync(timeout=15) == "ui ok"
            page.wait_for_selector("#result-value")
            assert "ui ok" in page.inner_text("#result-value")
            page.screenshot(path=str(shots / "5-task-retried.png"), full_page=True)

            # pausing a schedule from the UI
            sid = oq.schedule_sync(tasks["add"], args=(1, 1), interval=3600)
            page.goto(server.url + "schedules")
            page.click(f'tr[data-schedule="{sid}"] button[data-action="pause-schedule"]')
            page.wait_for_selector(f'tr[data-schedule="{sid}"][data-state="paused"]')
            assert oq.get_schedule_sync(sid).state is ScheduleState.PAUSED
            page.screenshot(path=str(shots / "6-schedule-paused.png"), full_page=True)

            # a browser without the token can look (loopback) but not act
            stranger = browser.new_context().new_page()
            stranger.goto(server.url)
            with stranger.expect_response(lambda r: "/act/" in r.url) as refused:
                stranger.click('tr[data-queue="default"] button[data-action="pause-queue"]')
            assert refused.value.status == 403
            assert oq.paused_queues_sync() == set(), "a request without the token paused"
            stranger.screenshot(path=str(shots / "7-refused.png"), full_page=True)
        finally:
            browser.close()
    assert len(list(shots.glob("*.png"))) == 7
