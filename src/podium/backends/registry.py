"""The backend registry: each ``backend:`` kind of a pool model, its factory and its own config model.

A pool model's keys are of two sorts: the keys every model has (name, prices, roles, timeouts, ...:
the fields of :class:`podium.pool.ModelSpec`) and the keys of its backend kind, validated by that
kind's :attr:`BackendType.options` model (which rejects unknown keys). So the ``backend:`` key chooses
the config model, as a discriminated union does, and the union is open: an installed package adds a
kind through the ``podium.backends`` entry point group (see docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..checks.spec import CheckSpec
from ..registry import Registry
from ..suggest import did_you_mean

if TYPE_CHECKING:
    from ..pool import ModelSpec
    from .base import Backend

__all__ = [
    "BACKENDS",
    "BackendOptions",
    "BackendType",
    "CheckOptions",
    "LocalOptions",
    "OpenAIOptions",
    "ScriptedOptions",
    "backend_type",
    "describe_options_error",
]

ENTRY_POINT_GROUP = "podium.backends"


class BackendOptions(BaseModel):
    """The keys one backend kind takes besides the common ones; a kind without own keys uses this."""

    model_config = ConfigDict(extra="forbid")


class OpenAIOptions(BackendOptions):
    """``backend: openai``: any OpenAI-compatible chat-completions endpoint."""

    base_url: str = Field(min_length=1)
    model: str | None = None  # the provider's model id (default: the pool model's name)
    api_key_env: str | None = None  # the environment variable holding the key (never the key itself)
    extra_body: dict[str, Any] = Field(default_factory=dict)  # merged into every request body
    structured_output: bool = False  # the endpoint supports response_format json_schema
    headers: dict[str, str] = Field(default_factory=dict)  # extra HTTP headers (residency...); "${VAR}" reads the env


class LocalOptions(BackendOptions):
    """``backend: local``: a GGUF model embedded in this process (llama-cpp-python)."""

    model: str = Field(min_length=1)  # a GGUF path or package:NAME
    extra_body: dict[str, Any] = Field(default_factory=dict)  # llama.cpp sampling options
    n_threads: int | None = Field(default=None, ge=1)  # llama.cpp threads (default: physical cores not busy at load)
    # Reuse llama.cpp's KV cache of the previous prompt's common prefix (None or true: yes, fast). false:
    # every call evaluates its whole prompt, so temperature 0 gives the same answer whatever came
    # before (reuse evaluates the rest in a smaller batch, which can flip a greedy choice on some CPUs).
    prompt_cache: bool | None = None


class ScriptedOptions(BackendOptions):
    """``backend: scripted``: canned replies (cycled) or a ``module:callable`` of the request."""

    replies: list[str] | None = None
    function: str | None = None


class CheckOptions(BackendOptions):
    """``backend: check``: a static check that verifies answers inside a run."""

    check: CheckSpec


BackendFactory = Callable[["ModelSpec", "httpx.AsyncClient | None"], "Backend"]


@dataclass(frozen=True)
class BackendType:
    """One backend kind: ``name`` is the value of a pool model's ``backend:`` key.

    ``factory(spec, client)`` makes the backend of one pool model (``client`` is the run's shared
    httpx client when ``shares_http_client``, else None); ``spec.options`` holds the validated
    ``options`` model. ``roles``, when set, are the only roles a model of this kind can take.
    """

    name: str
    factory: BackendFactory
    options: type[BaseModel] = BackendOptions
    shares_http_client: bool = False
    roles: tuple[str, ...] | None = None
    description: str = ""


def _openai(spec: ModelSpec, client: httpx.AsyncClient | None) -> Backend:
    from .openai import OpenAIBackend

    return OpenAIBackend(spec, client)


def _local(spec: ModelSpec, client: httpx.AsyncClient | None) -> Backend:
    from .local import LocalBackend

    return LocalBackend(spec)


def _scripted(spec: ModelSpec, client: httpx.AsyncClient | None) -> Backend:
    from .scripted import ScriptedBackend

    return ScriptedBackend(spec)


def _check(spec: ModelSpec, client: httpx.AsyncClient | None) -> Backend:
    from .check import CheckBackend

    return CheckBackend(spec)


def _register_builtins(registry: Registry[BackendType]) -> None:
    registry.register(
        BackendType("openai", _openai, OpenAIOptions, shares_http_client=True, description="OpenAI-compatible HTTP")
    )
    registry.register(BackendType("local", _local, LocalOptions, description="embedded GGUF (llama.cpp)"))
    registry.register(BackendType("scripted", _scripted, ScriptedOptions, description="canned replies, tests"))
    registry.register(BackendType("check", _check, CheckOptions, roles=("verifier",), description="static check"))


BACKENDS: Registry[BackendType] = Registry(ENTRY_POINT_GROUP, BackendType, _register_builtins)


def known_backends() -> str:
    """``openai, local, ...``: the registered kinds, for error messages."""
    return ", ".join(BACKENDS.names())


def unknown_backend_message(kind: object) -> str:
    """One line: the kind is unknown, which ones exist, how to add one."""
    hint = did_you_mean(str(kind), BACKENDS.names())
    return (
        f"unknown backend '{kind}'{hint}; known backends: {known_backends()} "
        f"(a package adds one through the '{ENTRY_POINT_GROUP}' entry point group)"
    )


def backend_type(kind: str) -> BackendType:
    """The registered kind called ``kind``; ConfigError (listing the known kinds) if there is none."""
    from ..errors import ConfigError

    found = BACKENDS.get(kind)
    if found is None:
        raise ConfigError(unknown_backend_message(kind))
    return found


def _owners(key: str) -> list[str]:
    return [t.name for t in BACKENDS.entries() if key in t.options.model_fields]


def describe_options_error(exc: ValidationError, kind: BackendType, common: set[str]) -> list[tuple[str, str]]:
    """Each problem of a model's backend keys as ``(key, what is wrong and the fix)``."""
    own = sorted(kind.options.model_fields)
    takes = f"backend '{kind.name}' takes {', '.join(own)} besides the common keys" if own else ""
    problems = []
    for e in exc.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            owners = [o for o in _owners(key) if o != kind.name]
            if owners:
                msg = f"not a key of backend '{kind.name}' (it belongs to backend {', '.join(owners)}); remove it"
            else:
                hint = did_you_mean(key, set(own) | common)
                msg = f"unknown key{hint}; remove it or check its spelling"
            problems.append((key, f"{msg}; {takes}" if takes else msg))
            takes = ""  # said once
        elif e["type"] == "missing":
            problems.append((key, f"backend '{kind.name}' needs this key"))
        else:
            problems.append((key, e["msg"]))
    return problems
