"""Serialization: msgspec first, signed dill for the rest, refusal before unpickling."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import pathlib
import uuid
from typing import Any

import dill
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omniq.errors import SerializationError, SignatureError
from omniq.models import CatchUp, Schedule, ScheduleState, Task, TaskResult, TaskStatus
from omniq.serialization import (
    DillSerializer,
    MsgspecSerializer,
    SerializationDetector,
    SerializationManager,
    default_manager,
    set_default_manager,
)
from omniq.serialization.manager import DILL_EXT_CODE, MSGPACK_HEADER

KEY = "test-key-1"


@pytest.fixture
def sm() -> SerializationManager:
    return SerializationManager(KEY)


def dill_wire(body: bytes, signature: bytes) -> bytes:
    """A value payload whose only content is a dill extension: header + msgpack ext."""
    ext = msgspec.msgpack.Ext(DILL_EXT_CODE, signature + body)
    return bytes([MSGPACK_HEADER]) + msgspec.msgpack.encode(ext)


def sign(key: str, body: bytes) -> bytes:
    return hmac.new(key.encode(), body, hashlib.sha256).digest()


class Touch:
    """Unpickling this creates a file: the side effect a refused payload must not have."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (pathlib.Path.touch, (self.path,))


# --- msgspec values ------------------------------------------------------------------------


class Point(msgspec.Struct):
    x: int
    y: float


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(2**63),
        2**64 - 1,
        1.5,
        "héllo",
        b"\x00\xff",
        [1, "a", None, [2.5]],
        {"a": {"b": [1, 2]}, "c": None},
        dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    ],
)
def test_msgspec_values_round_trip_without_dill(value: Any) -> None:
    keyless = SerializationManager(None)  # msgspec values never need the key
    data = keyless.dumps(value)
    assert data[0] == MSGPACK_HEADER
    assert keyless.format_of(data) == "msgspec"
    assert keyless.loads(data) == value
    assert SerializationDetector().format_for(value) == "msgspec"


def test_typed_values_round_trip(sm: SerializationManager) -> None:
    for value, type_ in [
        ((1, "a"), tuple[int, str]),
        ({1, 2}, set[int]),
        (uuid.UUID(int=7), uuid.UUID),
        (dt.date(2026, 1, 2), dt.date),
        (Point(1, 2.0), Point),
    ]:
        assert sm.decode(sm.dumps(value), type_) == value


def test_plain_msgspec_serializer() -> None:
    ser = MsgspecSerializer()
    assert ser.loads(ser.dumps({"a": [1]})) == {"a": [1]}
    with pytest.raises(SerializationError, match="msgspec cannot encode"):
        ser.dumps(lambda: 1)
    with pytest.raises(SerializationError, match="cannot decode msgpack payload"):
        ser.loads(b"\xc1")


# --- dill-only values -----------------------------------------------------------------------


def make_local_object() -> Any:
    class Local:
        def __init__(self, n: int) -> None:
            self.n = n

        def double(self) -> int:
            return self.n * 2

    return Local(21)


def test_dill_only_values_round_trip_with_key(sm: SerializationManager) -> None:
    fn = sm.loads(sm.dumps(lambda v: v + 1))
    assert fn(1) == 2
    obj = sm.loads(sm.dumps(make_local_object()))
    assert obj.double() == 42
    assert SerializationDetector().format_for(lambda: 0) == "dill"


def test_dill_only_inside_msgpack_keeps_the_rest_readable(sm: SerializationManager) -> None:
    data = sm.dumps({"plain": [1, 2], "fn": lambda: 3})
    # the outer structure is msgpack: decode it without the key, extensions left opaque
    raw = msgspec.msgpack.decode(data[1:])
    assert raw["plain"] == [1, 2] and isinstance(raw["fn"], msgspec.msgpack.Ext)
    back = sm.loads(data)
    assert back["plain"] == [1, 2] and back["fn"]() == 3


def test_dill_without_key_says_how_to_set_one() -> None:
    keyless = SerializationManager(None)
    for value in (lambda: 1, make_local_object()):
        with pytest.raises(SerializationError, match="OMNIQ_SECRET_KEY") as e:
            keyless.dumps(value)
        assert "export OMNIQ_SECRET_KEY=" in str(e.value)
        assert "needs dill" in str(e.value)
    with pytest.raises(SerializationError, match="OMNIQ_SECRET_KEY"):
        keyless.encode_task(Task(func="m:f", args=(lambda: 1,)))


