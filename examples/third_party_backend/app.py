"""A tiny app to try the acme backend with: ``OMNIQ_TASK_QUEUE_TYPE=acme python app.py``.

acme keeps everything in this process (it is the memory backend under another name),
so the worker runs here too. Without ``omniq-acme`` installed, name the plugin module
instead of relying on its entry point:
``OMNIQ_PLUGINS=omniq_acme.plugin PYTHONPATH=src OMNIQ_TASK_QUEUE_TYPE=acme python app.py``.
"""

from __future__ import annotations

from omniq import OmniQ

oq = OmniQ()  # the backend comes from OMNIQ_TASK_QUEUE_TYPE / _URL


@oq.task
def shout(word: str) -> str:
    """Upper-case a word, on a worker."""
    return word.upper() + "!"


def main() -> None:
    """Print which backend stores the tasks, run three tasks, print their results."""
    print("task queue:", type(oq.async_.task_queue).__name__)
    with oq, oq.start_worker_sync():
        handles = shout.map_sync(["hello", "acme", "backend"])
        print(" ".join(h.result_sync(timeout=10) for h in handles))


if __name__ == "__main__":
    main()
