"""Backends: how podium talks to a model. One protocol (:class:`Backend`), three kinds.

``openai`` (any OpenAI-compatible HTTP endpoint, configured by data), ``local`` (embedded GGUF via
llama-cpp-python) and ``scripted`` (deterministic, for tests and demos). :class:`BackendSet`
builds each pool model's backend once and shares one httpx client between HTTP backends.
"""

from __future__ import annotations

import httpx

from ..pool import ModelSpec
from .base import Backend, estimate_tokens

__all__ = ["Backend", "BackendSet", "build_backend", "estimate_tokens"]


def build_backend(spec: ModelSpec, client: httpx.AsyncClient | None = None) -> Backend:
    """Make the backend for one pool model."""
    if spec.backend == "openai":
        from .openai import OpenAIBackend

        return OpenAIBackend(spec, client)
    if spec.backend == "local":
        from .local import LocalBackend

        return LocalBackend(spec)
    if spec.backend == "check":
        from .check import CheckBackend

        return CheckBackend(spec)
    from .scripted import ScriptedBackend

    return ScriptedBackend(spec)


class BackendSet:
    """Backends of a pool, built on first use and cached by model name.

    ``overrides`` maps a model name to a ready backend (tests inject scripted functions this way);
    ``client`` is the shared httpx client for ``openai`` backends (made lazily if not given).
    """

    def __init__(self, client: httpx.AsyncClient | None = None, overrides: dict[str, Backend] | None = None) -> None:
        self._client = client
        self._owns_client = client is None
        self._backends: dict[str, Backend] = dict(overrides or {})

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            from .transport import lean_client  # O(1) keep-alive pool: see podium.backends.transport

            self._client = lean_client(max_connections=256, max_keepalive_connections=64)
        return self._client

    def get(self, spec: ModelSpec) -> Backend:
        """The backend for ``spec``, built once."""
        if spec.name not in self._backends:
            client = self.client if spec.backend == "openai" else None
            self._backends[spec.name] = build_backend(spec, client)
        return self._backends[spec.name]

    async def aclose(self) -> None:
        """Close every backend and the shared client if this set made it."""
        for backend in self._backends.values():
            await backend.aclose()
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None
