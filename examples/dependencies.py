"""Dependencies: a chain, a diamond, and a failed dependency cancelling its dependents.

Run: ``python examples/dependencies.py``. A task with ``depends_on`` waits (status
``waiting``) until every task it depends on succeeded; if one fails (for good) or is
cancelled, the dependent is cancelled too, and so on down the graph.
"""

from __future__ import annotations

from omniq import OmniQ, TaskCancelledError

oq = OmniQ()


@oq.task
def extract() -> list[int]:
    """The first step."""
    return [1, 2, 3]


@oq.task
def transform(factor: int) -> int:
    """A middle step (the example passes values explicitly: results are not piped)."""
    return sum([1, 2, 3]) * factor


@oq.task
def load(label: str) -> str:
    """The last step."""
    return f"loaded {label}"


@oq.task
def broken() -> None:
    """Always fails."""
    raise RuntimeError("upstream is down")


def main() -> None:
    """Enqueue the graphs first, then run a worker and read the outcomes."""
    with oq:
        # a diamond: a -> (b, c) -> d
        a = extract.enqueue_sync()
        b = transform.options(depends_on=[a]).enqueue_sync(10)
        c = transform.options(depends_on=[a]).enqueue_sync(100)
        d = load.options(depends_on=[b, c]).enqueue_sync("diamond")
        print("before any worker, d is", d.status_sync().value)

        # a chain whose first link fails: its dependents never run
        x = broken.enqueue_sync()
        y = load.options(depends_on=[x]).enqueue_sync("never")

        with oq.start_worker_sync():
            print("b, c:", b.result_sync(timeout=10), c.result_sync(timeout=10))
            print("d:", d.result_sync(timeout=10))
            try:
                y.result_sync(timeout=10)
            except TaskCancelledError as e:
                print("y cancelled because its dependency failed:", e.error)


if __name__ == "__main__":
    main()
