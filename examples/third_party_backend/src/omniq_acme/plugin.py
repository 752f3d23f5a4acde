"""Entry point of the acme backend (``omniq.plugins`` group).

It imports nothing but the plugin API: the components are named as ``"module:Class"``
strings and imported only when the backend is selected.
"""

from __future__ import annotations

from omniq.plugins import BackendSpec, hookimpl


@hookimpl
def omniq_backends() -> list[BackendSpec]:
    """The acme backend: all four components, selected by type ``acme`` or ``acme://``."""
    return [
        BackendSpec(
            name="acme",
            schemes=("acme",),
            task_queue="omniq_acme.storage:AsyncAcmeQueue",
            result_storage="omniq_acme.storage:AsyncAcmeResultStorage",
            event_storage="omniq_acme.storage:AsyncAcmeEventStorage",
            schedule_storage="omniq_acme.storage:AsyncAcmeScheduleStorage",
            default_url="acme://",
            package="omniq-acme",
            description="example third-party backend (in-process, like memory)",
        )
    ]
