"""Dependency checks made before a task is stored (unknown ids, cycles, self-dependencies)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from omniq.errors import DependencyCycleError, TaskNotFoundError
from omniq.models import Task


async def check_dependencies(
    tasks: Iterable[Task], lookup: Callable[[str], Awaitable[Task | None]], max_nodes: int = 10_000
) -> None:
    """Raise DependencyCycleError if any of ``tasks`` would depend on itself, and
    TaskNotFoundError if one depends on a task that does not exist (it would wait
    forever).

    ``tasks`` are about to be enqueued together; ``lookup`` reads stored tasks. A new
    task with a fresh id cannot close a cycle through stored tasks unless one of them
    already names it, which is what this walk finds.
    """
    batch = {t.id: t for t in tasks}
    for t in batch.values():
        if t.id in t.depends_on:
            raise DependencyCycleError(f"task {t.id} ({t.func}) depends on itself", task_id=t.id)
    for start in batch.values():
        seen: set[str] = set()
        stack = list(start.depends_on)
        while stack:
            dep = stack.pop()
            if dep == start.id:
                raise DependencyCycleError(
                    f"enqueueing task {start.id} ({start.func}) would create a dependency cycle",
                    task_id=start.id,
                )
            if dep in seen or len(seen) > max_nodes:
                continue
            seen.add(dep)
            node = batch.get(dep) or await lookup(dep)
            if node is not None:
                stack.extend(node.depends_on)
            elif dep in start.depends_on:
                raise TaskNotFoundError(
                    f"task {start.id} ({start.func}) depends on task {dep}, which does not "
                    "exist (never enqueued, or already purged): enqueue the dependency "
                    "first and pass its handle or id in depends_on",
                    task_id=start.id,
                )
