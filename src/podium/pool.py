"""Pools: which models exist, how to reach them, what they cost, where they run, which roles they take.

A pool is a YAML file parsed into :class:`PoolConfig`; unknown keys are rejected and every
error names the file, the key and the fix. ``load_pool("embedded")`` loads a shipped pool,
``load_pool("path/to/pool.yaml")`` a file. :class:`Policy` narrows a pool (regions, providers,
excluded models) without touching the file: ``pool.restrict(policy)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .checks.spec import CheckSpec
from .config import parse_yaml, read_text_file
from .deployments import DeploymentSpec as DeploymentSpec  # re-exported: a pool model's deployments
from .deployments import RoutingStrategy
from .errors import ConfigError, PolicyError
from .policy import Policy as Policy  # re-exported: podium.pool.Policy is where users import it
from .roles import POOL_ROLES, PoolRoleName
from .scrub import register_env
from .suggest import did_you_mean
from .types import Budget, Role

BackendKind = str  # a registered backend kind: openai, local, scripted, check, or a plugin's
RoleName = PoolRoleName  # kept for importers; the vocabulary lives in podium.roles
ALL_ROLES: list[RoleName] = list(POOL_ROLES)

# Keys a backend kind owns (validated by its options model); kept as attributes for every model.
_BACKEND_KEYS = (
    "model",
    "base_url",
    "api_key_env",
    "extra_body",
    "structured_output",
    "replies",
    "function",
    "check",
    "n_threads",
    "prompt_cache",
    "headers",
)


@dataclass(frozen=True)
class _OptionsProblems:
    """What was wrong with a model's backend keys, carried to the ``options`` field's validator."""

    problems: list[tuple[str, str]]


class ResponseCacheSpec(BaseModel):
    """A pool model's exact-match response cache (``cache: true`` takes these defaults); see backends/cached.py."""

    model_config = ConfigDict(extra="forbid")
    ttl_s: float = Field(default=3600.0, gt=0)  # an entry older than this is a miss
    max_entries: int = Field(default=1024, ge=1)  # least recently used entries go first


