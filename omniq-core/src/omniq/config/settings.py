"""Library defaults, the lowest configuration layer.

Names carry no ``OMNIQ_`` prefix; each one is overridden by a YAML file, by the environment
variable ``OMNIQ_<NAME>`` and by arguments in code (see :func:`omniq.config.load_config`).
"""

from __future__ import annotations

from typing import Any

# Directory for embedded state (the default SQLite database lives at BASE_DIR/omniq.db).
BASE_DIR: str = ".omniq"

# Task queue backend type; used only when no task queue URL is given anywhere.
TASK_QUEUE_TYPE: str | None = "sqlite"
# Task queue connection URL; None lets the backend plugin choose its default.
TASK_QUEUE_URL: str | None = None

# Result storage backend type; None means "the same backend as the task queue".
RESULT_STORAGE_TYPE: str | None = None
# Result storage connection URL.
RESULT_STORAGE_URL: str | None = None

# Event storage backend type; None (and no URL) means events are off.
EVENT_STORAGE_TYPE: str | None = None
# Event storage connection URL.
EVENT_STORAGE_URL: str | None = None

# Schedule storage backend type; None means "the same backend as the task queue".
SCHEDULE_STORAGE_TYPE: str | None = None
# Schedule storage connection URL.
SCHEDULE_STORAGE_URL: str | None = None

# fsspec URI for the file backend (file:///path, s3://bucket, memory://) when it has no URL.
FSSPEC_URI: str | None = None

# Worker type used when none is named: async, thread, process, gevent (or a plugin's).
DEFAULT_WORKER: str = "async"
# Upper bound on tasks in flight per worker.
MAX_WORKERS: int = 10
# Thread pool size for the thread worker; None follows MAX_WORKERS.
THREAD_WORKERS: int | None = None
# Process pool size for the process worker; None follows MAX_WORKERS.
PROCESS_WORKERS: int | None = None
# Greenlet pool size for the gevent worker; None follows MAX_WORKERS.
GEVENT_WORKERS: int | None = None

# Default task execution timeout in seconds; None means no timeout.
TASK_TIMEOUT: float | None = None
# Default time-to-live of a queued task in seconds; None means it never expires.
TASK_TTL: float | None = None
# Default number of retries after a failed attempt.
RETRY_ATTEMPTS: int = 0
# Base delay in seconds between retries (grows with exponential backoff).
RETRY_DELAY: float = 1.0
# Default time-to-live of task results in seconds (one day); None keeps them forever.
RESULT_TTL: float | None = 86400.0

# Library log level: DEBUG, INFO, WARNING, ERROR, CRITICAL or DISABLED.
LOG_LEVEL: str = "INFO"
# Silence all library logging when True.
DISABLE_LOGGING: bool = False
# Per-component log levels, e.g. {"worker": "DEBUG"} for the logger "omniq.worker".
COMPONENT_LOG_LEVELS: dict[str, Any] = {}

# HMAC key that signs dill payloads; None forbids payloads that need dill.
SECRET_KEY: str | None = None
# Previous keys still accepted when verifying signatures (key rotation).
OLD_SECRET_KEYS: list[str] = []

# Trust boundary: modules (prefixes, e.g. "myapp.tasks") from which a worker may import
# a task or callback that is not registered on its app, by its "module:qualname" name.
# Empty (the default): a worker runs only registered tasks; a task record is data, never
# code. Listing a module trusts every producer that can write to the queue.
TASK_IMPORT_ALLOWLIST: list[str] = []

# Claimed tasks a worker holds ready beyond those running (it claims in bigger batches);
# None: adaptive (about 50 ms of work per slot: none for long tasks, up to 30x the
# concurrency for very short ones); 0: none. Held tasks are heartbeated and handed back
# at once on shutdown.
WORKER_PREFETCH: int | None = None
# Seconds a claimed task stays leased to a worker before it may be reclaimed.
LEASE_SECONDS: float = 30.0
# Seconds between lease heartbeats; None derives it from LEASE_SECONDS.
HEARTBEAT_INTERVAL: float | None = None
# Seconds running tasks get to finish after SIGTERM/SIGINT before being handed back.
SHUTDOWN_GRACE: float = 30.0
# Seconds task events are kept; None keeps them until deleted.
EVENT_RETENTION: float | None = None

# Skip loading plugins from the "omniq.plugins" entry-point group when True.
DISABLE_PLUGIN_AUTOLOAD: bool = False
# Names of entry-point plugins that must not be loaded.
DISABLED_PLUGINS: list[str] = []
# Log every plugin hook call (debugging aid) when True.
TRACE_PLUGINS: bool = False
# Fail, instead of skipping, tests whose backend server is unreachable (set by CI).
REQUIRE_SERVICES: bool = False
