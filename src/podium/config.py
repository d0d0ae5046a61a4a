"""Reading YAML config files into pydantic models, with errors that name the file, the key and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import ConfigError
from .suggest import did_you_mean

M = TypeVar("M", bound=BaseModel)


def field_names(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> set[str]:
    """Every field name of ``model`` and of the models nested in it (for "did you mean")."""
    seen = seen if seen is not None else set()
    if model in seen:
        return set()
    seen.add(model)
    names = set(model.model_fields)
    for field in model.model_fields.values():
        for arg in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                names |= field_names(arg, seen)
    return names


def format_validation(err: ValidationError, model: type[BaseModel] | None = None) -> str:
    """Every problem as ``key: what is wrong``, joined by "; " so the error stays one line."""
    lines: list[str] = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "backend_options":  # a model's backend keys (loc ends in 'options'): one entry per key
            where = "".join(f"{p}." for p in e["loc"][:-1])
            lines.extend(f"{where}{sub}: {what}" for sub, what in e["ctx"]["problems"])
            continue
        if e["type"] == "extra_forbidden":
            hint = did_you_mean(str(e["loc"][-1]), field_names(model)) if model else ""
            msg = f"unknown key{hint}; remove it or check its spelling"
        lines.append(f"{key}: {msg}")
    return "; ".join(lines)


def parse_yaml(text: str, source: str, model: type[M], what: str) -> M:
    """Parse YAML ``text`` into ``model``; ConfigError names ``source`` (the file) and each bad key."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a {what} file must be a YAML mapping")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid {what}: {format_validation(exc, model)}") from None


def read_text_file(path: Path, what: str) -> str:
    """The UTF-8 text of a config file; ConfigError (one line) for a binary or non-UTF-8 file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} file: {exc.strerror or exc}") from None
    if b"\x00" in data[:8192]:
        hint = " (a head .npz is used with --coordinator learned:PATH, not as a pool)" if path.suffix == ".npz" else ""
        raise ConfigError(f"{path}: binary file, not a YAML {what} file{hint}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (bad byte at line {line}); save the {what} file as UTF-8") from None