class ModelSpec(BaseModel):
    """One pool model. Prices are USD per million tokens.

    The ``backend:`` key chooses which further keys the model takes: those of its backend kind's
    options model (:mod:`podium.backends.registry`), validated into :attr:`options`; a key of another
    kind (``replies:`` on an ``openai`` model) is an error naming the key and the fix.
    """

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    backend: BackendKind
    provider: str | None = None
    region: str = "local"
    input_usd_per_mtok: float = Field(default=0.0, ge=0)
    output_usd_per_mtok: float = Field(default=0.0, ge=0)
    context_window: int = Field(default=8192, ge=256)
    max_tokens: int = Field(default=512, ge=1)
    temperature: float | None = None
    tags: list[str] = Field(default_factory=list)
    roles: list[RoleName] = Field(default_factory=lambda: list(ALL_ROLES))
    fallbacks: list[str] = Field(default_factory=list)
    timeout_s: float = Field(default=120.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    first_byte_timeout_s: float | None = Field(default=None, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    breaker_threshold: int = Field(default=5, ge=0)  # consecutive failed attempts that open the circuit; 0: off
    breaker_open_s: float = Field(default=30.0, gt=0)  # seconds the circuit stays open before one half-open probe
    # Keys of the built-in backend kinds (filled from ``options``; None / empty for other kinds):
    model: str | None = None  # openai: provider's model id; local: GGUF path or "package:NAME"
    base_url: str | None = None  # openai
    api_key_env: str | None = None  # openai
    extra_body: dict[str, Any] = Field(default_factory=dict)  # openai, local
    structured_output: bool = False  # openai: the endpoint supports response_format json_schema
    replies: list[str] | None = None  # scripted: replies used in order (cycled)
    function: str | None = None  # scripted: "module:callable" (request) -> str
    check: CheckSpec | None = None  # check: the static check this verifier runs (e.g. a regex)
    headers: dict[str, str] = Field(default_factory=dict)  # openai: extra HTTP headers; "${VAR}" reads the env
    n_threads: int | None = None  # local: llama.cpp threads (default: the physical cores not busy at load)
    prompt_cache: bool | None = None  # local: reuse the KV cache of the previous prompt (None: yes; see LocalOptions)
    options: BaseModel | None = Field(default=None, exclude=True, repr=False)  # the kind's validated keys
    deployments: list[DeploymentSpec] = Field(default_factory=list)  # several endpoints behind this name
    routing: RoutingStrategy = "simple-shuffle"  # how a call picks among the deployments
    routing_seed: int | None = None  # seeds simple-shuffle (tests, reproducible benches)
    _own_keys: frozenset[str] = PrivateAttr(default=frozenset())  # keys written on the model itself
    _memo: dict[Any, Any] = PrivateAttr(default_factory=dict)  # derived specs (podium.deployments), shared by copies

    @model_validator(mode="wrap")
    @classmethod
    def _deployment_defaults(cls, data: Any, handler: Any) -> Any:
        """A model with deployments takes the keys it does not set from its first deployment; each
        deployment must make a valid model (checked at load, named in the error)."""
        from .deployments import check_deployments, fill_from_first

        filled, own = fill_from_first(data)
        spec = handler(filled)
        if own is not None:
            spec._own_keys = own
            check_deployments(spec)
        return spec

    @model_validator(mode="before")
    @classmethod
    def _backend_options(cls, data: Any) -> Any:
        """Split the kind's own keys off and validate them with the kind's options model."""
        if not isinstance(data, dict) or ("options" in data and isinstance(data["options"], BaseModel)):
            return data
        from .backends.registry import BACKENDS, describe_options_error

        kind_name = data.get("backend")
        kind = BACKENDS.get(kind_name) if isinstance(kind_name, str) else None
        common = {k: v for k, v in data.items() if k in _COMMON_KEYS}
        if kind is None:
            return common  # the backend field's own validator reports the unknown kind
        own = {k: v for k, v in data.items() if k not in _COMMON_KEYS and not _unset_builtin(k, v, kind.options)}
        try:
            options = kind.options.model_validate(own)
        except ValidationError as exc:  # reported by the options field, beside the common keys' problems
            return {**common, "options": _OptionsProblems(describe_options_error(exc, kind, _COMMON_KEYS))}
        builtin = {k: getattr(options, k) for k in options.model_fields_set if k in _BACKEND_KEYS}
        return {**common, **builtin, "options": options}

    @field_validator("options", mode="before")
    @classmethod
    def _options_problems(cls, value: Any) -> Any:
        if isinstance(value, _OptionsProblems):
            detail = "; ".join(f"{k}: {m}" for k, m in value.problems)
            raise PydanticCustomError("backend_options", "{detail}", {"detail": detail, "problems": value.problems})
        return value

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, kind: str) -> str:
        from .backends.registry import BACKENDS, unknown_backend_message

        if BACKENDS.get(kind) is None:
            raise PydanticCustomError("unknown_backend", "{detail}", {"detail": unknown_backend_message(kind)})
        return kind

    cache: ResponseCacheSpec | None = (
        None  # opt-in exact-match response cache (``cache: true`` or {ttl_s, max_entries})
    )

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_flag(cls, value: object) -> object:
        return {} if value is True else None if value is False else value

    @model_validator(mode="after")
    def _check_roles(self) -> ModelSpec:
        from .backends.registry import backend_type

        only = backend_type(self.backend).roles
        if only is not None:
            if "roles" in self.model_fields_set and not set(self.roles) <= set(only):
                raise ValueError(
                    f"model '{self.name}': backend '{self.backend}' can only take the roles {', '.join(only)}; "
                    f"set roles: [{', '.join(only)}]"
                )
            if "roles" not in self.model_fields_set:
                self.roles = [r for r in ALL_ROLES if r in only]
        return self

    @model_serializer(mode="wrap")
    def _with_plugin_keys(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A plugin kind's own keys are dumped flat, as they are written in the pool file."""
        data: dict[str, Any] = handler(self)
        if self.options is not None:
            for key, value in self.options.model_dump(mode="json").items():
                if key not in _BACKEND_KEYS:
                    data.setdefault(key, value)
        return data

    def deployment_specs(self) -> list[ModelSpec]:
        """One spec per deployment, named ``MODEL@DEPLOYMENT`` (empty without deployments)."""
        from .deployments import deployment_specs

        return deployment_specs(self)

    def under(self, policy: Policy) -> ModelSpec | None:
        """This model as ``policy`` may use it: None if excluded; a model with deployments keeps only
        the deployments the policy allows (the same object each time for the same subset)."""
        if not self.deployments:  # most models: no subset to make (the import below costs a request 0.6 µs)
            return self if policy.allows(self) else None
        from .deployments import restricted

        return restricted(self, policy)

    @property
    def provider_name(self) -> str:
        """The provider this model is served by (explicit, else the backend kind)."""
        return self.provider or self.backend

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for a call with these token counts."""
        return (prompt_tokens * self.input_usd_per_mtok + completion_tokens * self.output_usd_per_mtok) / 1e6

    def http_headers(self) -> dict[str, str]:
        """``headers`` with ``${VAR}`` values read from the environment (and scrubbed like keys: header
        values never reach logs or traces); ConfigError naming the model, header and variable if unset."""
        out: dict[str, str] = {}
        for name, value in self.headers.items():
            if value.startswith("${") and value.endswith("}"):
                var = value[2:-1]
                register_env([var])
                if var not in os.environ:
                    raise ConfigError(f"model '{self.name}': header '{name}' needs environment variable {var}; set it")
                value = os.environ[var]
            out[name] = value
        return out

    def api_key(self) -> str | None:
        """The API key from the environment variable named by ``api_key_env``."""
        register_env([self.api_key_env])  # its value is a secret wherever it appears
        return os.environ.get(self.api_key_env) if self.api_key_env else None


_COMMON_KEYS = set(ModelSpec.model_fields) - set(_BACKEND_KEYS) - {"options"}


def _unset_builtin(key: str, value: object, options: type[BaseModel]) -> bool:
    """A built-in kind's key left at its empty value by a kind that does not own it (a dumped spec)."""
    return key in _BACKEND_KEYS and key not in options.model_fields and value in (None, {}, False)


class RoleDefaults(BaseModel):
    """Which model serves each role by default."""

    model_config = ConfigDict(extra="forbid")
    thinker: str | None = None
    worker: str | None = None
    verifier: str | None = None
    coordinator: str | None = None


class PoolConfig(BaseModel):
    """A whole pool file."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    models: list[ModelSpec] = Field(min_length=1)
    defaults: RoleDefaults = Field(default_factory=RoleDefaults)
    prompts: dict[PoolRoleName, str] = Field(default_factory=dict)
    budget: Budget = Field(default_factory=Budget)  # default run budget; CLI flags and the API override it

    @model_validator(mode="after")
    def _check_references(self) -> PoolConfig:
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate model names: {dupes}")
        for role in ALL_ROLES:
            ref = getattr(self.defaults, role)
            if ref is not None and ref not in names:
                raise ValueError(f"defaults.{role} names unknown model '{ref}'; known models: {names}")
        fields = dict.fromkeys(("query", "plan", "answer", "feedback", "instruction"), "")
        for role, template in self.prompts.items():
            try:
                template.format(**fields)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"prompts.{role}: bad template field {exc}; allowed fields: {sorted(fields)} (write {{{{ }}}} for literal braces)"
                ) from None
        for m in self.models:
            for fb in m.fallbacks:
                if fb not in names:
                    raise ValueError(f"model '{m.name}': fallback '{fb}' is not a model of this pool")
        return self


class Pool:
    """A loaded pool, optionally restricted by a policy."""

    def __init__(self, config: PoolConfig, policy: Policy | None = None, source: str = "") -> None:
        self.config = config
        self.policy = policy or Policy()
        self.source = source
        allowed = ((m.name, m.under(self.policy)) for m in config.models)
        self.models: dict[str, ModelSpec] = {name: m for name, m in allowed if m is not None}
        self._configured: dict[str, ModelSpec] = {}  # every model of the file by name, allowed or not
        for m in config.models:
            self._configured.setdefault(m.name, m)
        register_env(m.api_key_env for m in config.models)

    @property
    def name(self) -> str:
        return self.config.name

    def restrict(self, policy: Policy) -> Pool:
        """A view of this pool under ``policy`` (narrowing any policy already applied)."""
        return Pool(self.config, self.policy.narrow(policy), self.source)

    def get(self, name: str) -> ModelSpec:
        """The allowed model called ``name``."""
        if name not in self.models:
            raise PolicyError(f"model '{name}' is not in pool '{self.name}' or not allowed by its policy")
        return self.models[name]

    def config_model(self, name: str) -> ModelSpec | None:
        """The pool file's model called ``name``, allowed or not (None if there is none)."""
        return self._configured.get(name)

    def candidates(self, role: Role | str) -> list[str]:
        """Allowed models that may take ``role``, in pool order."""
        role_name = role.value if isinstance(role, Role) else role
        return [n for n, m in self.models.items() if role_name in m.roles]

    def default_for(self, role: Role | str) -> str:
        """The default model for ``role``, else the first allowed candidate; PolicyError if none."""
        role_name = role.value if isinstance(role, Role) else role
        preferred: str | None = getattr(self.config.defaults, role_name)
        options = self.candidates(role_name)
        if preferred is not None and preferred in options:
            return preferred
        if not options:
            raise PolicyError(
                f"no model allowed by the policy can take role '{role_name}' in pool '{self.name}' "
                f"(policy: {self.policy.describe() or 'none'})"
            )
        return options[0]

    def default_or_none(self, role: Role | str) -> str | None:
        """Like :meth:`default_for`, but None when no allowed model may take ``role``."""
        return self.default_for(role) if self.candidates(role) else None

    def pick(self, role: Role | str) -> str:
        """Old name: :meth:`default_or_none` with '' for None (a Decision's "no model: the engine adapts")."""
        return self.default_or_none(role) or ""


def shipped_pools() -> list[str]:
    """Names of the pools that ship with podium."""
    folder = resources.files("podium") / "pools"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def parse_pool(text: str, source: str) -> Pool:
    """Parse YAML pool text; ``source`` names the file in error messages."""
    return Pool(parse_yaml(text, source, PoolConfig, "pool config"), source=source)


def load_pool(name_or_path: str | os.PathLike[str] = "embedded") -> Pool:
    """Load a shipped pool by name, or a pool file by path."""
    ref = str(name_or_path)
    path = Path(ref).expanduser()
    if path.suffix in (".yaml", ".yml") or os.sep in ref or path.exists():
        if not path.is_file():
            raise ConfigError(
                f"{ref}: pool file not found; pass a shipped pool name ({', '.join(shipped_pools())}) or an existing YAML file"
            )
        return parse_pool(read_text_file(path, "pool"), str(path))
    if ref not in shipped_pools():
        raise ConfigError(
            f"unknown pool '{ref}'{did_you_mean(ref, shipped_pools())}; shipped pools: {', '.join(shipped_pools())}; or pass a path to a YAML file"
        )
    text = (resources.files("podium") / "pools" / f"{ref}.yaml").read_text()
    return parse_pool(text, f"pool '{ref}'")
