"""Checks made before a run sends anything: every config problem becomes one ConfigError line.

:func:`check_pool` finds what would otherwise surface mid-run: an API key variable that is not set,
a local GGUF that does not exist, the llama.cpp extra missing. :func:`check_coordinator` finds a
coordinator that cannot drive the pool (``fixed:MODEL`` naming no pool model, a learned head trained
for other models). The CLI (``ask``, ``serve``) and the server call them before the first request.
"""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from typing import Any

from .errors import ConfigError, missing_extra
from .pool import Pool
from .suggest import did_you_mean


def missing_keys(pool: Pool) -> dict[str, list[str]]:
    """Environment variable -> allowed models of ``pool`` that need it and find it unset (or empty)."""
    missing: dict[str, list[str]] = defaultdict(list)
    for spec in pool.models.values():
        if spec.backend == "openai" and spec.api_key_env and not spec.api_key():
            missing[spec.api_key_env].append(spec.name)
    return dict(missing)


def key_error(pool: Pool, missing: dict[str, list[str]]) -> ConfigError:
    """The one-line error for unset key variables, with both ways out."""
    parts = [f"{var} (needed by {', '.join(models)})" for var, models in missing.items()]
    excludes = " ".join(f"--exclude {m}" for models in missing.values() for m in models)
    return ConfigError(
        f"pool '{pool.name}': API key variable not set: {'; '.join(parts)}; "
        f"export it (e.g. export {next(iter(missing))}=...) or leave those models out ({excludes})"
    )


def check_local(pool: Pool) -> None:
    """Each allowed local model's GGUF exists and llama-cpp-python is installed."""
    local = [m for m in pool.models.values() if m.backend == "local"]
    if not local:
        return
    from .backends.local import resolve_gguf

    for spec in local:
        try:
            resolve_gguf(spec.model or "")
        except ConfigError as exc:
            raise ConfigError(f"{pool.source or pool.name}: model '{spec.name}': {exc}") from None
    if importlib.util.find_spec("llama_cpp") is None:
        raise missing_extra("llama-cpp-python", "local")


def check_pool(pool: Pool, *, keys: bool = True) -> None:
    """Raise ConfigError for the first problem that would make the pool's calls fail before sending."""
    if keys:
        missing = missing_keys(pool)
        if missing:
            raise key_error(pool, missing)
    check_local(pool)


def check_coordinator(pool: Pool, coordinator: Any) -> None:
    """Raise ConfigError when ``coordinator`` names models that ``pool`` does not have."""
    from .coordinators.fixed import FixedCoordinator

    model = coordinator.model if isinstance(coordinator, FixedCoordinator) else None
    if model:
        names = [m.name for m in pool.config.models]
        if model not in names:
            raise ConfigError(
                f"--coordinator fixed:{model}: no model '{model}' in pool '{pool.name}'"
                f"{did_you_mean(model, names)}; models: {', '.join(names)}"
            )
    head = getattr(coordinator, "head", None)
    if head is not None and not set(head.models) & {m.name for m in pool.config.models}:
        raise ConfigError(
            f"{coordinator.name}: the head was trained for models {', '.join(head.models)}, none of "
            f"which is in pool '{pool.name}' ({', '.join(m.name for m in pool.config.models)}); "
            "use a pool with those model names or train a head on this pool's runs"
        )
