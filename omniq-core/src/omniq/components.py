"""Building an app's four components from its settings (type, URL, dict or instance).

Components of one backend with the same URL and options share one bundle (one
connection); a queue given as an instance takes in-memory results and schedules of the
same store unless those are configured; a backend's own ``base_dir`` option gets the
configured one. ``sync_twin`` wraps an async component in its blocking twin.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

from omniq.config import ComponentConfig, OmniQConfig
from omniq.errors import ConfigurationError
from omniq.plugins import COMPONENTS, PluginManager, find_backend
from omniq.plugins.specs import load_object
from omniq.sync import SyncWrapper

__all__ = [
    "ComponentAttribute",
    "build_components",
    "sync_twin",
    "unique_components",
    "unwrap",
]


def unwrap(component: Any) -> Any:
    """The async component behind a blocking twin (or the component itself)."""
    return component.async_ if isinstance(component, SyncWrapper) else component


def build_components(
    cfg: OmniQConfig, plugins: PluginManager, instances: dict[str, Any]
) -> dict[str, Any]:
    """The four components: ``instances`` as given, the rest built from ``cfg``."""
    wanted: dict[str, ComponentConfig | None] = {
        "task_queue": cfg.task_queue,
        "result_storage": cfg.effective_result_storage(),
        "event_storage": cfg.event_storage,
        "schedule_storage": cfg.effective_schedule_storage(),
    }
    if "task_queue" in instances:
        # an instance given for the queue: results/schedules follow it unless configured
        if cfg.result_storage is None:
            wanted["result_storage"] = None
        if cfg.schedule_storage is None:
            wanted["schedule_storage"] = None
    built: dict[str, Any] = dict(instances)
    bundles: dict[tuple[str, str, str], Any] = {}
    for kind in COMPONENTS:
        if kind in built:
            continue
        cc = wanted[kind]
        if cc is None:
            built[kind] = _follow_queue(kind, instances)
            continue
        spec = find_backend(cc.type, cc.url, pm=plugins)
        url = cc.url or spec.default_url
        if url is None:
            raise ConfigurationError(f"backend {spec.name!r} needs a URL for {kind}")
        if not spec.offers(kind):
            if kind == "event_storage":
                raise ConfigurationError(
                    f"backend {spec.name!r} does not provide event storage; set "
                    "OMNIQ_EVENT_STORAGE_TYPE to one that does"
                )
            raise ConfigurationError(f"backend {spec.name!r} does not provide {kind}")
        key = (spec.name, url, repr(sorted(cc.options.items())))
        if spec.bundle is not None:
            bundle = bundles.get(key)
            if bundle is None:
                bundle_cls = load_object(spec.bundle, spec.name)
                bundle = bundles[key] = bundle_cls.from_url(
                    url, **_backend_options(cfg, bundle_cls, cc.options)
                )
            built[kind] = getattr(bundle, kind)
        else:
            cls = spec.component(kind)
            assert cls is not None
            built[kind] = cls.from_url(url, **_backend_options(cfg, cls, cc.options))
    return built


def _backend_options(cfg: OmniQConfig, cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """Options for a backend class, plus ``base_dir`` when its constructor takes one."""
    try:
        takes_base_dir = "base_dir" in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        takes_base_dir = False
    if takes_base_dir and "base_dir" not in options:
        return {**options, "base_dir": cfg.base_dir}
    return options


def _follow_queue(kind: str, instances: dict[str, Any]) -> Any:
    """Results/schedules of a queue given as an instance: same backend, in memory."""
    if kind == "event_storage":
        return None
    from omniq.storage import memory

    queue = instances.get("task_queue")
    url = getattr(queue, "url", None) if isinstance(queue, memory.AsyncMemoryQueue) else None
    return (
        memory.AsyncMemoryResultStorage(url)
        if kind == "result_storage"
        else memory.AsyncMemoryScheduleStorage(url)
    )


def unique_components(components: dict[str, Any]) -> list[Any]:
    """Each distinct component once (a bundle's components may be one object)."""
    seen: dict[int, Any] = {}
    for c in components.values():
        if c is not None:
            seen.setdefault(id(c), c)
    return list(seen.values())


_TWINS: dict[type, type] = {}


def sync_twin(component: Any) -> Any:
    """Wrap an async component in its sync twin (found by naming convention)."""
    cls = type(component)
    twin = _TWINS.get(cls)
    if twin is None:
        module = sys.modules[cls.__module__]
        name = cls.__name__.removeprefix("Async")
        twin = getattr(module, name, None)
        if twin is None or not issubclass(twin, SyncWrapper):
            twin = type(name, (SyncWrapper,), {}, async_class=cls)
        _TWINS[cls] = twin
    return twin.wrap(component)  # type: ignore[union-attr]


class ComponentAttribute:
    """``app.task_queue`` and its three siblings: the app's component of one kind (on a
    blocking app, the component's blocking twin), or None when it is off."""

    def __init__(self, kind: str, *, blocking: bool = False) -> None:
        self.kind = kind
        self.blocking = blocking
        self.__doc__ = f"The {kind.replace('_', ' ')} component" + (
            " (its blocking twin)." if blocking else "."
        )

    def __get__(self, app: Any, owner: type | None = None) -> Any:
        if app is None:
            return self
        if not self.blocking:
            return app._components[self.kind]
        component = app._async._components[self.kind]
        return None if component is None else sync_twin(component)
