"""Backends: how podium talks to a model. One protocol (:class:`Backend`), kinds chosen by name.

Built-in kinds: ``openai`` (any OpenAI-compatible HTTP endpoint, configured by data), ``local``
(embedded GGUF via llama-cpp-python), ``scripted`` (deterministic, for tests and demos) and ``check``
(a static check as verifier). Every kind, built-in or from a package's ``podium.backends`` entry
point, is a :class:`BackendType` in :data:`BACKENDS`. :class:`BackendSet` builds each pool model's
backend once and shares one httpx client between the kinds that use HTTP.
"""

from __future__ import annotations

from typing import Any

import httpx

from ..pool import ModelSpec
from .base import Backend, SupportsCheck, check_backend, estimate_tokens
from .registry import BACKENDS, BackendOptions, BackendType, backend_type

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendOptions",
    "BackendSet",
    "BackendType",
    "SupportsCheck",
    "build_backend",
    "check_backend",
    "estimate_tokens",
]


def build_backend(spec: ModelSpec, client: httpx.AsyncClient | None = None) -> Backend:
    """Make the backend for one pool model (ConfigError naming the known kinds if its kind is unknown)."""
    kind = backend_type(spec.backend)
    return kind.factory(spec, client if kind.shares_http_client else None)


class BackendSet:
    """Backends of a pool, built on first use and cached by model name.

    ``overrides`` maps a model name to a ready backend (tests inject scripted functions this way);
    ``client`` is the shared httpx client for ``openai`` backends (made lazily if not given).
    """

    def __init__(self, client: httpx.AsyncClient | None = None, overrides: dict[str, Backend] | None = None) -> None:
        self._client = client
        self._owns_client = client is None
        self._backends: dict[str, Backend] = dict(overrides or {})
        self.response_caches: dict[str, Any] = {}  # model name -> its opt-in ResponseCache ("" : requests' own)

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            from ._lean_client import lean_client  # O(1) keep-alive pool: see podium.backends.transport

            self._client = lean_client(max_connections=256, max_keepalive_connections=64)
        return self._client

    def get(self, spec: ModelSpec) -> Backend:
        """The backend for ``spec``, built once."""
        if spec.name not in self._backends:
            client = self.client if backend_type(spec.backend).shares_http_client else None
            from .cached import with_response_cache

            self._backends[spec.name] = with_response_cache(build_backend(spec, client), spec, self.response_caches)
        return self._backends[spec.name]

    async def aclose(self) -> None:
        """Close every backend and the shared client if this set made it."""
        for backend in self._backends.values():
            await backend.aclose()
        shared = self.response_caches.pop("\0redis", None)  # the Redis response cache's client
        if shared is not None:
            await shared.aclose()
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None
