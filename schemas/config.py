"""Loading typed configs from YAML: unknown keys and bad values are one-line errors naming the key."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError


class ConfigError(ValueError):
    """A config file is missing, unreadable or invalid; the message is one line."""


Model = TypeVar("Model", bound=BaseModel)


def describe(error: ValidationError, origin: str) -> str:
    """One line for the first validation error, naming its key path."""
    first = error.errors()[0]
    path = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = error.error_count() - 1
    suffix = f" (and {more} more)" if more else ""
    if first["type"] == "extra_forbidden":
        return f"{origin}: unknown key {path!r}{suffix}"
    if first["type"] == "missing":
        return f"{origin}: missing key {path!r}{suffix}"
    return f"{origin}: {path}: {first['msg'].removeprefix('Value error, ')}{suffix}"


def parse_config(data: Any, model: type[Model], origin: str = "config") -> Model:
    """Validate a mapping as `model`, raising ConfigError with one line."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(describe(error, origin)) from None


def read_yaml(path: str | os.PathLike[str], what: str = "config file",
              error: type[ValueError] = ConfigError) -> Any:
    """The parsed YAML of a file; a missing, unreadable or invalid file raises `error` in one line."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} not found: {file}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read {what} {file}: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise error(f"{file}{where}: invalid YAML: {problem}") from None


def load_config(path: str | os.PathLike[str], model: type[Model]) -> Model:
    """Read a YAML file and validate it as `model`."""
    data = read_yaml(path)
    return parse_config(data if data is not None else {}, model, str(path))


def load_config_with_lake(path: str | os.PathLike[str] | None, model: type[Model], lake: str | None = None) -> Model:
    """`model` from a YAML file (its defaults when no path), with its `lake` replaced when one is given."""
    config = load_config(path, model) if path else model()
    return config.model_copy(update={"lake": lake}) if lake else config
