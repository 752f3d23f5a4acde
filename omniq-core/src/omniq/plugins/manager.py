"""Plugin discovery: built-ins plus the ``omniq.plugins`` entry-point group.

Environment switches behave like their pytest/tox/datasette namesakes:

* ``OMNIQ_DISABLE_PLUGIN_AUTOLOAD=1`` — do not load entry points (built-ins still load);
  ``OMNIQ_PLUGINS=mod1,mod2`` then loads modules explicitly.
* ``OMNIQ_DISABLED_PLUGINS=name1,name2`` — skip these entry-point (or module) names.
* ``OMNIQ_TRACE_PLUGINS=1`` — print every hook call to stderr.

A plugin that fails to import is recorded in :attr:`PluginManager.load_errors`, logged,
and does not stop the others from loading.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
import threading
from importlib.metadata import entry_points
from typing import Any

import msgspec
import pluggy

from omniq.plugins import hookspecs
from omniq.plugins.specs import BackendSpec, WorkerSpec

ENTRY_POINT_GROUP = "omniq.plugins"
log = logging.getLogger("omniq.plugins")

_TRUE = {"1", "true", "yes", "on"}


class PluginLoadError(msgspec.Struct, frozen=True):
    """A plugin that could not be loaded, and why."""

    name: str
    source: str
    error: str


class PluginManager(pluggy.PluginManager):
    """pluggy's manager with OmniQ's hookspecs and lookups of what plugins offer."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.load_errors: list[PluginLoadError] = []
        self._backends: dict[str, tuple[BackendSpec, str]] | None = None
        # hook name -> some plugin implements it; emptied whenever plugins change
        self._implemented: dict[str, bool] = {}

    def load_plugins(self, environ: dict[str, str] | None = None) -> None:
        """Register built-ins, then entry points and ``OMNIQ_PLUGINS`` modules."""
        env = os.environ if environ is None else environ
        disabled = {
            n.strip() for n in env.get("OMNIQ_DISABLED_PLUGINS", "").split(",") if n.strip()
        }
        from omniq.plugins import builtin

        self.register(builtin, name="omniq.builtin")
        if env.get("OMNIQ_DISABLE_PLUGIN_AUTOLOAD", "").lower() not in _TRUE:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                if ep.name in disabled or self.has_plugin(ep.name):
                    continue
                dist = getattr(ep.dist, "name", None) or ep.value
                try:
                    self.register(ep.load(), name=ep.name)
                except Exception as e:
                    self._record_failure(ep.name, f"entry point {ep.value} ({dist})", e)
        for mod in (m.strip() for m in env.get("OMNIQ_PLUGINS", "").split(",")):
            if mod and mod not in disabled and not self.has_plugin(mod):
                try:
                    self.register(importlib.import_module(mod), name=mod)
                except Exception as e:
                    self._record_failure(mod, "OMNIQ_PLUGINS", e)
        if env.get("OMNIQ_TRACE_PLUGINS", "").lower() in _TRUE:
            self.trace.root.setwriter(lambda msg: sys.stderr.write(f"[omniq-plugins] {msg}"))
            self.enable_tracing()

    def _record_failure(self, name: str, source: str, e: BaseException) -> None:
        err = PluginLoadError(name=name, source=source, error=f"{type(e).__name__}: {e}")
        self.load_errors.append(err)
        log.warning(
            "OmniQ plugin %r from %s failed to load and is skipped: %s", name, source, err.error
        )

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        self._backends = None
        self._implemented.clear()
        return super().register(plugin, name)

    def unregister(self, plugin: Any = None, name: str | None = None) -> Any:
        self._backends = None
        self._implemented.clear()
        return super().unregister(plugin, name)

    # --- calling the lifecycle hooks -----------------------------------------------------

    def implemented(self, name: str) -> bool:
        """True when some plugin implements hook ``name`` (lets hot paths skip a call).
        Cached until a plugin is registered or unregistered: the worker asks per task."""
        known = self._implemented.get(name)
        if known is None:
            known = self._implemented[name] = bool(getattr(self.hook, name).get_hookimpls())
        return known

    async def acall(self, name: str, **kwargs: Any) -> None:
        """Call hook ``name`` through pluggy (``tryfirst``/``trylast``, hookwrappers and
        tracing apply as pluggy documents), then await the awaitables the
        implementations returned, in pluggy's call order. A failing implementation is
        logged, never raised into the engine: pluggy stops the call at an exception, so
        the implementations after it in the order do not run for that call."""
        try:
            outcomes = getattr(self.hook, name)(**kwargs)
        except Exception:
            log.exception("plugin hook %s failed", name)
            return
        for out in outcomes or ():
            if inspect.isawaitable(out):
                try:
                    await out
                except Exception:
                    log.exception("plugin hook %s failed (awaited implementation)", name)

    # --- what plugins offer ------------------------------------------------------------

    def backends(self) -> dict[str, tuple[BackendSpec, str]]:
        """Backends by name, each with the name of the plugin that registered it."""
        if self._backends is None:
            found: dict[str, tuple[BackendSpec, str]] = {}
            # registration order: built-ins first, so a plugin cannot shadow them. Called
            # per implementation (not through pluggy) so that one broken plugin is
            # reported by name and the others' backends are still found.
            for impl in self.hook.omniq_backends.get_hookimpls():
                try:
                    specs: list[BackendSpec] = impl.function()  # type: ignore[assignment]
                except Exception as e:
                    self._record_failure(impl.plugin_name, "omniq_backends()", e)
                    continue
                for spec in specs or []:
                    if spec.name in found:
                        log.warning(
                            "backend %r from plugin %r ignored: plugin %r registered it first",
                            spec.name,
                            impl.plugin_name,
                            found[spec.name][1],
                        )
                        continue
                    found[spec.name] = (spec, impl.plugin_name)
            self._backends = found
        return self._backends

    def worker_types(self) -> dict[str, WorkerSpec]:
        """Executor types by name."""
        found: dict[str, WorkerSpec] = {}
        results: list[list[WorkerSpec]] = self.hook.omniq_worker_types()
        for specs in reversed(results):
            for spec in specs or []:
                found.setdefault(spec.name, spec)
        return found

    def serializers(self) -> list[Any]:
        """Extra serializers offered by plugins."""
        return [s for specs in self.hook.omniq_serializers() for s in specs or []]


_lock = threading.Lock()
_manager: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, loading plugins on first use."""
    global _manager
    with _lock:
        if _manager is None:
            pm = PluginManager()
            pm.load_plugins()
            _manager = pm
        return _manager


def reset_plugin_manager() -> None:
    """Forget the process-wide manager; the next call rediscovers plugins (tests)."""
    global _manager
    with _lock:
        _manager = None
