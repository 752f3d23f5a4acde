"""Plugins: discovery, environment switches, hookspecs, resolution and a real third-party
package installed into a fresh virtualenv."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from omniq.errors import BackendError, BackendNotFoundError, ConfigurationError
from omniq.models import EventType, Task, TaskEvent, TaskStatus
from omniq.plugins import (
    BackendSpec,
    PluginManager,
    WorkerSpec,
    create_component,
    find_backend,
    get_plugin_manager,
    hookimpl,
    hookspecs,
    reset_plugin_manager,
)
from omniq.storage.memory import (
    AsyncMemoryEventStorage,
    AsyncMemoryQueue,
    AsyncMemoryResultStorage,
    AsyncMemoryScheduleStorage,
)

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "omniq-core"
EXAMPLE = REPO / "examples" / "third_party_backend"
PLUGIN_ENV = (
    "OMNIQ_PLUGINS",
    "OMNIQ_DISABLED_PLUGINS",
    "OMNIQ_DISABLE_PLUGIN_AUTOLOAD",
    "OMNIQ_TRACE_PLUGINS",
)


@pytest.fixture(autouse=True)
def fresh_manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in PLUGIN_ENV:
        monkeypatch.delenv(name, raising=False)
    reset_plugin_manager()
    yield
    reset_plugin_manager()


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """Write a uniquely named plugin module on sys.path; returns its name."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(source: str) -> str:
        name = f"omniq_test_plugin_{uuid.uuid4().hex[:12]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.delitem(sys.modules, name, raising=False)
        return name

    return write


WIDGET_PLUGIN = """
from omniq.plugins import BackendSpec, hookimpl

@hookimpl
def omniq_backends():
    return [BackendSpec(
        name="widget",
        schemes=("widget", "widgets"),
        task_queue="omniq.storage.memory:AsyncMemoryQueue",
        result_storage=None,
        default_url="memory://widget-default",
        package="omniq-widget",
    )]
"""


def bare_manager(**env: str) -> PluginManager:
    """A manager with built-ins only (no entry points), plus ``env`` switches."""
    pm = PluginManager()
    pm.load_plugins({"OMNIQ_DISABLE_PLUGIN_AUTOLOAD": "1", **env})
    return pm


# --- discovery ------------------------------------------------------------------------------


def test_memory_is_registered_through_the_hook() -> None:
    pm = get_plugin_manager()
    assert pm is get_plugin_manager()  # process-wide
    spec, plugin = pm.backends()["memory"]
    assert plugin == "omniq.builtin"
    assert spec.schemes == ("memory",) and spec.default_url == "memory://"
    assert spec.package == "omniq-core"
    assert spec.component("task_queue") is AsyncMemoryQueue
    assert spec.component("result_storage") is AsyncMemoryResultStorage
    assert spec.component("event_storage") is AsyncMemoryEventStorage
    assert spec.component("schedule_storage") is AsyncMemoryScheduleStorage
    # the built-in plugin uses the very hook third parties implement
    impls = [i.plugin_name for i in pm.hook.omniq_backends.get_hookimpls()]
    assert impls[0] == "omniq.builtin"
    assert any(s.name == "memory" for specs in pm.hook.omniq_backends() for s in specs or [])


def test_entry_point_plugins_are_loaded() -> None:
    from importlib.metadata import entry_points

    pm = get_plugin_manager()
    for ep in entry_points(group="omniq.plugins"):
        assert pm.has_plugin(ep.name) or any(e.name == ep.name for e in pm.load_errors)


def test_reset_rediscovers() -> None:
    first = get_plugin_manager()
    reset_plugin_manager()
    assert get_plugin_manager() is not first


def test_omniq_plugins_env_loads_modules(
    monkeypatch: pytest.MonkeyPatch, plugin_module: Callable[[str], str]
) -> None:
    name = plugin_module(WIDGET_PLUGIN)
    monkeypatch.setenv("OMNIQ_PLUGINS", f" {name} ,")
    pm = get_plugin_manager()
    assert pm.has_plugin(name)
    spec, plugin = pm.backends()["widget"]
    assert plugin == name and spec.package == "omniq-widget"