def test_signed_payload_verifies(sm: SerializationManager) -> None:
    data = sm.dumps(make_local_object(), format="dill")
    ext = msgspec.msgpack.decode(data[1:])
    assert isinstance(ext, msgspec.msgpack.Ext) and ext.code == DILL_EXT_CODE
    raw = bytes(ext.data)
    sig, body = raw[:32], raw[32:]
    assert hmac.compare_digest(sig, sign(KEY, body))
    assert sm.loads(data).double() == 42


def test_format_dill_forces_dill_for_plain_values(sm: SerializationManager) -> None:
    data = sm.dumps({"a": 1}, format="dill")
    assert isinstance(msgspec.msgpack.decode(data[1:]), msgspec.msgpack.Ext)
    assert sm.loads(data) == {"a": 1}
    with pytest.raises(SerializationError, match="unknown serializer 'yaml'"):
        sm.dumps(1, format="yaml")


# --- refusing bad payloads before unpickling -----------------------------------------------------


class TestRefusedBeforeUnpickling:
    def test_control_a_correctly_signed_payload_does_run(
        self, sm: SerializationManager, tmp_path: pathlib.Path
    ) -> None:
        # proves the payload below really has a side effect when unpickled
        marker = tmp_path / "pwned"
        body = dill.dumps(Touch(marker))
        sm.loads(dill_wire(body, sign(KEY, body)))
        assert marker.exists()

    def test_wrong_key(self, sm: SerializationManager, tmp_path: pathlib.Path) -> None:
        marker = tmp_path / "pwned"
        body = dill.dumps(Touch(marker))
        with pytest.raises(SignatureError, match="signature does not match"):
            sm.loads(dill_wire(body, sign("attacker-key", body)))
        assert not marker.exists()

    def test_unsigned(self, sm: SerializationManager, tmp_path: pathlib.Path) -> None:
        marker = tmp_path / "pwned"
        body = dill.dumps(Touch(marker))
        with pytest.raises(SignatureError):
            sm.loads(dill_wire(body, b""))  # a bare pickle, no signature
        with pytest.raises(SignatureError, match="carries no signature"):
            sm.loads(dill_wire(b"", b"x" * 10))
        assert not marker.exists()

    def test_tampered_body(self, sm: SerializationManager, tmp_path: pathlib.Path) -> None:
        marker = tmp_path / "pwned"
        honest = sm.dumps(make_local_object(), format="dill")
        sig = bytes(msgspec.msgpack.decode(honest[1:]).data)[:32]
        evil = dill.dumps(Touch(marker))
        with pytest.raises(SignatureError, match="tampered"):
            sm.loads(dill_wire(evil, sig))
        assert not marker.exists()

    def test_no_key_configured(self, tmp_path: pathlib.Path) -> None:
        marker = tmp_path / "pwned"
        body = dill.dumps(Touch(marker))
        with pytest.raises(SignatureError, match="no signing key is configured"):
            SerializationManager(None).loads(dill_wire(body, sign(KEY, body)))
        assert not marker.exists()

    def test_inside_a_task(self, sm: SerializationManager, tmp_path: pathlib.Path) -> None:
        marker = tmp_path / "pwned"
        data = SerializationManager("attacker-key").encode_task(
            Task(func="m:f", args=(Touch(marker),), serializer="dill")
        )
        assert not marker.exists()
        with pytest.raises(SignatureError):
            sm.decode_task(data)
        assert not marker.exists()

    def test_signature_error_is_a_serialization_error(self) -> None:
        assert issubclass(SignatureError, SerializationError)

    def test_dill_serializer_directly(self, tmp_path: pathlib.Path) -> None:
        marker = tmp_path / "pwned"
        ser = DillSerializer("k")
        body = dill.dumps(Touch(marker))
        with pytest.raises(SignatureError):
            ser.loads(sign("other", body) + body)
        assert not marker.exists()
        assert ser.loads(ser.dumps([1, 2])) == [1, 2]


def test_old_key_rotation() -> None:
    old = SerializationManager("old-key")
    data = old.dumps(lambda: "from before the rotation")
    rotated = SerializationManager("new-key", old_keys=["old-key"])
    assert rotated.loads(data)() == "from before the rotation"
    new_data = rotated.dumps(lambda: "new")
    # new payloads are signed with the new key only
    with pytest.raises(SignatureError):
        old.loads(new_data)
    assert SerializationManager("new-key").loads(new_data)() == "new"
    # once the old key is dropped, old payloads are refused
    with pytest.raises(SignatureError):
        SerializationManager("new-key").loads(data)


