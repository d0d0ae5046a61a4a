"""One attempt under a total time limit and through its endpoint's circuit breaker.

The total limit covers connect, first byte and body, streams included (httpx's own read timeout
is per chunk). :class:`GuardBackend` is the layer; :func:`protected` the same for any coroutine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from ..backends.base import Backend
from ..errors import BackendError, BackendTimeout
from ..types import Completion, CompletionRequest, StreamDelta
from .breaker import BreakerRegistry, BreakerState, CircuitBreaker
from .context import closing, current_call

T = TypeVar("T")


async def within(timeout_s: float | None, call: Callable[[], Awaitable[T]]) -> T:
    """Run ``call`` under a total time limit, raising BackendTimeout (retryable) when it runs out.

    What ``asyncio.timeout`` does, at half its cost (no context-manager coroutines; this runs on
    every model call): the timer cancels the task; a cancellation that was the timer's alone becomes
    the timeout, one from anyone else stays a cancellation."""
    if timeout_s is None:
        return await call()
    loop = asyncio.get_running_loop()
    expiry = _Expiry(asyncio.current_task())
    timer = loop.call_at(loop.time() + timeout_s, expiry.fire)
    try:
        return await call()
    except asyncio.CancelledError:
        if expiry.take() == 0:
            raise _timeout(timeout_s) from None
        raise
    finally:
        timer.cancel()
        expiry.take()  # fired, but the call did not end cancelled: the task owes no cancellation


class _Expiry:
    """A time limit's timer callback: cancels ``task``; :meth:`take` withdraws that cancellation once."""

    __slots__ = ("fired", "task")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        if task is None:
            raise RuntimeError("a time limit needs a running task")
        self.task, self.fired = task, False

    def fire(self) -> None:
        self.fired = True
        self.task.cancel()

    def take(self) -> int | None:
        """The task's cancellations still requested once the timer's own is withdrawn (None: it had
        not fired, or was already withdrawn)."""
        if not self.fired:
            return None
        self.fired = False
        return self.task.uncancel()


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


class _StreamLimit:
    """A stream's total time limit: one timer per attempt, which cancels the task only while it
    waits on the upstream (a generator must never cancel its caller's own work between deltas);
    a limit that ran out in between is raised before the next wait. Like :func:`within`, it leaves the
    task owing no cancellation of its own, even when the stream swallowed it."""

    def __init__(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        self.timeout_s = timeout_s
        self.cancel = _Expiry(asyncio.current_task())  # fired only while waiting (see _expire)
        self.waiting = self.expired = False
        self.timer = loop.call_at(loop.time() + timeout_s, self._expire)

    def _expire(self) -> None:
        self.expired = True
        if self.waiting:
            self.cancel.fire()

    async def next(self, deltas: AsyncIterator[StreamDelta]) -> StreamDelta:
        if self.expired:
            raise _timeout(self.timeout_s)
        self.waiting = True
        try:
            return await anext(deltas)
        except asyncio.CancelledError:
            if self.cancel.take() == 0:
                raise _timeout(self.timeout_s) from None  # ours, and nobody else cancelled the task
            raise
        finally:
            self.waiting = False
            self.cancel.take()  # fired, but the stream went on: the task owes no cancellation

    def close(self) -> None:
        self.timer.cancel()


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
        limit = _StreamLimit(timeout_s)
        try:
            async with closing(self.inner.stream(request)) as deltas:
                while True:
                    try:
                        delta = await limit.next(deltas)
                    except StopAsyncIteration:
                        break
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
        finally:
            limit.close()
        breaker.release()  # ended without an answer: no verdict on the endpoint

    def _note(self, exc: BackendError) -> None:
        call = current_call()
        if call is not None:
            call.errors.append(f"{self.spec.name}: {exc}")

    async def aclose(self) -> None:
        await self.inner.aclose()
