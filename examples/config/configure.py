"""Three ways to configure the same app: code, a YAML file, environment variables.

Run:
  python examples/config/configure.py code
  python examples/config/configure.py yaml examples/config/sqlite.yaml
  OMNIQ_TASK_QUEUE_URL=sqlite:///env.db OMNIQ_MAX_WORKERS=2 \\
      python examples/config/configure.py env

Precedence, lowest first: built-in defaults < YAML file < ``OMNIQ_*`` environment
variables < arguments in code. Each run prints the settings in effect and runs a task.
"""

from __future__ import annotations

import sys

from omniq import OmniQ


def build(how: str, path: str | None) -> OmniQ:
    """The app, configured one of three ways."""
    if how == "code":
        return OmniQ(task_queue="sqlite:///code.db", max_workers=4, retry_attempts=1)
    if how == "yaml":
        if path is None:
            raise SystemExit("usage: configure.py yaml PATH")
        return OmniQ.from_config(path)  # OMNIQ_* variables still override the file
    if how == "env":
        return OmniQ()  # OMNIQ_* variables, and the file named by OMNIQ_CONFIG
    raise SystemExit(f"unknown way {how!r}; use code, yaml or env")


def main() -> None:
    """Build the app, show where it stores tasks, run one task."""
    how = sys.argv[1] if len(sys.argv) > 1 else "env"
    oq = build(how, sys.argv[2] if len(sys.argv) > 2 else None)

    @oq.task
    def hello(name: str) -> str:
        return f"hello {name}"

    c = oq.config
    # str() of a component hides passwords: safe to log
    print(f"[{how}] task queue: {c.task_queue}; max_workers={c.max_workers}")
    with oq, oq.start_worker_sync():
        print(f"[{how}]", hello.enqueue_sync("world").result_sync(timeout=30))


if __name__ == "__main__":
    main()