def test_default_manager_follows_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMNIQ_SECRET_KEY", raising=False)
    monkeypatch.delenv("OMNIQ_OLD_SECRET_KEYS", raising=False)
    set_default_manager(None)
    try:
        with pytest.raises(SerializationError, match="OMNIQ_SECRET_KEY"):
            default_manager().dumps(lambda: 1)
        monkeypatch.setenv("OMNIQ_SECRET_KEY", "k-old")
        data = default_manager().dumps(lambda: 5)
        monkeypatch.setenv("OMNIQ_SECRET_KEY", "k-new")
        monkeypatch.setenv("OMNIQ_OLD_SECRET_KEYS", "unrelated, k-old")
        assert default_manager().loads(data)() == 5
        custom = SerializationManager("x")
        set_default_manager(custom)
        assert default_manager() is custom
    finally:
        set_default_manager(None)


# --- corrupt bytes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "empty payload"),
        (b"\x07abc", "unknown header byte 0x07"),
        (b"\x01\xc1", "malformed"),
        (b"\x01\x92\x01", "Expected `object`, got `array`"),
        (b"\x01\x81\xa4func", "truncated|malformed|Input data was truncated"),
        (b"\x00\x05ab\xff", "codec can't decode"),
        (b"\x00\x04yaml---", "serializer 'yaml', which is not installed"),
    ],
)
def test_corrupt_bytes_name_the_problem(
    sm: SerializationManager, data: bytes, problem: str
) -> None:
    with pytest.raises(SerializationError, match=problem):
        sm.decode_task(data)


def test_corrupt_results_and_schedules(sm: SerializationManager) -> None:
    with pytest.raises(SerializationError, match="cannot decode TaskResult"):
        sm.decode_result(b"\x01\x01")
    with pytest.raises(SerializationError, match="cannot decode Schedule"):
        sm.decode_schedule(b"\x01" + msgspec.msgpack.encode({"func": "m:f", "cron": "bad"}))


def test_unknown_extension_code(sm: SerializationManager) -> None:
    data = b"\x01" + msgspec.msgpack.encode(msgspec.msgpack.Ext(9, b"zz"))
    with pytest.raises(SerializationError, match="unknown msgpack extension code 9"):
        sm.loads(data)


def test_corrupt_dill_body_with_valid_signature(sm: SerializationManager) -> None:
    body = b"\x80\x04not a pickle"
    with pytest.raises(SerializationError, match="cannot unpickle a signed dill payload"):
        sm.loads(dill_wire(body, sign(KEY, body)))


def test_format_of(sm: SerializationManager) -> None:
    assert sm.format_of(sm.dumps(1)) == "msgspec"
    with pytest.raises(SerializationError, match="empty"):
        sm.format_of(b"")
    with pytest.raises(SerializationError, match="header byte 0x42"):
        sm.format_of(b"\x42")


# --- Task.serializer and plugin serializers ------------------------------------------------------


def test_task_serializer_dill_forces_dill(sm: SerializationManager) -> None:
    t = Task(func="m:f", args=(1, [2, 3]), kwargs={"k": {"a": 1}}, serializer="dill")
    data = sm.encode_task(t)
    raw = msgspec.msgpack.decode(data[1:])
    assert all(isinstance(a, msgspec.msgpack.Ext) for a in raw["args"])
    assert all(isinstance(v, msgspec.msgpack.Ext) for v in raw["kwargs"].values())
    back = sm.decode_task(data)
    assert back.args == (1, [2, 3]) and back.kwargs == {"k": {"a": 1}}
    assert back.serializer == "dill" and back == t
    # the original task is left as it was
    assert t.args == (1, [2, 3]) and t.kwargs == {"k": {"a": 1}}
    with pytest.raises(SerializationError, match="OMNIQ_SECRET_KEY"):
        SerializationManager(None).encode_task(t)


def test_task_without_hint_uses_msgpack(sm: SerializationManager) -> None:
    data = sm.encode_task(Task(func="m:f", args=(1,), kwargs={"k": "v"}))
    raw = msgspec.msgpack.decode(data[1:])
    assert raw["args"] == [1] and raw["kwargs"] == {"k": "v"}


class Reverse:
    """A plugin serializer."""

    name = "reverse"

    def dumps(self, value: Any) -> bytes:
        return str(value).encode()[::-1]

    def loads(self, data: bytes) -> Any:
        return data[::-1].decode()


def test_plugin_serializer() -> None:
    sm = SerializationManager(KEY, serializers=[Reverse()])
    data = sm.dumps("abc", format="reverse")
    assert sm.format_of(data) == "reverse"
    assert sm.loads(data) == "abc"
    with pytest.raises(SerializationError, match="serializer 'reverse', which is not installed"):
        SerializationManager(KEY).loads(data)


# --- property tests: models round-trip ------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ids = st.text(alphabet="0123456789abcdef", min_size=26, max_size=26)
times = st.floats(min_value=0, max_value=4e9, allow_nan=False)
opt_times = st.none() | times

