"""The plugin API: hook markers, specs, discovery and resolution.

A backend plugin module needs only::

    from omniq.plugins import hookimpl, BackendSpec

    @hookimpl
    def omniq_backends():
        return [BackendSpec(name="acme", schemes=("acme",),
                            task_queue="acme_omniq:AsyncAcmeQueue", ...)]

and an entry point in its ``pyproject.toml``::

    [project.entry-points."omniq.plugins"]
    acme = "acme_omniq.plugin"
"""

from omniq.plugins.hookspecs import hookimpl, hookspec
from omniq.plugins.manager import (
    ENTRY_POINT_GROUP,
    PluginLoadError,
    PluginManager,
    get_plugin_manager,
    reset_plugin_manager,
)
from omniq.plugins.resolution import create_component, find_backend
from omniq.plugins.specs import COMPONENTS, BackendSpec, WorkerSpec

__all__ = [
    "COMPONENTS",
    "ENTRY_POINT_GROUP",
    "BackendSpec",
    "PluginLoadError",
    "PluginManager",
    "WorkerSpec",
    "create_component",
    "find_backend",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
    "reset_plugin_manager",
]
