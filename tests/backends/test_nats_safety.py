"""Safety regressions of the engine on NATS JetStream (shared server on 127.0.0.1:4222).

The backend-independent scenarios of ``tests/core/test_safety.py`` (from
:mod:`tests.core.safety_app`) run here with every component on NATS, plus what only NATS
has: a corrupt record in the tasks KV bucket, found at claim time, gets a FAILED result;
an unknown option in the URL query is a ConfigurationError.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from omniq import OmniQ
from omniq.errors import ConfigurationError
from omniq.sync import run_sync
from tests.backends import test_nats_support as support
from tests.core import safety_app as s


@pytest.fixture
def prefix() -> Iterator[str]:
    support.require_nats()
    p = support.new_prefix()
    yield p
    asyncio.run(support.drop_namespace(p))


@pytest.fixture
def make_app(prefix: str) -> Iterator[s.MakeApp]:
    """Builds connected apps whose components all live on NATS under ``prefix``."""
    apps: list[OmniQ] = []

    def make(**settings: Any) -> OmniQ:
        component = {"type": "nats", "url": support.URL, "options": {"name_prefix": prefix}}
        oq = OmniQ(task_queue=component, worker="thread", max_workers=4, **settings)
        oq.connect_sync()
        apps.append(oq)
        return oq

    yield make
    for oq in reversed(apps):
        oq.close_sync()


@pytest.fixture
def oq(make_app: s.MakeApp) -> OmniQ:
    return make_app()


# --- 1. trust boundary ---------------------------------------------------------------------


def test_unregistered_names_and_records_are_refused_not_imported(
    oq: OmniQ, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s.check_unregistered_names_are_refused(oq, tmp_path, monkeypatch)


def test_unregistered_callbacks_are_refused_not_imported(
    oq: OmniQ, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s.check_unregistered_callbacks_are_refused(oq, tmp_path, monkeypatch)


def test_import_allowlist_admits_listed_modules_only(
    make_app: s.MakeApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s.check_allowlist_admits_listed_modules_only(make_app, tmp_path, monkeypatch, via="argument")


def test_plain_callable_enqueued_in_process_is_registered_and_runs(oq: OmniQ) -> None:
    s.check_plain_callable_enqueued_here_runs(oq)


# --- 2. values nested too deep -------------------------------------------------------------


def test_too_deep_argument_is_refused_at_enqueue(oq: OmniQ) -> None:
    s.check_too_deep_argument_is_refused_at_enqueue(oq)


def test_too_deep_result_fails_its_task_not_the_worker(oq: OmniQ) -> None:
    s.check_too_deep_result_fails_its_task_only(oq)


# --- 5. stopping running tasks after the grace period --------------------------------------


def test_process_child_is_killed_after_the_grace_period(
    oq: OmniQ, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s.check_process_task_killed_after_grace(oq, tmp_path, monkeypatch)


def test_thread_task_is_reported_unstoppable_not_handed_back(
    oq: OmniQ, caplog: pytest.LogCaptureFixture
) -> None:
    s.check_thread_task_reported_unstoppable(oq, caplog)


# --- 6. exceptions that cannot be printed --------------------------------------------------


def test_exception_whose_str_raises_fails_the_task(oq: OmniQ) -> None:
    s.check_unprintable_exception_fails_the_task(oq)


# --- 7. tasks failed at claim time ---------------------------------------------------------


async def _damage_record(oq: OmniQ, task_id: str, damage: str) -> None:
    """Overwrite the task's record in the tasks KV bucket, as a foreign writer would."""
    import nats

    from omniq_nats._claim import task_key
    from omniq_nats._records import decode_record, encode_record

    bucket = oq.async_.task_queue.settings.tasks_bucket_name
    nc = await nats.connect(support.URL, connect_timeout=2, max_reconnect_attempts=1)
    try:
        kv = await nc.jetstream().key_value(bucket)
        key = task_key(task_id)
        entry = await kv.get(key)
        assert entry.value, f"task {task_id} has no record in bucket {bucket}"
        if damage == "record":
            value = b"\x00\xff not a task record"
        else:  # a sound record whose task body cannot be decoded
            rec = decode_record(entry.value)
            value = encode_record(rec.but(body=b"\x01\xc1 garbage, not msgpack"))
        await kv.put(key, value)
    finally:
        await nc.close()


@pytest.mark.parametrize("damage", ["record", "body"])
def test_task_with_corrupt_record_gets_a_failed_result(
    damage: str, oq: OmniQ, caplog: pytest.LogCaptureFixture
) -> None:
    add = oq.task(s.add_one)
    damaged = add.enqueue_sync(0)
    good = add.enqueue_sync(1)
    asyncio.run(_damage_record(oq, damaged.id, damage))
    s.check_claim_time_failure_is_reported(oq, damaged, good, caplog)


# --- 8. URL options ------------------------------------------------------------------------


def test_unknown_url_option_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="bogus_opt") as in_code:
        OmniQ(task_queue={"type": "nats", "url": support.URL, "options": {"bogus_opt": 1}})
    # the same option in the URL query: the same error, not a KeyError
    with pytest.raises(ConfigurationError, match="bogus_opt") as in_url:
        OmniQ(task_queue=f"{support.URL}?bogus_opt=1")
    assert type(in_url.value) is type(in_code.value)
    with pytest.raises(ConfigurationError, match="bogus_opt"):
        OmniQ(task_queue=f"{support.URL}?name_prefix=x&bogus_opt=1&ack_wait=5")


# --- foreign keys in the index bucket ---------------------------------------------------------


def test_a_foreign_key_in_the_index_bucket_breaks_no_listing(oq: OmniQ) -> None:
    """Keys of the index bucket that encode_token cannot have written (``=`` + not hex,
    ``=`` + hex of bytes that are not UTF-8), under the prefixes OmniQ lists: paused
    queues, workers' pauses and the other listings still work, and pausing a real
    queue still does."""

    async def plant() -> None:
        st = await oq.async_.task_queue._state()
        for key in ("p.=zz", "p.=c3", "x.=zz", "d.=zz.=c3"):
            await st.index.put(key, b"1")

    run_sync(plant)
    paused = oq.paused_queues_sync()
    assert "default" not in paused, paused
    oq.pause_queue_sync("default")
    assert "default" in oq.paused_queues_sync()
    oq.resume_queue_sync("default")
    assert "default" not in oq.paused_queues_sync()
    assert isinstance(oq.list_workers_sync(), list)
