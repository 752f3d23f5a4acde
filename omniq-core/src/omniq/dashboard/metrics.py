"""Prometheus text exposition of what the dashboard reads: tasks per queue and status,
paused queues and the live workers' heartbeat counters (no client library needed)."""

from __future__ import annotations

from collections.abc import Iterable

from omniq.models import WorkerInfo

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(
    counts: dict[str, dict[str, int]],
    paused: Iterable[str] | None,
    workers: list[WorkerInfo] | None,
) -> str:
    """The metrics page for one look at the store."""
    lines = [
        "# HELP omniq_tasks Tasks stored, by queue and status.",
        "# TYPE omniq_tasks gauge",
    ]
    for queue, row in counts.items():
        for status, n in row.items():
            lines.append(f'omniq_tasks{{queue="{_label(queue)}",status="{status}"}} {n}')
    if paused is not None:
        stopped = set(paused)
        lines += ["# HELP omniq_queue_paused 1 when the queue is paused.",
                  "# TYPE omniq_queue_paused gauge"]  # fmt: skip
        for queue in sorted(set(counts) | stopped):
            lines.append(f'omniq_queue_paused{{queue="{_label(queue)}"}} {int(queue in stopped)}')
    if workers is not None:
        lines += ["# HELP omniq_workers Live workers (by their heartbeats).",
                  "# TYPE omniq_workers gauge", f"omniq_workers {len(workers)}"]  # fmt: skip
        for name, help_text, kind in (
            ("running", "Tasks running in the worker now.", "gauge"),
            ("processed", "Tasks the worker ran since it started.", "counter"),
            ("failed", "Tasks that failed in the worker since it started.", "counter"),
        ):
            metric = f"omniq_worker_{name}" + ("_total" if kind == "counter" else "")
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"]
            for w in workers:
                labels = f'worker="{_label(w.id)}",host="{_label(w.host)}"'
                lines.append(f"{metric}{{{labels}}} {getattr(w, name)}")
    return "\n".join(lines) + "\n"
