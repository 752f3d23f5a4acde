"""What plugins return from the registration hooks: BackendSpec and WorkerSpec."""

from __future__ import annotations

import importlib
from typing import Any

import msgspec

from omniq.errors import BackendError, ConfigurationError

#: Component kinds, in the order a BackendSpec lists them.
COMPONENTS = ("task_queue", "result_storage", "event_storage", "schedule_storage")


class BackendSpec(msgspec.Struct, kw_only=True, frozen=True):
    """A storage backend offered by a plugin.

    Each component is a class, a ``"module:Class"`` string (imported only when the
    backend is selected, so the plugin imports fast), or None when not offered.
    """

    name: str
    schemes: tuple[str, ...] = ()
    task_queue: Any = None
    result_storage: Any = None
    event_storage: Any = None
    schedule_storage: Any = None
    default_url: str | None = None
    """URL used when the backend is chosen by type alone."""
    package: str | None = None
    """Distribution that provides it (shown in errors and ``omniq backends``)."""
    description: str = ""
    #: Optional ``"module:Class"`` or class of a bundle sharing one connection.
    bundle: Any = None

    @classmethod
    def conventional(
        cls, name: str, module: str, stem: str, *, bundle: bool = True, **fields: Any
    ) -> BackendSpec:
        """A spec whose classes follow the naming convention of the built-in backends:
        ``module:Async{stem}Queue``, ``...ResultStorage``, ``...EventStorage``,
        ``...ScheduleStorage`` and (unless ``bundle=False``) ``module:{stem}Backend``."""
        return cls(
            name=name,
            task_queue=f"{module}:Async{stem}Queue",
            result_storage=f"{module}:Async{stem}ResultStorage",
            event_storage=f"{module}:Async{stem}EventStorage",
            schedule_storage=f"{module}:Async{stem}ScheduleStorage",
            bundle=f"{module}:{stem}Backend" if bundle else None,
            **fields,
        )

    def component(self, kind: str) -> type[Any] | None:
        """The class for ``kind`` (one of COMPONENTS), importing it if given as a string."""
        if kind not in COMPONENTS:
            raise ConfigurationError(
                f"unknown component kind {kind!r}; expected one of {COMPONENTS}"
            )
        cls: type[Any] | None = load_object(getattr(self, kind), f"backend {self.name!r} {kind}")
        return cls

    def offers(self, kind: str) -> bool:
        """True when the backend provides component ``kind``."""
        return getattr(self, kind) is not None


class WorkerSpec(msgspec.Struct, kw_only=True, frozen=True):
    """An executor type offered by a plugin (``--worker NAME``)."""

    name: str
    factory: Any
    """Callable or ``"module:callable"`` building the executor: ``factory(concurrency)``."""
    description: str = ""
    package: str | None = None

    def load(self) -> Any:
        """The factory, imported if given as a string."""
        return load_object(self.factory, f"worker type {self.name!r}")


def load_object(ref: Any, what: str = "an OmniQ plugin object") -> Any:
    """Resolve ``"module:attr"`` to the object (other values are returned as they are)."""
    if not isinstance(ref, str):
        return ref
    module_name, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
    except ImportError as e:
        raise BackendError(
            f"cannot import {ref!r} for {what}: {e}. Is the package that provides it "
            "installed with its dependencies?"
        ) from e
    except AttributeError as e:
        raise BackendError(f"{ref!r} for {what} does not exist: {e}") from e
    return obj