tasks = st.builds(
    Task,
    func=st.text(min_size=1, max_size=30),
    args=st.lists(values, max_size=4).map(tuple),
    kwargs=st.dictionaries(st.text(max_size=8), values, max_size=4),
    id=ids,
    queue=st.text(min_size=1, max_size=10),
    priority=st.integers(-100, 100),
    status=st.sampled_from(TaskStatus),
    created_at=times,
    run_at=opt_times,
    expires_at=opt_times,
    timeout=st.none() | st.floats(min_value=0.1, max_value=1e5),
    retries=st.integers(0, 10),
    attempt=st.integers(0, 10),
    lease_until=opt_times,
    worker_id=st.none() | st.text(max_size=10),
    depends_on=st.lists(ids, max_size=3),
    metadata=st.dictionaries(st.text(max_size=8), values, max_size=3),
    serializer=st.sampled_from([None, "msgspec", "dill"]),
    error=st.none() | st.text(max_size=20),
)
results = st.builds(
    TaskResult,
    task_id=ids,
    status=st.sampled_from(TaskStatus),
    result=values,
    error=st.none() | st.text(max_size=20),
    traceback=st.none() | st.text(max_size=40),
    attempt=st.integers(0, 10),
    started_at=opt_times,
    finished_at=times,
    expires_at=opt_times,
    metadata=st.dictionaries(st.text(max_size=8), values, max_size=3),
)
schedules = st.one_of(
    st.builds(Schedule, func=st.text(min_size=1, max_size=20), interval=st.floats(0.5, 1e6)),
    st.builds(Schedule, func=st.text(min_size=1, max_size=20), at=times),
    st.builds(
        Schedule,
        func=st.text(min_size=1, max_size=20),
        cron=st.sampled_from(["* * * * *", "*/5 * * * *", "0 9 * * 1-5", "30 2 1 * *"]),
        timezone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"]),
    ),
).flatmap(
    lambda s: st.builds(
        msgspec.structs.replace,
        st.just(s),
        args=st.lists(values, max_size=3).map(tuple),
        kwargs=st.dictionaries(st.text(max_size=8), values, max_size=3),
        state=st.sampled_from(ScheduleState),
        catch_up=st.sampled_from(CatchUp),
        run_count=st.integers(0, 100),
        queue=st.text(min_size=1, max_size=10),
        priority=st.integers(-10, 10),
    )
)


def _fields(obj: msgspec.Struct) -> dict[str, Any]:
    return {f: getattr(obj, f) for f in obj.__struct_fields__}


@settings(max_examples=150, deadline=None)
@given(task=tasks)
def test_task_round_trip(task: Task) -> None:
    sm = SerializationManager(KEY)
    back = sm.decode_task(sm.encode_task(task))
    assert _fields(back) == _fields(task)


@settings(max_examples=150, deadline=None)
@given(result=results)
def test_result_round_trip(result: TaskResult) -> None:
    sm = SerializationManager(KEY)
    back = sm.decode_result(sm.encode_result(result))
    assert _fields(back) == _fields(result)


@settings(max_examples=100, deadline=None)
@given(schedule=schedules)
def test_schedule_round_trip(schedule: Schedule) -> None:
    sm = SerializationManager(KEY)
    back = sm.decode_schedule(sm.encode_schedule(schedule))
    assert _fields(back) == _fields(schedule)


def test_no_key_is_needed_for_msgspec_models() -> None:
    sm = SerializationManager(None)
    t = Task(func="m:f", args=(1, "x"), kwargs={"d": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)})
    assert sm.decode_task(sm.encode_task(t)).kwargs == t.kwargs


def test_plugin_serializer_is_used_by_the_default_manager() -> None:
    import json

    from omniq.plugins import get_plugin_manager, hookimpl
    from omniq.serialization import manager as mgr

    class JsonSerializer:
        name = "json"

        def dumps(self, value: object) -> bytes:
            return json.dumps(value).encode()

        def loads(self, data: bytes) -> object:
            return json.loads(data)

    class Plugin:
        @hookimpl
        def omniq_serializers(self) -> list[object]:
            return [JsonSerializer()]

    pm = get_plugin_manager()
    plugin = Plugin()
    pm.register(plugin)
    try:
        mgr.set_default_manager(None)
        m = mgr.default_manager()
        data = m.dumps({"a": [1, 2]}, format="json")
        assert m.format_of(data) == "json" and m.loads(data) == {"a": [1, 2]}
    finally:
        pm.unregister(plugin)
        mgr.set_default_manager(None)
