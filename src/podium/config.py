"""Reading YAML config files into pydantic models, with errors that name the file, the key and the fix."""

from __future__ import annotations

from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from podium.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def format_validation(err: ValidationError) -> str:
    """One indented line per problem: the dotted key, then what is wrong with it."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key; remove it or check its spelling" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def parse_yaml(text: str, source: str, model: type[M], what: str) -> M:
    """Parse YAML ``text`` into ``model``; ConfigError names ``source`` (the file) and each bad key."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a {what} file must be a YAML mapping")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid {what}:\n{format_validation(exc)}") from None
