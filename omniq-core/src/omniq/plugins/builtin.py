"""Core's own plugin: registers the built-ins through the same hooks third parties use."""

from __future__ import annotations

from omniq.plugins.hookspecs import hookimpl
from omniq.plugins.specs import BackendSpec, WorkerSpec


@hookimpl
def omniq_backends() -> list[BackendSpec]:
    """The in-process memory backend."""
    return [
        BackendSpec.conventional(
            "memory",
            "omniq.storage.memory",
            "Memory",
            bundle=False,
            schemes=("memory",),
            default_url="memory://",
            package="omniq-core",
            description="in-process, for tests and single-process apps",
        )
    ]


@hookimpl
def omniq_worker_types() -> list[WorkerSpec]:
    """The built-in executors."""
    return [
        WorkerSpec(
            name="async",
            factory="omniq.workers.executors:AsyncExecutor",
            description="coroutines on the loop, sync functions in threads",
        ),
        WorkerSpec(
            name="thread",
            factory="omniq.workers.executors:ThreadExecutor",
            description="a thread pool",
        ),
        WorkerSpec(
            name="process",
            factory="omniq.workers.process_pool:ProcessExecutor",
            description="child processes; timed-out tasks are killed",
        ),
        WorkerSpec(
            name="gevent",
            factory="omniq.workers.executors:GeventExecutor",
            description="greenlets (extra: omniq-core[gevent])",
        ),
    ]
