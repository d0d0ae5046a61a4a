"""One attempt under a total time limit and through its endpoint's circuit breaker.

The total limit covers connect, first byte and body, streams included (httpx's own read timeout
is per chunk). :class:`GuardBackend` is the layer; :func:`protected` the same for any coroutine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from ..backends.base import Backend
from ..errors import BackendError, BackendTimeout
from ..types import Completion, CompletionRequest, StreamDelta
from .breaker import BreakerRegistry, BreakerState, CircuitBreaker
from .context import closing, current_call

T = TypeVar("T")


async def within(timeout_s: float | None, call: Callable[[], Awaitable[T]]) -> T:
    """Run ``call`` under a total time limit, raising BackendTimeout (retryable) when it runs out."""
    if timeout_s is None:
        return await call()
    try:
        async with asyncio.timeout(timeout_s) as scope:
            return await call()
    except TimeoutError:
        if scope.expired():
            raise _timeout(timeout_s) from None
        raise


def _timeout(timeout_s: float) -> BackendTimeout:
    return BackendTimeout(f"no complete answer within {timeout_s}s (total timeout)")


def _failed(breaker: CircuitBreaker, exc: BackendError) -> None:
    breaker.record(exc)
    if breaker.state == BreakerState.OPEN:
        exc.retryable = False  # this failure opened the circuit: go to the fallback, do not retry here


async def protected(breaker: CircuitBreaker, timeout_s: float | None, call: Callable[[], Awaitable[T]]) -> T:
    """One attempt through ``breaker`` under a total timeout; the outcome is recorded on the breaker."""
    breaker.check()
    try:
        result = await within(timeout_s, call)
    except BackendError as exc:
        _failed(breaker, exc)
        raise
    except BaseException:
        breaker.release()
        raise
    breaker.record(None)
    return result


class GuardBackend:
    """A backend whose every call is one attempt guarded by the endpoint's breaker (from
    ``breakers``) and the model's total timeout (``spec.timeout_s``). A failed attempt is
    recorded on the logical call in progress as ``"model: error"``."""

    def __init__(self, inner: Backend, breakers: BreakerRegistry) -> None:
        self.inner = inner
        self.spec = inner.spec
        self.breakers = breakers

    async def complete(self, request: CompletionRequest) -> Completion:
        try:
            return await protected(
                self.breakers.get(self.spec), self.spec.timeout_s, lambda: self.inner.complete(request)
            )
        except BackendError as exc:
            self._note(exc)
            raise

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamDelta]:
        breaker, timeout_s = self.breakers.get(self.spec), self.spec.timeout_s
        try:
            breaker.check()
        except BackendError as exc:
            self._note(exc)
            raise
        deadline = asyncio.get_running_loop().time() + timeout_s
        try:
            async with closing(self.inner.stream(request)) as deltas:
                while True:
                    # the limit applies to the upstream's own waits, so that it never fires while
                    # the caller handles a delta (a generator cannot own its caller's cancellation)
                    try:
                        async with asyncio.timeout_at(deadline) as scope:
                            delta = await anext(deltas)
                    except StopAsyncIteration:
                        break
                    except TimeoutError:
                        if scope.expired():
                            raise _timeout(timeout_s) from None
                        raise
                    if delta.completion is not None:
                        breaker.record(None)
                        yield delta
                        return
                    yield delta
        except BackendError as exc:
            _failed(breaker, exc)
            self._note(exc)
            raise
        except BaseException:
            breaker.release()
            raise
        breaker.release()  # ended without an answer: no verdict on the endpoint

    def _note(self, exc: BackendError) -> None:
        call = current_call()
        if call is not None:
            call.errors.append(f"{self.spec.name}: {exc}")

    async def aclose(self) -> None:
        await self.inner.aclose()