def test_plugin_failing_on_import_is_reported_and_others_load(
    monkeypatch: pytest.MonkeyPatch, plugin_module: Callable[[str], str]
) -> None:
    broken = plugin_module("raise RuntimeError('driver missing: pip install foo')\n")
    syntax = plugin_module("def oops(:\n")
    good = plugin_module(WIDGET_PLUGIN)
    monkeypatch.setenv("OMNIQ_PLUGINS", f"{broken},{syntax},{good},no_such_module_xyz")
    pm = get_plugin_manager()
    errors = {e.name: e for e in pm.load_errors}
    assert set(errors) == {broken, syntax, "no_such_module_xyz"}
    assert errors[broken].error == "RuntimeError: driver missing: pip install foo"
    assert errors[broken].source == "OMNIQ_PLUGINS"
    assert errors[syntax].error.startswith("SyntaxError")
    assert errors["no_such_module_xyz"].error.startswith("ModuleNotFoundError")
    assert {"memory", "widget"} <= set(pm.backends())
    # the unknown-backend error mentions what failed to load
    with pytest.raises(BackendNotFoundError, match=f"failed to load: .*{broken}"):
        find_backend("nope", pm=pm)


def test_plugin_whose_hook_raises_is_reported(
    monkeypatch: pytest.MonkeyPatch, plugin_module: Callable[[str], str]
) -> None:
    bad = plugin_module(
        """
        from omniq.plugins import hookimpl

        @hookimpl
        def omniq_backends():
            raise ValueError("bad spec")
        """
    )
    monkeypatch.setenv("OMNIQ_PLUGINS", bad)
    pm = get_plugin_manager()
    assert "memory" in pm.backends()
    assert [(e.name, e.error) for e in pm.load_errors] == [(bad, "ValueError: bad spec")]


def test_first_registration_of_a_backend_name_wins(
    monkeypatch: pytest.MonkeyPatch, plugin_module: Callable[[str], str]
) -> None:
    shadow = plugin_module(
        """
        from omniq.plugins import BackendSpec, hookimpl

        @hookimpl
        def omniq_backends():
            return [BackendSpec(name="memory", task_queue="x:Y")]
        """
    )
    monkeypatch.setenv("OMNIQ_PLUGINS", shadow)
    spec, plugin = get_plugin_manager().backends()["memory"]
    assert plugin == "omniq.builtin" and spec.task_queue != "x:Y"


def test_disabled_plugins(
    monkeypatch: pytest.MonkeyPatch, plugin_module: Callable[[str], str]
) -> None:
    keep = plugin_module(WIDGET_PLUGIN)
    drop = plugin_module("raise ImportError('must never be imported')\n")
    monkeypatch.setenv("OMNIQ_PLUGINS", f"{keep},{drop}")
    monkeypatch.setenv("OMNIQ_DISABLED_PLUGINS", f"{drop}, sqlite")
    pm = get_plugin_manager()
    assert pm.has_plugin(keep) and not pm.has_plugin(drop)
    assert not pm.has_plugin("sqlite")  # an entry-point name
    assert pm.load_errors == []
    assert drop not in sys.modules


