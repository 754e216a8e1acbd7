"""Typed settings: a frozen dataclass per config section, its fields defaulting from env vars,
validated when built (STYLE.md #4). A leaf module: every component's config uses it."""

from __future__ import annotations

import dataclasses
import os
import time
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from otel_rl.errors import ConfigError


def _cast(var: str, raw: str, kind: type) -> Any:
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"env {var}={raw!r}: expected a boolean (true/false/1/0)")
    try:
        return kind(raw)
    except ValueError as exc:
        raise ConfigError(f"env {var}={raw!r}: expected {kind.__name__}") from exc


def env_default(var: str, default: Any, kind: type = str, scale: float = 1.0) -> Any:
    """A dataclass field whose default comes from env var ``var`` when set (``scale`` converts units)."""

    def factory() -> Any:
        raw = os.environ.get(var)
        if raw is None or raw == "":
            return default
        value = _cast(var, raw, kind)
        return value * scale if scale != 1.0 else value

    return dataclasses.field(default_factory=factory, metadata={"env": var})


def _check_type(path: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or str(origin) == "types.UnionType":
        if value is None and type(None) in args:
            return None
        return _check_type(path, value, next(a for a in args if a is not type(None)))
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: {value!r} is not allowed; allowed: {', '.join(map(repr, args))}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return str(value)
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def build(cls: type, data: Mapping[str, Any] | None, path: str) -> Any:
    """Build frozen dataclass ``cls`` from ``data``, checking names and types."""
    if data is None:
        data = {}
    if dataclasses.is_dataclass(data) and isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of fields, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}: unknown field; allowed: {', '.join(sorted(fields))}")
    kwargs = {k: _check_type(f"{path}.{k}", v, hints[k]) for k, v in data.items()}
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        check(path)
    return obj


def readable_file(path: str, value: str | None) -> None:
    """Config check for a file option (secrets, certificates): set means it must exist."""
    if value and not Path(value).is_file():
        raise ConfigError(f"{path}: {value!r} is not a readable file")


def positive(path: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{path}: must be > 0, got {value!r}")


def default_run_name() -> str:
    return time.strftime("run-%Y%m%d-%H%M%S") + f"-{os.getpid()}"


def read_mapping(source: Mapping[str, Any] | str | Path | None, what: str) -> dict:
    """``source`` as a dict: a mapping as is, a path read as YAML; errors name ``what``."""
    if isinstance(source, (str, Path)):
        import yaml

        path = Path(source)
        try:
            source = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"config file {str(path)!r}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(path)!r}: invalid YAML: {exc}") from exc
    if source is not None and not isinstance(source, Mapping):
        raise ConfigError(f"{what}: expected a mapping, a YAML path or a Config, got {source!r}")
    return dict(source or {})


def writable_dir(path: str, directory: str | os.PathLike) -> None:
    """Create ``directory`` (and parents) and check that a file can be written in it: a typo'd or
    unwritable directory fails at start with the path and the OS error, not after a run of
    retries at exit."""
    import tempfile

    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".otel-rl-check-"):
            pass
    except OSError as e:
        raise ConfigError(f"{path}: cannot write to {os.fspath(directory)!r}: "
                          f"{e.strerror or e} (errno {e.errno})") from None
