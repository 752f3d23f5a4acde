"""Parity: every public coroutine method of every ``Async*`` class has a ``_sync`` twin.

Covers the classes exported by ``omniq.storage.memory`` and, for every backend the plugin
manager knows (BackendSpecs), each component class plus every ``Async*`` class its
top-level package (``omniq_nats``, ...) exports. Backends whose classes fail to import
are skipped with the reason (that is the plugin tests' business); a missing sync class
is a failure.
"""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType
from typing import Any

import pytest

from omniq.plugins import COMPONENTS, get_plugin_manager
from omniq.storage import memory


def coroutine_methods(cls: type) -> list[str]:
    """Public coroutine methods, found independently of omniq.sync's own helper."""
    names = []
    for name in dir(cls):
        if name.startswith("_"):
            continue
        attr = inspect.getattr_static(cls, name)
        if isinstance(attr, (staticmethod, classmethod)):
            attr = attr.__func__
        if inspect.iscoroutinefunction(attr):
            names.append(name)
    return sorted(names)


def async_classes(module: ModuleType) -> dict[str, type]:
    exported = getattr(module, "__all__", None) or dir(module)
    return {
        name: obj
        for name in exported
        if name.startswith("Async") and inspect.isclass(obj := getattr(module, name, None))
    }


def sync_twin(async_cls: type) -> type | None:
    """``AsyncFooQueue`` -> ``FooQueue`` in its module or its distribution's top package."""
    twin_name = async_cls.__name__.removeprefix("Async")
    for module_name in (async_cls.__module__, async_cls.__module__.split(".")[0]):
        module = importlib.import_module(module_name)
        twin = getattr(module, twin_name, None)
        if inspect.isclass(twin):
            return twin
    return None


def _collect() -> list[Any]:
    found: dict[str, Any] = {}
    from omniq import core, events
    from omniq.queue import scheduler

    for module in (core, events, scheduler):
        for name, cls in async_classes(module).items():
            found[f"{cls.__module__}.{name}"] = pytest.param(cls, id=f"core:{name}")
    for name, cls in async_classes(memory).items():
        found[f"{cls.__module__}.{name}"] = pytest.param(cls, id=f"memory:{name}")
    for spec, _plugin in get_plugin_manager().backends().values():
        for kind in COMPONENTS:
            if not spec.offers(kind):
                continue
            key = f"{spec.name}:{kind}"
            try:
                component = spec.component(kind)
            except Exception as e:
                found[key] = pytest.param(
                    None, id=key, marks=pytest.mark.skip(reason=f"cannot import: {e}")
                )
                continue
            assert component is not None
            found.setdefault(
                f"{component.__module__}.{component.__name__}", pytest.param(component, id=key)
            )
            top = component.__module__.split(".")[0]
            if top == "omniq":  # core's own classes: the memory module, covered above
                continue
            package = importlib.import_module(top)
            for name, other in async_classes(package).items():
                found.setdefault(
                    f"{other.__module__}.{name}", pytest.param(other, id=f"{spec.name}:{name}")
                )
    return list(found.values())


@pytest.mark.parametrize("async_cls", _collect())
def test_every_coroutine_method_has_a_sync_twin(async_cls: type) -> None:
    twin = sync_twin(async_cls)
    assert twin is not None, (
        f"{async_cls.__module__}.{async_cls.__name__} has no blocking twin "
        f"{async_cls.__name__.removeprefix('Async')} (a SyncWrapper subclass)"
    )
    missing = [
        f"{name}_sync"
        for name in coroutine_methods(async_cls)
        if not callable(getattr(twin, f"{name}_sync", None))
    ]
    assert not missing, f"{twin.__name__} lacks {missing}"


def test_memory_exports_all_four_components_with_twins() -> None:
    names = set(async_classes(memory))
    assert names == {
        "AsyncMemoryQueue",
        "AsyncMemoryResultStorage",
        "AsyncMemoryEventStorage",
        "AsyncMemoryScheduleStorage",
    }
    for name in names:
        assert sync_twin(getattr(memory, name)) is getattr(memory, name.removeprefix("Async"))


def test_parity_check_catches_a_missing_twin() -> None:
    class AsyncLonely:
        async def ping(self) -> None: ...

    class Lonely:
        pass

    assert coroutine_methods(AsyncLonely) == ["ping"]
    assert not hasattr(Lonely, "ping_sync")
