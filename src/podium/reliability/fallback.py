"""Falling back: one logical call over a chain of models, itself a backend.

:class:`FallbackBackend` tries each of its backends in turn (each usually a stack of retry, guard
and splice layers) and answers with the first that succeeds. ``prepare`` adapts the request to each
model (its context window, the run's remaining budget): a model that cannot take the prompt
(:class:`~podium.errors.ContextOverflow`) is skipped; any other error of ``prepare`` (a budget ran
out) ends the call. When every model failed it raises :class:`AllModelsFailed`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

from ..backends.base import Backend
from ..errors import BackendError, ContextOverflow
from ..pool import ModelSpec
from ..types import Completion, CompletionRequest, StreamDelta
from .context import CallContext, call_scope, closing

Prepare = Callable[[ModelSpec, CompletionRequest], CompletionRequest]


class AllModelsFailed(BackendError):
    """No model of a fallback chain answered; the message joins every failed attempt."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors) or "no provider available")


class FallbackBackend:
    """Backends tried in order; ``spec`` is the first choice's. Which one answered, and with what
    request, is recorded on the logical call (``index``, ``spec``, ``request``)."""

    def __init__(self, backends: Sequence[Backend], prepare: Prepare | None = None) -> None:
        if not backends:
            raise ValueError("a fallback chain needs at least one backend")
        self.backends = list(backends)
        self.spec = self.backends[0].spec
        self.prepare = prepare

    def _request(self, call: CallContext, backend: Backend, request: CompletionRequest) -> CompletionRequest | None:
        if self.prepare is None:
            return request
        try:
            return self.prepare(backend.spec, request)
        except ContextOverflow as exc:  # this model cannot take the prompt: the next one may
            call.errors.append(f"{backend.spec.name}: {exc}")
            return None

    @staticmethod
    def _served(call: CallContext, index: int, backend: Backend, request: CompletionRequest) -> None:
        call.index, call.spec, call.request = index, backend.spec, request

    async def complete(self, request: CompletionRequest) -> Completion:
        with call_scope() as call:
            for index, backend in enumerate(self.backends):
                prepared = self._request(call, backend, request)
                if prepared is None:
                    continue
                try:
                    completion = await backend.complete(prepared)
                except BackendError:
                    continue
                self._served(call, index, backend, prepared)
                return completion
            raise AllModelsFailed(call.errors)

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamDelta]:
        with call_scope() as call:
            for index, backend in enumerate(self.backends):
                prepared = self._request(call, backend, request)
                if prepared is None:
                    continue
                call.active = backend.spec
                try:
                    async with closing(backend.stream(prepared)) as deltas:
                        async for delta in deltas:
                            if delta.completion is not None:
                                self._served(call, index, backend, prepared)
                            yield delta
                except BackendError:
                    continue
                return
            raise AllModelsFailed(call.errors)

    async def aclose(self) -> None:
        for backend in self.backends:
            await backend.aclose()
