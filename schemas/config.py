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


def load_config(path: str | os.PathLike[str], model: type[Model]) -> Model:
    """Read a YAML file and validate it as `model`."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {file}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file {file}: {error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{file}: invalid YAML: {' '.join(str(error).split())}") from None
    return parse_config(data if data is not None else {}, model, str(file))
