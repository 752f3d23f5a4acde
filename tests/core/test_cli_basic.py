"""The ``omniq`` command line: ``backends`` and ``config show``, in process and as a program."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from omniq import cli
from omniq.errors import ConfigurationError
from omniq.plugins import reset_plugin_manager

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "s3cr3t-Pa55word"
SECRET_URL = f"redis://alice:{PASSWORD}@cache.internal:6379/0"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("OMNIQ_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "200")  # wide tables: whole values on one line
    monkeypatch.setenv("NO_COLOR", "1")
    reset_plugin_manager()
    yield
    reset_plugin_manager()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- omniq backends ---------------------------------------------------------------------------


def test_backends_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "backends")
    assert code == 0, err
    assert "OmniQ backends" in out
    for header in ("Backend", "Schemes", "Components", "Default URL", "Package", "Plugin"):
        assert header in out
    row = next(line for line in out.splitlines() if line.split()[:1] == ["memory"])
    for cell in ("memory://", "tasks, results, events, schedules", "omniq-core", "omniq.builtin"):
        assert cell in row
    assert "No plugin failed to load." in out


def test_backends_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "backends", "--json")
    assert code == 0
    data = json.loads(out)
    memory = next(b for b in data["backends"] if b["name"] == "memory")
    assert memory == {
        "name": "memory",
        "schemes": ["memory"],
        "components": ["task_queue", "result_storage", "event_storage", "schedule_storage"],
        "default_url": "memory://",
        "package": "omniq-core",
        "plugin": "omniq.builtin",
        "description": memory["description"],
    }
    assert data["load_errors"] == []


def test_backends_lists_plugins_that_failed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    name = f"omniq_broken_plugin_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("import omniq_driver_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("OMNIQ_PLUGINS", name)
    code, out, _ = run(capsys, "backends")
    assert code == 0
    assert "Plugins that failed to load" in out
    row = next(line for line in out.splitlines() if name in line)
    assert "OMNIQ_PLUGINS" in row and "ModuleNotFoundError" in row
    assert "memory://" in out  # the others still load
    code, out, _ = run(capsys, "backends", "--json")
    (error,) = json.loads(out)["load_errors"]
    assert error["plugin"] == name and "omniq_driver_that_is_not_installed" in error["error"]


# --- omniq config show ------------------------------------------------------------------------


def test_config_show_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "config", "show")
    assert code == 0, err
    assert "OmniQ configuration" in out
    lines = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    assert "type=sqlite" in lines["task_queue"]
    assert "same backend as task_queue" in lines["result_storage"]
    assert "off" in lines["event_storage"]
    assert "10" in lines["max_workers"]


def test_config_show_redacts_the_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMNIQ_TASK_QUEUE_URL", SECRET_URL)
    monkeypatch.setenv("OMNIQ_SECRET_KEY", "signing-" + PASSWORD)
    monkeypatch.setenv("OMNIQ_MAX_WORKERS", "3")
    code, out, _ = run(capsys, "config", "show")
    assert code == 0
    assert PASSWORD not in out
    assert "redis://alice:***@cache.internal:6379/0" in out
    code, out, _ = run(capsys, "config", "show", "--json")
    assert code == 0 and PASSWORD not in out
    data = json.loads(out)
    assert data["task_queue"]["url"] == "redis://alice:***@cache.internal:6379/0"
    assert data["secret_key"] == "***"
    assert data["max_workers"] == 3


def test_config_show_reads_a_yaml_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "omniq.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            task_queue: {{type: memory}}
            event_storage: "{SECRET_URL}"
            max_workers: 4
            """
        )
    )
    code, out, _ = run(capsys, "config", "show", "--json", "--config", str(path))
    assert code == 0 and PASSWORD not in out
    data = json.loads(out)
    assert data["task_queue"]["type"] == "memory" and data["max_workers"] == 4
    assert data["event_storage"]["url"].startswith("redis://alice:***@")


def test_bad_setting_is_one_red_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMNIQ_MAX_WORKERS", "lots")
    code, out, err = run(capsys, "config", "show")
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "OMNIQ_MAX_WORKERS" in err and "'lots'" in err


def test_error_message_never_shows_the_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # a URL typed without its scheme: the value is invalid, and still must not be echoed
    monkeypatch.setenv("OMNIQ_TASK_QUEUE_URL", f"alice:{PASSWORD}@cache.internal:6379")
    code, _, err = run(capsys, "config", "show")
    assert code == 2 and PASSWORD not in err


def test_missing_or_unknown_subcommand_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in ([], ["config"], ["nonsense"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2
    assert "usage: omniq" in capsys.readouterr().err


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "backends" in out and "config" in out
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.startswith("omniq ")


def test_a_broken_command_module_does_not_take_the_cli_down(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    name = f"omniq_broken_commands_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("raise RuntimeError('half-written module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "COMMAND_MODULES", [*cli.COMMAND_MODULES, name, "omniq_no_such_x"])
    code, out, err = run(capsys, "backends", "--json")
    assert code == 0 and json.loads(out)["backends"]
    assert err == (
        f"warning: commands of {name} are unavailable: RuntimeError: half-written module\n"
    )


# --- room for more commands --------------------------------------------------------------------


def test_new_commands_plug_into_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    def configure(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("schedule_id")

    cli.GROUPS["zz-test-group"] = "a group added by a test"

    @cli.command("zz-test-group", "hello", help="greet a name", configure=configure)
    def hello(args: argparse.Namespace, console: Console) -> int:
        console.print(f"hello {args.schedule_id}")
        return 0

    @cli.command("zz-test-explode", help="raise an OmniQError")
    def explode(args: argparse.Namespace, console: Console) -> int:
        raise ConfigurationError("something is\nmisconfigured")

    try:
        assert run(capsys, "zz-test-group", "hello", "s-1")[:2] == (0, "hello s-1\n")
        code, out, err = run(capsys, "zz-test-explode")
        assert code == 2 and out == ""
        assert err == "error: something is misconfigured\n"
        # the built-in commands are unaffected
        assert run(capsys, "backends", "--json")[0] == 0
    finally:
        cli.COMMANDS.pop(("zz-test-group", "hello"))
        cli.COMMANDS.pop(("zz-test-explode",))
        cli.GROUPS.pop("zz-test-group")


# --- as a program ----------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not installed")
def test_uv_run_omniq() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    env.update(COLUMNS="200", NO_COLOR="1", OMNIQ_TASK_QUEUE_URL=SECRET_URL)
    uv = shutil.which("uv")
    assert uv is not None

    def omniq(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [uv, "run", "--no-sync", "omniq", *argv],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    listed = omniq("backends")
    assert listed.returncode == 0, listed.stderr
    assert "memory://" in listed.stdout and "omniq.builtin" in listed.stdout
    shown = omniq("config", "show")
    assert shown.returncode == 0, shown.stderr
    assert PASSWORD not in shown.stdout + shown.stderr
    assert "alice:***@cache.internal" in shown.stdout
    bad = subprocess.run(
        [uv, "run", "--no-sync", "omniq", "config", "show"],
        cwd=REPO,
        env={**env, "OMNIQ_RETRY_DELAY": "soon"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and "OMNIQ_RETRY_DELAY" in bad.stderr


def test_module_is_runnable() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIQ_")}
    done = subprocess.run(
        [sys.executable, "-m", "omniq.cli", "backends", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert any(b["name"] == "memory" for b in json.loads(done.stdout)["backends"])
