"""The blocking API: enqueue, wait for results, retry, fail, re-queue.

Run: ``python examples/sync.py`` (stores in ``.omniq/omniq.db``, the embedded default;
any ``OMNIQ_*`` setting picks another backend, e.g. ``OMNIQ_TASK_QUEUE_TYPE=memory``).
"""

from __future__ import annotations

from omniq import OmniQ, TaskFailedError

oq = OmniQ()  # settings from OMNIQ_* variables, the OMNIQ_CONFIG YAML file, defaults

attempts: dict[str, int] = {}


@oq.task
def add(x: int, y: int) -> int:
    """A plain function, run by a worker."""
    return x + y


@oq.task(retries=2, retry_delay=0.05)
def flaky(key: str) -> str:
    """Fails on its first run; the retry (after a short backoff) succeeds."""
    attempts[key] = attempts.get(key, 0) + 1
    if attempts[key] == 1:
        raise ConnectionError("first run fails")
    return f"{key} ok after {attempts[key]} runs"


@oq.task
def divide(x: float, y: float) -> float:
    """Fails for good when y is 0 (no retries)."""
    return x / y


def main() -> None:
    """Start a worker in this process, enqueue, and print what happened."""
    with oq, oq.start_worker_sync(queues=["default"]):
        h = add.enqueue_sync(1, 2)  # TaskHandle[int]
        print("add:", h.result_sync(timeout=10))

        print("flaky:", flaky.enqueue_sync("job-1").result_sync(timeout=10))

        bad = divide.enqueue_sync(1, 0)
        try:
            bad.result_sync(timeout=10)
        except TaskFailedError as e:
            print("divide failed:", e.error)

        # a failed task can run again (here with arguments that still fail: the same
        # call, with a fresh retry budget); `omniq failed requeue ID` does the same
        again = oq.requeue_sync(bad.id)
        print("requeued:", again.id == bad.id, "attempt so far:", again.attempt)
        try:
            bad.result_sync(timeout=10)
        except TaskFailedError:
            print("divide failed again, as expected")

        print("status of add:", h.status_sync().value)


if __name__ == "__main__":
    main()
