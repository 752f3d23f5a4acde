"""Load settings from every layer and merge them into one ``OmniQConfig``.

Precedence, lowest first: ``omniq.config.settings`` < YAML file < ``OMNIQ_*`` environment
variables < a dict/OmniQConfig given as ``source`` < keyword arguments.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeAlias

import yaml

from omniq.errors import ConfigurationError

from . import settings
from ._component import ComponentConfig
from ._env_names import register_env_names, warn_unknown_env
from ._fields import COMPONENTS
from ._redact import redact_text
from .model import ALIASES, FIELDS, FLAT_KEYS, OmniQConfig, convert

__all__ = ["ENV_PREFIX", "env_config", "load_config", "register_env_names", "yaml_config"]

ENV_PREFIX = "OMNIQ_"
CONFIG_ENV = "OMNIQ_CONFIG"

Source: TypeAlias = "str | os.PathLike[str] | Mapping[str, Any] | OmniQConfig | None"


def load_config(source: Source = None, /, **overrides: Any) -> OmniQConfig:
    """Build the effective configuration.

    ``source`` is None (read the YAML file named by ``OMNIQ_CONFIG``, if set), a path to a
    YAML file, a dict of settings, or an OmniQConfig. ``overrides`` (arguments in code) win
    over everything. Raises ConfigurationError naming the bad setting and its origin.

    When the environment is read, each ``OMNIQ_*`` variable that is no setting (a typo, a
    name of the original design such as ``OMNIQ_BACKEND``), and ``NATS_SERVERS`` unless
    the task queue is NATS, is reported once per process on the ``omniq.config`` logger,
    with the closest known name or what to set instead.
    """
    layers: list[tuple[dict[str, Any], bool]] = [(_settings_layer(), True)]
    read_env = False
    if isinstance(source, OmniQConfig):
        layers.append(({name: getattr(source, name) for name in FIELDS}, False))
    elif source is None or isinstance(source, (str, os.PathLike, Mapping)):
        if isinstance(source, (str, os.PathLike)):
            layers.append((yaml_config(source), False))
        elif os.environ.get(CONFIG_ENV, "").strip():
            path = os.environ[CONFIG_ENV].strip()
            layers.append((_read_yaml(path, f" (named by {CONFIG_ENV})"), False))
        layers.append((env_config(), False))
        read_env = True
        if isinstance(source, Mapping):
            layers.append((_mapping_layer(source, "config"), False))
    else:
        raise ConfigurationError(
            f"load_config: invalid source {type(source).__name__}; expected None, a path to "
            "a YAML file, a dict of settings or an OmniQConfig"
        )
    if overrides:
        layers.append((_mapping_layer(overrides, "arguments", arguments=True), False))
    config = _build(layers)
    if read_env:
        warn_unknown_env(os.environ, config.task_queue)
    return config


def env_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The environment layer alone: converted values of the ``OMNIQ_*`` variables that are
    set (and not empty), keyed by setting name (``task_queue_url``, ``max_workers``, ...)."""
    env = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if name != ENV_PREFIX + key.upper() or (key not in FIELDS and key not in FLAT_KEYS):
            continue
        raw = env[name]
        if not raw.strip():
            continue
        out[key] = convert(key, raw, f"environment variable {name}")
    return out


def yaml_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The YAML layer alone: converted values of a YAML file, keyed by setting name."""
    return _read_yaml(path, "")


def _read_yaml(path: str | os.PathLike[str], note: str) -> dict[str, Any]:
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"config file {file}{note} does not exist") from None
    except OSError as exc:
        raise ConfigurationError(
            f"config file {file}{note} cannot be read: {exc.strerror or exc}"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(
            f"config file {file}{note} is not valid YAML: {redact_text(str(exc))}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigurationError(
            f"config file {file}{note}: expected a mapping of settings (key: value) at the "
            f"top level, got {type(data).__name__}"
        )
    return _mapping_layer(data, f"config file {file}")


def _valid_keys() -> list[str]:
    return [*FIELDS, *FLAT_KEYS, *ALIASES]


def _mapping_layer(
    data: Mapping[Any, Any], origin: str, *, arguments: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        if not isinstance(raw_key, str):
            raise ConfigurationError(f"{origin}: invalid key {raw_key!r}; expected a string")
        key = ALIASES.get(raw_key.strip().lower(), raw_key.strip().lower())
        if key not in FIELDS and key not in FLAT_KEYS:
            raise _unknown(origin, raw_key)
        where = f"argument {raw_key}" if arguments else f"{origin}, key {raw_key!r}"
        out[key] = convert(key, value, where)
    return out


def _unknown(origin: str, key: str) -> ConfigurationError:
    close = difflib.get_close_matches(key.lower(), _valid_keys(), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else "valid keys are: " + ", ".join(FIELDS)
    return ConfigurationError(f"{origin}: unknown key {key!r}; {hint}")


def _settings_layer() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in (*FIELDS, *FLAT_KEYS):
        if key in COMPONENTS or key.endswith("_options"):
            continue
        name = key.upper()
        if hasattr(settings, name):
            out[key] = convert(key, getattr(settings, name), f"omniq.config.settings.{name}")
    return out


class _Component:
    """A component's settings while the layers are merged."""

    def __init__(self) -> None:
        self.type: str | None = None
        self.url: str | None = None
        self.options: dict[str, Any] = {}
        self.type_is_default = False

    def replace(self, value: ComponentConfig | None) -> None:
        if value is not None and value.type is None and value.url is None:
            self.options.update(value.options)  # options only: refine what lower layers chose
            return
        self.type = None if value is None else value.type
        self.url = None if value is None else value.url
        self.options = {} if value is None else dict(value.options)
        self.type_is_default = False

    def merge(self, layer: Mapping[str, Any], name: str, is_default: bool) -> None:
        has_type, has_url = f"{name}_type" in layer, f"{name}_url" in layer
        if has_type:
            new_type = layer[f"{name}_type"]
            if self.type is not None and new_type != self.type:
                self.url, self.options = None, {}  # another backend: drop the old location
            self.type, self.type_is_default = new_type, is_default
        if has_url:
            self.url = layer[f"{name}_url"]
            if not has_type and self.type_is_default and not is_default:
                self.type, self.type_is_default = None, False  # the URL scheme decides
        self.options.update(layer.get(f"{name}_options", {}))

    def result(self, fsspec_uri: str | None) -> ComponentConfig | None:
        url = self.url
        if url is None and self.type == "file" and fsspec_uri is not None:
            url = fsspec_uri
        if self.type is None and url is None and not self.options:
            return None
        return ComponentConfig(type=self.type, url=url, options=dict(self.options))


def _build(layers: list[tuple[dict[str, Any], bool]]) -> OmniQConfig:
    values: dict[str, Any] = {}
    parts = {name: _Component() for name in COMPONENTS}
    for layer, is_default in layers:
        for name, part in parts.items():
            if name in layer:
                part.replace(layer[name])
            part.merge(layer, name, is_default)
        values.update({k: v for k, v in layer.items() if k in FIELDS and k not in COMPONENTS})
    fsspec_uri = values.get("fsspec_uri")
    for name, part in parts.items():
        values[name] = part.result(fsspec_uri)
    queue = values["task_queue"] or ComponentConfig()
    if queue.type is None and queue.url is None:  # nothing chosen anywhere: the default
        queue.type = settings.TASK_QUEUE_TYPE or "sqlite"
    values["task_queue"] = queue
    return OmniQConfig(**values)
