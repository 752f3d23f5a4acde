"""Workers: one async claim loop (AsyncWorker) and the executors it runs tasks on."""

from omniq.workers.executors import AsyncExecutor, Executor, GeventExecutor, ThreadExecutor
from omniq.workers.process_pool import ProcessExecutor
from omniq.workers.runner import AsyncWorkerHandle, WorkerHandle, make_executor, make_worker
from omniq.workers.worker import AsyncWorker

__all__ = [
    "AsyncExecutor",
    "AsyncWorker",
    "AsyncWorkerHandle",
    "Executor",
    "GeventExecutor",
    "ProcessExecutor",
    "ThreadExecutor",
    "WorkerHandle",
    "make_executor",
    "make_worker",
]