def test_disable_autoload_keeps_builtins_and_explicit_plugins(
    monkeypatch: pytest.MonkeyPatch, plugin_module: Callable[[str], str]
) -> None:
    from importlib.metadata import entry_points

    name = plugin_module(WIDGET_PLUGIN)
    monkeypatch.setenv("OMNIQ_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("OMNIQ_PLUGINS", name)
    pm = get_plugin_manager()
    names = {n for n, _ in pm.list_name_plugin()}
    assert names == {"omniq.builtin", name}
    assert not any(pm.has_plugin(ep.name) for ep in entry_points(group="omniq.plugins"))
    assert set(pm.backends()) == {"memory", "widget"}


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_disable_autoload_values(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("OMNIQ_DISABLE_PLUGIN_AUTOLOAD", value)
    assert [n for n, _ in get_plugin_manager().list_name_plugin()] == ["omniq.builtin"]


def test_trace_plugins_prints_hook_calls(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OMNIQ_TRACE_PLUGINS", "1")
    pm = get_plugin_manager()
    pm.hook.omniq_before_enqueue(task=Task(func="m:f"))
    err = capsys.readouterr().err
    assert "[omniq-plugins]" in err and "omniq_before_enqueue" in err

    monkeypatch.delenv("OMNIQ_TRACE_PLUGINS")
    reset_plugin_manager()
    get_plugin_manager().hook.omniq_before_enqueue(task=Task(func="m:f"))
    assert "omniq_before_enqueue" not in capsys.readouterr().err


# --- every hookspec ---------------------------------------------------------------------------

DOCUMENTED_HOOKS: dict[str, tuple[str, ...]] = {
    "omniq_backends": (),
    "omniq_serializers": (),
    "omniq_worker_types": (),
    "omniq_on_event": ("event",),
    "omniq_before_enqueue": ("task",),
    "omniq_after_enqueue": ("tasks", "statuses"),
    "omniq_task_started": ("task",),
    "omniq_task_finished": ("task", "result", "error"),
    "omniq_task_interrupted": ("task", "reason"),
    "omniq_worker_startup": ("worker",),
    "omniq_worker_shutdown": ("worker",),
}


class RecordingPlugin:
    """Implements every hook and records the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _record(self, name: str, **kwargs: Any) -> str:
        self.calls.append((name, kwargs))
        return f"{name} seen"

    @hookimpl
    def omniq_backends(self) -> list[BackendSpec]:
        self._record("omniq_backends")
        return [BackendSpec(name="recorded", task_queue=AsyncMemoryQueue, default_url="memory://")]

    @hookimpl
    def omniq_serializers(self) -> list[Any]:
        self._record("omniq_serializers")

        class Upper:
            name = "upper"

            def dumps(self, value: Any) -> bytes:
                return str(value).upper().encode()

            def loads(self, data: bytes) -> Any:
                return data.decode()

        return [Upper()]

    @hookimpl
    def omniq_worker_types(self) -> list[WorkerSpec]:
        self._record("omniq_worker_types")
        return [WorkerSpec(name="inline", factory="builtins:print", description="test")]

    @hookimpl
    def omniq_on_event(self, event: TaskEvent) -> str:
        return self._record("omniq_on_event", event=event)

    @hookimpl
    def omniq_before_enqueue(self, task: Task) -> str:
        task.metadata["traceparent"] = "00-abc-def-01"
        return self._record("omniq_before_enqueue", task=task)

    @hookimpl
    def omniq_task_started(self, task: Task) -> Any:
        async def later() -> str:
            return self._record("omniq_task_started", task=task)

        return later()  # an awaitable, which the async core awaits

    @hookimpl
    def omniq_task_finished(self, task: Task, result: Any, error: BaseException | None) -> str:
        return self._record("omniq_task_finished", task=task, result=result, error=error)

    @hookimpl
    def omniq_after_enqueue(self, tasks: list[Task], statuses: list[TaskStatus]) -> str:
        return self._record("omniq_after_enqueue", tasks=tasks, statuses=statuses)

    @hookimpl
    def omniq_task_interrupted(self, task: Task, reason: str) -> str:
        return self._record("omniq_task_interrupted", task=task, reason=reason)

    @hookimpl
    def omniq_worker_startup(self, worker: Any) -> str:
        return self._record("omniq_worker_startup", worker=worker)

    @hookimpl
    def omniq_worker_shutdown(self, worker: Any) -> str:
        return self._record("omniq_worker_shutdown", worker=worker)


def test_hookspecs_are_the_documented_ones() -> None:
    specs = {
        name: fn
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, "omniq_spec")
    }
    assert set(specs) == set(DOCUMENTED_HOOKS)
    for name, args in DOCUMENTED_HOOKS.items():
        assert tuple(inspect.signature(specs[name]).parameters) == args, name
        hook = getattr(PluginManager().hook, name)
        assert hook.spec is not None and tuple(hook.spec.argnames) == args


@pytest.mark.anyio
async def test_every_hook_is_callable_through_the_manager() -> None:
    pm = bare_manager()
    plugin = RecordingPlugin()
    pm.register(plugin, name="recording")
    task = Task(func="m:f")
    event = TaskEvent(event_type=EventType.ENQUEUED, task_id=task.id)
    worker = object()
    error = ValueError("boom")

    assert "recorded" in pm.backends()
    assert [s.name for s in pm.serializers()] == ["upper"]
    assert pm.worker_types()["inline"].load() is print
    assert pm.hook.omniq_on_event(event=event) == ["omniq_on_event seen"]
    assert pm.hook.omniq_before_enqueue(task=task) == ["omniq_before_enqueue seen"]
    assert task.metadata["traceparent"] == "00-abc-def-01"
    (awaitable,) = pm.hook.omniq_task_started(task=task)
    assert inspect.isawaitable(awaitable)
    assert await awaitable == "omniq_task_started seen"
    pm.hook.omniq_task_finished(task=task, result=None, error=error)
    pm.hook.omniq_task_finished(task=task, result=3, error=None)
    pm.hook.omniq_after_enqueue(tasks=[task], statuses=[TaskStatus.PENDING])
    pm.hook.omniq_task_interrupted(task=task, reason="claim_lost")
    pm.hook.omniq_worker_startup(worker=worker)
    pm.hook.omniq_worker_shutdown(worker=worker)

    seen = {name for name, _ in plugin.calls}
    assert seen == set(DOCUMENTED_HOOKS)
    finished = [kw for name, kw in plugin.calls if name == "omniq_task_finished"]
    assert finished == [
        {"task": task, "result": None, "error": error},
        {"task": task, "result": 3, "error": None},
    ]
    assert ("omniq_worker_startup", {"worker": worker}) in plugin.calls
    assert ("omniq_task_interrupted", {"task": task, "reason": "claim_lost"}) in plugin.calls


def test_hooks_with_no_implementation_return_empty() -> None:
    pm = bare_manager()
    assert pm.hook.omniq_on_event(event=TaskEvent(event_type=EventType.ERROR)) == []
    assert pm.serializers() == []


def test_hook_arguments_are_keyword_only_in_pluggy() -> None:
    pm = bare_manager()
    with pytest.raises(TypeError):
        pm.hook.omniq_on_event(TaskEvent(event_type=EventType.ERROR))  # type: ignore[call-arg]


# --- resolution -------------------------------------------------------------------------------


@pytest.fixture
def widget_pm(plugin_module: Callable[[str], str]) -> PluginManager:
    return bare_manager(OMNIQ_PLUGINS=plugin_module(WIDGET_PLUGIN))


def test_resolve_by_type_uses_default_url(widget_pm: PluginManager) -> None:
    q = create_component("task_queue", "memory", pm=widget_pm)
    assert isinstance(q, AsyncMemoryQueue) and q.url == "memory://"
    w = create_component("task_queue", "WIDGET", pm=widget_pm)
    assert isinstance(w, AsyncMemoryQueue) and w.url == "memory://widget-default"


def test_resolve_by_url_scheme(widget_pm: PluginManager) -> None:
    assert find_backend(url="widgets://whatever", pm=widget_pm).name == "widget"
    r = create_component("result_storage", url="memory://shared-x", pm=widget_pm)
    assert isinstance(r, AsyncMemoryResultStorage) and r.url == "memory://shared-x"
    s = create_component("schedule_storage", url="MEMORY://", pm=widget_pm)
    assert isinstance(s, AsyncMemoryScheduleStorage)


def test_type_and_url_together(widget_pm: PluginManager) -> None:
    q = create_component("task_queue", "memory", "memory://named", pm=widget_pm)
    assert q.url == "memory://named"


def test_options_are_passed_to_from_url(widget_pm: PluginManager) -> None:
    q = create_component("task_queue", "memory", options={"default_lease": 7.5}, pm=widget_pm)
    assert q.default_lease == 7.5


def test_unknown_type_lists_installed_names_and_closest_match(widget_pm: PluginManager) -> None:
    with pytest.raises(BackendNotFoundError) as e:
        find_backend("widgt", pm=widget_pm)
    msg = str(e.value)
    assert "unknown backend type 'widgt'" in msg
    assert "Installed backends: memory, widget." in msg
    assert "Did you mean 'widget'?" in msg
    assert "OMNIQ_TASK_QUEUE_TYPE=memory needs no extra package" in msg


def test_misspelt_first_party_type_names_the_package_to_install() -> None:
    pm = bare_manager()  # sqlite is never installed here
    with pytest.raises(BackendNotFoundError) as e:
        find_backend("sqlit", pm=pm)
    msg = str(e.value)
    assert "Did you mean 'sqlite'?" in msg
    assert "pip install omniq-backend-sqlite" in msg
    assert "Installed backends: memory." in msg


def test_missing_first_party_backend_names_its_package() -> None:
    pm = bare_manager()
    with pytest.raises(BackendNotFoundError, match="pip install omniq-backend-nats"):
        find_backend("nats", pm=pm)
    with pytest.raises(BackendNotFoundError, match="pip install omniq-backend-postgres"):
        find_backend(url="postgresql://u:secret@db/app", pm=pm)


def test_unknown_third_party_type_explains_entry_points() -> None:
    with pytest.raises(BackendNotFoundError, match=r"'omniq\.plugins' entry point"):
        find_backend("zzzqqq", pm=bare_manager())


def test_unknown_scheme_hides_credentials() -> None:
    with pytest.raises(BackendNotFoundError) as e:
        create_component("task_queue", url="rediss://user:hunter2@host:6379/0", pm=bare_manager())
    assert "hunter2" not in str(e.value)


@pytest.mark.parametrize("url", ["localhost:4222", "://nohost", "1nats://x", "memory:/x"])
def test_malformed_url(url: str) -> None:
    with pytest.raises(ConfigurationError, match="malformed backend URL"):
        create_component("task_queue", url=url, pm=bare_manager())


def test_malformed_url_hides_credentials() -> None:
    with pytest.raises(ConfigurationError) as e:
        find_backend(url="user:hunter2@localhost:6379", pm=bare_manager())
    assert "malformed" in str(e.value) and "hunter2" not in str(e.value)
    assert "user:***@localhost:6379" in str(e.value)


def test_neither_type_nor_url() -> None:
    with pytest.raises(ConfigurationError, match="needs a type or a URL"):
        find_backend(pm=bare_manager())


def test_component_not_offered(widget_pm: PluginManager) -> None:
    with pytest.raises(ConfigurationError) as e:
        create_component("result_storage", "widget", pm=widget_pm)
    msg = str(e.value)
    assert "backend 'widget' does not provide result storage" in msg
    assert "choose one of: memory" in msg
    assert not isinstance(e.value, BackendNotFoundError)


def test_unknown_component_kind(widget_pm: PluginManager) -> None:
    with pytest.raises(ConfigurationError, match="unknown component kind 'queue'"):
        create_component("queue", "memory", pm=widget_pm)


def test_component_string_that_cannot_be_imported(plugin_module: Callable[[str], str]) -> None:
    name = plugin_module(
        """
        from omniq.plugins import BackendSpec, hookimpl

        @hookimpl
        def omniq_backends():
            return [
                BackendSpec(name="ghost", task_queue="omniq_no_such_driver:Queue",
                            result_storage="omniq.storage.memory:NoSuchClass",
                            default_url="ghost://"),
            ]
        """
    )
    pm = bare_manager(OMNIQ_PLUGINS=name)
    with pytest.raises(BackendError, match="cannot import 'omniq_no_such_driver:Queue'"):
        create_component("task_queue", "ghost", pm=pm)
    with pytest.raises(BackendError, match="does not exist"):
        create_component("result_storage", "ghost", pm=pm)


def test_backend_without_default_url_needs_one(plugin_module: Callable[[str], str]) -> None:
    name = plugin_module(
        """
        from omniq.plugins import BackendSpec, hookimpl

        @hookimpl
        def omniq_backends():
            return [BackendSpec(name="nourl", task_queue="omniq.storage.memory:AsyncMemoryQueue")]
        """
    )
    pm = bare_manager(OMNIQ_PLUGINS=name)
    with pytest.raises(ConfigurationError, match=r"needs a URL .* declares no default"):
        create_component("task_queue", "nourl", pm=pm)


def test_backend_spec_rejects_unknown_kind() -> None:
    with pytest.raises(ConfigurationError, match="unknown component kind"):
        BackendSpec(name="x").component("tasks")


# --- a real third-party package in a fresh virtualenv -------------------------------------------

_NETWORK_HINTS = (
    "network",
    "connect",
    "dns",
    "resolve host",
    "timed out",
    "offline",
    "failed to fetch",
    "download",
)


def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)


@pytest.mark.slow
def test_third_party_backend_in_a_fresh_venv(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed")
    venv = tmp_path / "venv"
    made = _run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)])
    if made.returncode != 0:
        pytest.skip(f"uv venv failed: {made.stderr.strip()[-300:]}")
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / "python"
    install = [
        uv, "pip", "install", "--python", str(python),
        # rebuild the local packages: their sources may have changed since uv cached them
        "--refresh-package", "omniq-core", "--refresh-package", "omniq-acme",
        str(CORE), str(EXAMPLE),
    ]  # fmt: skip
    done = _run(install)
    if done.returncode != 0:
        out = (done.stderr + done.stdout).lower()
        if any(hint in out for hint in _NETWORK_HINTS):
            pytest.skip(f"cannot install without network: {done.stderr.strip()[-400:]}")
        pytest.fail(f"installing omniq-core and omniq-acme failed:\n{done.stderr}")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMNIQ_", "VIRTUAL_ENV"))}
    env.update(COLUMNS="200", NO_COLOR="1")

    # `omniq backends` lists acme, found through its entry point
    listed = _run([str(bindir / "omniq"), "backends", "--json"], env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    backends = {b["name"]: b for b in data["backends"]}
    assert backends["acme"]["schemes"] == ["acme"]
    assert backends["acme"]["package"] == "omniq-acme"
    assert backends["acme"]["plugin"] == "acme"
    assert data["load_errors"] == []
    table = _run([str(bindir / "omniq"), "backends"], env=env, cwd=tmp_path)
    assert table.returncode == 0 and "acme://" in table.stdout and "omniq-acme" in table.stdout

    # OMNIQ_TASK_QUEUE_TYPE=acme selects it
    select = textwrap.dedent(
        """
        import omniq
        from omniq.config import load_config
        from omniq.plugins import create_component

        config = load_config()
        tq = config.task_queue
        queue = create_component("task_queue", tq.type, tq.url, tq.options)
        print(type(queue).__module__, type(queue).__name__)
        OmniQ = getattr(omniq, "OmniQ", None)
        if OmniQ is not None:  # the high-level API, once it exists
            print("omniq", type(OmniQ().task_queue).__name__)
        """
    )
    chosen = _run([str(python), "-c", select], env={**env, "OMNIQ_TASK_QUEUE_TYPE": "acme"})
    assert chosen.returncode == 0, chosen.stderr
    lines = chosen.stdout.split("\n")
    assert lines[0] == "omniq_acme.storage AsyncAcmeQueue"
    if len(lines) > 1 and lines[1].startswith("omniq "):
        assert "Acme" in lines[1]

    by_url = _run([str(python), "-c", select], env={**env, "OMNIQ_TASK_QUEUE_URL": "acme://shared"})
    assert by_url.returncode == 0, by_url.stderr
    assert by_url.stdout.startswith("omniq_acme.storage AsyncAcmeQueue")

    # a misspelt type names the real one
    wrong = _run([str(python), "-c", select], env={**env, "OMNIQ_TASK_QUEUE_TYPE": "acmee"})
    assert wrong.returncode != 0
    assert "BackendNotFoundError" in wrong.stderr
    assert "Did you mean 'acme'?" in wrong.stderr
    assert "Installed backends: acme, memory." in wrong.stderr
