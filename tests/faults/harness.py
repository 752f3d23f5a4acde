"""The backend harness of the fault suite (no tests here).

A :class:`Harness` is one backend's store for one test: a URL that worker subprocesses
and in-process clients share, the child processes started on it (stopped by PID when the
test ends, before the store goes away), and the backend-specific fault hooks:

* ``corrupt(task_id, kind)`` writes garbage into a stored task, bypassing the backend;
* ``pause(proc)`` SIGSTOPs a worker (SQLite: never while it holds the write lock, since
  a stopped lock holder blocks every process of an embedded database, by design);
* ``check_integrity()`` verifies the store after crashes;
* ``kill_server()`` / ``start_server()`` for backends with a server of their own.

Backends: :class:`SQLiteHarness` (a file in the test's tmp dir), :class:`NatsHarness`
(the shared server on 127.0.0.1:4222 with a per-test name prefix),
:class:`NatsPrivateHarness` (a nats-server of the test's own: free port, own store dir),
:class:`RedisHarness` (the shared server on 127.0.0.1:6379 with a per-test key prefix),
:class:`RedisPrivateHarness` (a redis-server of the test's own: free port, AOF dir),
:class:`FileHarness` (the file backend on a directory of the test's own),
:class:`MemoryHarness` (in-process tests only).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from omniq import OmniQ, TaskStatus

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.faults.fault_app:oq"

#: Readiness waits (a loaded 2-core machine): how long to poll before failing.
READY_TIMEOUT = 60.0
#: Waits for a whole run to finish.
RUN_TIMEOUT = 180.0


# --- waiting ---------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], object],
    *,
    what: str | Callable[[], str],
    timeout: float = READY_TIMEOUT,
    alive: Sequence[Proc] = (),
    interval: float = 0.05,
) -> None:
    """Poll ``predicate`` until true; fail naming ``what`` after ``timeout`` seconds, or
    at once when one of the ``alive`` processes has exited (with its output). A callable
    ``what`` is called at failure time (so it can describe the state then)."""

    def text() -> str:
        if not callable(what):
            return what
        try:
            return what()
        except Exception as e:  # describing must not hide the failure
            return f"<description failed: {type(e).__name__}: {e}>"

    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        for p in alive:
            if not p.running:
                raise AssertionError(
                    f"{p.name} exited (status {p.returncode}) while waiting for {text()}:\n"
                    f"{p.output()}"
                )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {text()}")
        time.sleep(interval)


# --- child processes -------------------------------------------------------------------


class Proc:
    """A child process whose output goes to a file; signalled and stopped by PID."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(
                cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )
        self.pid = self.popen.pid
        self.stopped = False

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def output(self, tail: int = 6000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text[-tail:]

    def signal(self, sig: int) -> None:
        if self.running:
            os.kill(self.pid, sig)
            if sig == signal.SIGSTOP:
                self.stopped = True
            elif sig == signal.SIGCONT:
                self.stopped = False

    def wait(self, timeout: float) -> int:
        """Wait for exit; fail with the output if it takes longer than ``timeout``."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} did not exit within {timeout:.0f} s:\n{self.output()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL (a stopped process dies too, without running again) and reap."""
        if self.running:
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(30)
        self.stopped = False


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child: this one without OMNIQ_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


# --- execution logs --------------------------------------------------------------------


class ExecLog:
    """Lines written by the fault app's tasks: ``start|end|run KEY PID TOKEN``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def entries(self) -> list[tuple[str, str, int, str]]:
        out: list[tuple[str, str, int, str]] = []
        for path in sorted(self.directory.glob("exec-*.log")):
            for line in path.read_text().splitlines():
                event, key, pid, token = line.split(" ")
                out.append((event, key, int(pid), token))
        return out

    def count(self, event: str) -> Counter[str]:
        """How many times each key logged ``event``."""
        return Counter(key for ev, key, _, _ in self.entries() if ev == event)

    def by_pid(self, event: str, pid: int) -> set[str]:
        return {key for ev, key, p, _ in self.entries() if ev == event and p == pid}


# --- harnesses -------------------------------------------------------------------------


class Harness:
    """One backend's store for one test, and the processes started on it."""

    name: ClassVar[str] = "base"
    #: Whether other processes can reach the store (worker subprocess tests need it).
    cross_process: ClassVar[bool] = True
    #: What ``corrupt`` can damage: "payload" (the task's encoded bytes) and, where the
    #: state and payload are one stored value, "record" (that whole value).
    corruption_kinds: ClassVar[tuple[str, ...]] = ()
    #: Whether the backend has a server this harness can kill and restart.
    can_restart_server: ClassVar[bool] = False

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.exec_dir = workdir / "exec"
        self.exec_dir.mkdir(exist_ok=True)
        self.procs: list[Proc] = []
        self._clients: list[OmniQ] = []
        self._n = 0

    # --- backend specifics (override) ---

    def url(self, *, lease: float | None = None) -> str:
        """The URL every process of the test uses (``lease`` for backends whose server
        side timers must match the worker's lease)."""
        raise NotImplementedError

    def max_payload(self) -> tuple[int | None, str]:
        """The largest task payload the backend stores, or None with the reason."""
        return None, f"{self.name} has no practical payload limit to exceed"

    def corrupt(self, task_id: str, kind: str) -> None:
        raise NotImplementedError(f"{self.name} cannot corrupt stored tasks")

    def pause(self, proc: Proc) -> None:
        """SIGSTOP ``proc``."""
        proc.signal(signal.SIGSTOP)

    def kill_mid_write(self, proc: Proc) -> bool:
        """SIGKILL ``proc``, inside one of its write transactions where the backend can
        tell; True when the kill is known to have landed inside one."""
        proc.signal(signal.SIGKILL)
        return False

    def check_integrity(self) -> None:
        """Fail if the store is damaged."""

    def kill_server(self) -> None:
        raise NotImplementedError(f"{self.name} has no server to kill")

    def start_server(self) -> None:
        raise NotImplementedError(f"{self.name} has no server to start")

    def _close_store(self) -> None:
        """Drop what the test stored (after every process and client is gone)."""

    # --- shared ---

    def client(self, *, lease: float | None = None, events: bool = False) -> OmniQ:
        """An in-process OmniQ on the store (closed with the harness)."""
        from tests.faults import fault_app

        oq = fault_app.build(self.url(lease=lease), events=events, worker="async")
        self._clients.append(oq)
        return oq

    def executions(self) -> ExecLog:
        return ExecLog(self.exec_dir)

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> Proc:
        self._n += 1
        proc = Proc(name, cmd, env, self.workdir / f"{self._n:02d}-{name}.log")
        self.procs.append(proc)
        return proc

    def worker(
        self,
        *args: str,
        lease: float | None = None,
        grace: float | None = None,
        events: bool = False,
        executor: str = "thread",
        concurrency: int = 4,
        name: str = "worker",
        env: dict[str, str] | None = None,
    ) -> Proc:
        """Start ``python -m omniq worker --app tests.faults.fault_app:oq`` on the store."""
        settings = {
            "FAULT_URL": self.url(lease=lease),
            "FAULT_LOG_DIR": str(self.exec_dir),
            "FAULT_EVENTS": "1" if events else "0",
            "FAULT_WORKER": executor,
            "OMNIQ_LOG_LEVEL": "INFO",
        }
        if lease is not None:
            settings["OMNIQ_LEASE_SECONDS"] = str(lease)
        if grace is not None:
            settings["OMNIQ_SHUTDOWN_GRACE"] = str(grace)
        settings.update(env or {})
        cmd = [
            sys.executable, "-m", "omniq", "worker", "--app", APP,
            "--worker", executor, "--concurrency", str(concurrency), *args,
        ]  # fmt: skip
        return self._spawn(name, cmd, child_env(**settings))

    def producer(
        self,
        key_prefix: str,
        count: int,
        batch: int = 500,
        *,
        lease: float | None = None,
        pause: float = 0.0,
    ) -> Proc:
        """Start ``python -m tests.faults.producer`` enqueueing ``count`` count tasks,
        ``batch`` at a time with ``pause`` seconds between batches."""
        cmd = [sys.executable, "-m", "tests.faults.producer", key_prefix, str(count), str(batch)]
        env = child_env(
            FAULT_URL=self.url(lease=lease),
            FAULT_LOG_DIR=str(self.exec_dir),
            FAULT_PRODUCER_PAUSE=str(pause),
        )
        return self._spawn(f"producer-{key_prefix}", cmd, env)

    def close(self) -> None:
        """Stop every child by PID, close clients, then drop the store."""
        for p in self.procs:
            p.kill()
        for oq in self._clients:
            try:
                oq.close_sync()
            except Exception:  # the server may be gone on purpose
                pass
        self._close_store()


class MemoryHarness(Harness):
    """The in-process memory backend (a named store private to the test)."""

    name = "memory"
    cross_process = False

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self._url = f"memory://faults-{uuid.uuid4().hex[:10]}"

    def url(self, *, lease: float | None = None) -> str:
        return self._url


class FileHarness(Harness):
    """The file backend on a directory of the test's own (claims by rename)."""

    name = "file"
    corruption_kinds = ("payload",)

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.root = workdir / "store"

    def url(self, *, lease: float | None = None) -> str:
        return f"file://{self.root}"

    def max_payload(self) -> tuple[int | None, str]:
        return None, "a task record is a file: no practical payload limit to exceed"

    def corrupt(self, task_id: str, kind: str) -> None:
        assert kind == "payload", kind
        record = self.root / "tasks" / task_id
        assert record.exists(), f"task {task_id} has no record {record}"
        record.write_bytes(b"\x00corrupt payload\xff")

    def check_integrity(self) -> None:
        """Every task record has exactly one token, and every token a record."""
        tokens: Counter[str] = Counter()
        for qdir in (self.root / "q").glob("*"):
            for state in qdir.iterdir():
                for name in os.listdir(state):
                    if state.name in ("ready", "delayed"):
                        tid = name.split("-", 2)[2].rpartition("@")[0]
                    elif state.name in ("running", "finishing"):
                        tid = name.rpartition("@")[0].rpartition("@")[0]
                    elif state.name == "done":
                        tid = name.split("-", 1)[1].rpartition("@")[0]
                    else:
                        tid = name
                    tokens[tid] += 1
        records = set(os.listdir(self.root / "tasks")) if (self.root / "tasks").exists() else set()
        twice = [t for t, n in tokens.items() if n > 1]
        assert not twice, f"{len(twice)} tasks have two tokens: {twice[:5]}"
        assert set(tokens) == records, (
            f"tokens without record: {sorted(set(tokens) - records)[:5]}; "
            f"records without token: {sorted(records - set(tokens))[:5]}"
        )


class SQLiteHarness(Harness):
    """An SQLite file of the test's own."""

    name = "sqlite"
    corruption_kinds = ("payload",)

    def __init__(self, workdir: Path, path: Path | None = None) -> None:
        super().__init__(workdir)
        self.path = path or workdir / "faults.db"

    def url(self, *, lease: float | None = None) -> str:
        # bulk enqueues of 4 or more are staged (the default is 64), so the tests' small
        # map() calls also take the staged-claim path
        return f"sqlite:///{self.path}?stage_min=4"

    def max_payload(self) -> tuple[int | None, str]:
        return None, (
            "SQLite stores blobs up to SQLITE_MAX_LENGTH (1e9 bytes by default): no "
            "practical oversized payload to test"
        )

    def connect(self, timeout: float = 30.0) -> sqlite3.Connection:
        """A plain sqlite3 connection to the file (autocommit)."""
        return sqlite3.connect(self.path, timeout=timeout, isolation_level=None)

    def corrupt(self, task_id: str, kind: str) -> None:
        assert kind == "payload", kind
        conn = self.connect()
        try:
            cur = conn.execute(
                "UPDATE tasks SET data = ? WHERE id = ?", (b"\x00corrupt payload\xff", task_id)
            )
            assert cur.rowcount == 1, f"task {task_id} has no row in `tasks` (staged?)"
        finally:
            conn.close()

    def _write_lock_free(self) -> bool:
        conn = self.connect(timeout=0.0)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            conn.close()

    def pause(self, proc: Proc) -> None:
        for _ in range(200):
            proc.signal(signal.SIGSTOP)
            if self._write_lock_free():
                return
            proc.signal(signal.SIGCONT)  # it was inside a write transaction: let it end
            time.sleep(0.01)
        raise AssertionError(f"{proc.name} held the SQLite write lock at each of 200 stops")

    def kill_mid_write(self, proc: Proc) -> bool:
        """Stop ``proc`` until it is caught holding the write lock (inside a write
        transaction), then SIGKILL it there; plain SIGKILL after 500 misses."""
        for _ in range(500):
            proc.signal(signal.SIGSTOP)
            if not self._write_lock_free():
                proc.kill()
                return True
            proc.signal(signal.SIGCONT)
            time.sleep(0.002)
        proc.kill()
        return False

    def check_integrity(self) -> None:
        conn = self.connect()
        try:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            conn.close()
        assert rows == [("ok",)], f"SQLite integrity_check of {self.path}: {rows}"


class NatsHarness(Harness):
    """The shared NATS server, with a name prefix of the test's own (dropped after)."""

    name = "nats"
    corruption_kinds = ("payload", "record")

    def __init__(self, workdir: Path, base_url: str) -> None:
        from tests.backends import test_nats_support as support

        super().__init__(workdir)
        self.base_url = base_url
        self.prefix = support.new_prefix()

    def url(self, *, lease: float | None = None) -> str:
        options = {
            "name_prefix": self.prefix,
            "reconnect_time_wait": "0.2",
            "max_reconnect_attempts": "-1",
            "retry_window": "60",
        }
        if lease is not None:
            # the consumers' ack_wait is the redelivery timer of tickets fetched ahead by
            # a worker that died: keep it as short as the lease
            options["ack_wait"] = str(lease)
        return f"{self.base_url}?" + "&".join(f"{k}={v}" for k, v in options.items())

    def _host_port(self) -> tuple[str, int]:
        hostport = self.base_url.split("://", 1)[1]
        host, port = hostport.rsplit(":", 1)
        return host, int(port)

    def max_payload(self) -> tuple[int | None, str]:
        host, port = self._host_port()
        with socket.create_connection((host, port), timeout=5) as s:
            s.settimeout(5)
            line = s.recv(65536).split(b"\r\n", 1)[0]
        assert line.startswith(b"INFO "), line
        return int(json.loads(line[5:])["max_payload"]), ""

    def corrupt(self, task_id: str, kind: str) -> None:
        asyncio.run(self._corrupt(task_id, kind))

    async def _corrupt(self, task_id: str, kind: str) -> None:
        import nats

        from omniq_nats._config import NATSSettings

        try:
            from omniq_nats._claim import task_key

            key = task_key(task_id)
        except ImportError:  # moved: the documented layout is t.<id>
            key = f"t.{task_id}"
        bucket = NATSSettings.from_url(self.url()).tasks_bucket_name
        subject = f"$KV.{bucket}.{key}"
        nc = await nats.connect(self.base_url, connect_timeout=5, max_reconnect_attempts=1)
        try:
            js = nc.jetstream()
            if kind == "record":
                data = b"\x00 not a task record \xff"
            else:
                assert kind == "payload", kind
                from omniq_nats._records import decode_record, encode_record

                current = await js.get_last_msg(f"KV_{bucket}", subject)
                rec = decode_record(bytes(current.data or b""))
                data = encode_record(rec.but(body=b"\x00corrupt payload\xff"))
            await js.publish(subject, data)
        finally:
            await nc.close()

    def _close_store(self) -> None:
        from tests.backends import test_nats_support as support

        try:
            asyncio.run(support.drop_namespace(self.prefix, self.base_url))
        except Exception:
            pass


class NatsPrivateHarness(NatsHarness):
    """A nats-server of the test's own (free port, own store dir), killed and restarted
    by PID on the same port and store."""

    can_restart_server = True

    def __init__(self, workdir: Path) -> None:
        from tests.backends import test_nats_support as support

        self.server = support.NatsServer(workdir / "nats" / "store").start()
        super().__init__(workdir, self.server.url)

    def kill_server(self) -> None:
        self.server.stop(signal.SIGKILL)

    def start_server(self) -> None:
        self.server.start()

    def _close_store(self) -> None:
        self.server.stop()


class RedisHarness(Harness):
    """The shared Redis server, with a key prefix of the test's own (its keys deleted
    after, by bounded SCAN)."""

    name = "redis"
    corruption_kinds = ("payload",)

    def __init__(self, workdir: Path, base_url: str) -> None:
        from tests.backends import test_redis_support as support

        super().__init__(workdir)
        self.base_url = base_url
        self.prefix = support.new_prefix()

    def url(self, *, lease: float | None = None) -> str:
        return f"{self.base_url}?prefix={self.prefix}"

    def max_payload(self) -> tuple[int | None, str]:
        return None, (
            "Redis strings hold up to proto-max-bulk-len (512 MB by default): no practical "
            "oversized payload to test"
        )

    def _redis(self) -> Any:
        import redis

        return redis.Redis.from_url(self.base_url)

    def corrupt(self, task_id: str, kind: str) -> None:
        assert kind == "payload", kind
        client = self._redis()
        try:
            key = f"{{{self.prefix}}}:t:{task_id}"
            assert client.exists(key), f"task {task_id} has no hash {key}"
            client.hset(key, "d", b"\x00corrupt payload\xff")
        finally:
            client.close()

    def check_integrity(self) -> None:
        """The O(1) counters agree with the stored tasks, and every queued task is in
        exactly one of its queue's ready set or the delayed set."""
        client = self._redis()
        p = f"{{{self.prefix}}}:"
        try:
            actual: Counter[str] = Counter()
            for key in client.scan_iter(match=f"{p}t:*", count=500):
                q, st, m = client.hmget(key, "q", "s", "m")
                actual[f"{q.decode()}\t{st.decode()}"] += 1
                tid = key.decode()[len(p) + 2 :]
                if st == b"pending":
                    in_ready = client.zscore(f"{p}q:{q.decode()}", m) is not None
                    in_delayed = client.zscore(f"{p}delayed", tid) is not None
                    assert in_ready != in_delayed, f"pending task {tid} is not queued once"
            counts = {k.decode(): int(v) for k, v in client.hgetall(f"{p}counts").items() if int(v)}
            assert counts == dict(actual), f"counters {counts} != stored tasks {dict(actual)}"
        finally:
            client.close()

    def _close_store(self) -> None:
        from tests.backends import test_redis_support as support

        try:
            support.drop_prefix(self.prefix, self.base_url)
        except Exception:
            pass


class RedisPrivateHarness(RedisHarness):
    """A redis-server of the test's own (free port, AOF with ``appendfsync always`` in
    its own directory), killed with SIGKILL and restarted by PID on the same port."""

    can_restart_server = True

    def __init__(self, workdir: Path) -> None:
        from tests.backends import test_redis_support as support

        self.server = support.PrivateRedis(workdir / "redis-data")
        self.server.start()
        super().__init__(workdir, self.server.url)

    def kill_server(self) -> None:
        self.server.kill()

    def start_server(self) -> None:
        self.server.start()

    def _close_store(self) -> None:
        self.server.stop()


class PostgresHarness(Harness):
    """The shared PostgreSQL server, with a schema of the test's own (dropped after)."""

    name = "postgres"
    corruption_kinds = ("payload",)

    def __init__(self, workdir: Path, base_url: str) -> None:
        super().__init__(workdir)
        self.base_url = base_url
        self.schema = f"faults_{uuid.uuid4().hex[:12]}"

    def url(self, *, lease: float | None = None) -> str:
        sep = "&" if "?" in self.base_url else "?"
        return f"{self.base_url}{sep}schema={self.schema}&poll_interval=0.5"

    def max_payload(self) -> tuple[int | None, str]:
        return None, "PostgreSQL bytea holds up to 1 GB: no practical oversized payload to test"

    def _sql(self, query: str, *args: Any) -> list[Any]:
        import asyncpg  # type: ignore[import-untyped]

        async def run() -> list[Any]:
            conn = await asyncpg.connect(self.base_url, timeout=10)
            try:
                await conn.execute(f'SET search_path TO "{self.schema}"')
                return list(await conn.fetch(query, *args))
            finally:
                await conn.close()

        return asyncio.run(run())

    def corrupt(self, task_id: str, kind: str) -> None:
        assert kind == "payload", kind
        rows = self._sql(
            "UPDATE tasks SET data = $1 WHERE id = $2 RETURNING id",
            b"\x00corrupt payload\xff",
            task_id,
        )
        assert len(rows) == 1, f"task {task_id} has no row in `tasks`"

    def kill_mid_write(self, proc: Proc) -> bool:
        """Stop ``proc`` until one of its connections (``application_name`` is
        ``omniq:<pid>``) is inside a transaction, then SIGKILL it there; plain SIGKILL
        after 300 misses."""
        import asyncpg

        async def run() -> bool:
            conn = await asyncpg.connect(self.base_url, timeout=10)
            try:
                for _ in range(300):
                    proc.signal(signal.SIGSTOP)
                    busy = await conn.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
                        "AND xact_start IS NOT NULL",
                        f"omniq:{proc.pid}",
                    )
                    if busy:
                        proc.kill()
                        return True
                    proc.signal(signal.SIGCONT)
                    await asyncio.sleep(0.002)
            finally:
                await conn.close()
            proc.kill()
            return False

        return asyncio.run(run())

    def check_integrity(self) -> None:
        bad = self._sql(
            "SELECT id, status FROM tasks WHERE (status = 'running' AND lease_until IS NULL) "
            "OR (status NOT IN ('pending', 'waiting', 'running', 'success', 'failed', "
            "'cancelled', 'expired')) LIMIT 10"
        )
        assert not bad, f"PostgreSQL schema {self.schema}: inconsistent tasks {bad}"

    def _close_store(self) -> None:
        try:
            self._sql(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        except Exception:
            pass


class PostgresPrivateHarness(PostgresHarness):
    """A PostgreSQL server of the test's own (``initdb`` in a temporary directory, a
    free port), killed and restarted by PID on the same port and data directory."""

    can_restart_server = True
    BIN = Path(os.environ.get("POSTGRES_BIN_DIR", "/usr/lib/postgresql/15/bin"))

    def __init__(self, workdir: Path) -> None:
        import shutil
        import tempfile

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        # the server runs as `postgres` (it refuses root): a data dir that user owns
        self.datadir = Path(tempfile.mkdtemp(prefix="omniq-pg-"))
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(self.datadir, self.user, self.user)
        self.server: subprocess.Popen[bytes] | None = None
        self.server_log = workdir.parent / f"postgres-{self.port}.log"
        subprocess.run(
            [str(self.BIN / "initdb"), "-D", str(self.datadir), "-A", "trust", "-U", "postgres",
             "--no-sync", "-E", "UTF8"],
            check=True, capture_output=True, user=self.user, group=self.user,
        )  # fmt: skip
        super().__init__(workdir, f"postgresql://postgres@127.0.0.1:{self.port}/postgres")
        self.start_server()

    def start_server(self) -> None:
        import asyncpg

        deadline = time.monotonic() + 30
        while True:
            with open(self.server_log, "ab") as out:
                self.server = subprocess.Popen(
                    [str(self.BIN / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
                     "-k", str(self.datadir), "-c", "listen_addresses=127.0.0.1"],
                    stdout=out, stderr=subprocess.STDOUT, user=self.user, group=self.user,
                )  # fmt: skip

            async def ready() -> bool:
                try:
                    conn = await asyncpg.connect(self.base_url, timeout=2)
                except Exception:
                    return False
                await conn.close()
                return True

            while self.server.poll() is None and time.monotonic() < deadline:
                if asyncio.run(ready()):
                    return
                time.sleep(0.1)
            if time.monotonic() >= deadline:
                raise AssertionError(f"PostgreSQL on port {self.port} did not start")
            time.sleep(0.3)  # it exited (old backends still hold shared memory): retry

    def kill_server(self, sig: int = signal.SIGKILL) -> None:
        if self.server is not None and self.server.poll() is None:
            os.kill(self.server.pid, sig)
            self.server.wait(30)
        self.server = None

    def _close_store(self) -> None:
        import shutil

        self.kill_server(signal.SIGQUIT)  # immediate shutdown of the test's own server
        shutil.rmtree(self.datadir, ignore_errors=True)


# --- results ---------------------------------------------------------------------------


def statuses(oq: OmniQ, ids: Iterable[str]) -> Counter[TaskStatus | None]:
    """How many of ``ids`` are in each status (None: unknown)."""
    return Counter(oq.status_sync(i) for i in ids)


def all_final(oq: OmniQ, ids: Sequence[str]) -> bool:
    """True when every task of ``ids`` ended."""
    return all((st is not None and st.is_final) for st in (oq.status_sync(i) for i in ids))


def describe(oq: OmniQ, ids: Sequence[str]) -> str:
    """Statuses of ``ids`` for assertion messages."""
    return ", ".join(f"{st}: {n}" for st, n in statuses(oq, ids).items())


def worker_pid(worker_id: str | None) -> int | None:
    """The PID in a worker id (``host:pid:suffix``)."""
    if not worker_id:
        return None
    parts = worker_id.split(":")
    return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else None


def as_dict(value: Any) -> dict[str, Any]:
    assert isinstance(value, dict), f"expected the task's dict result, got {value!r}"
    return value
