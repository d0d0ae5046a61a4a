"""Retrying retryable failures (408/409/429/5xx, timeouts, connection errors, malformed payloads)
with exponential backoff and jitter.

``Retry-After`` is honoured when it is at most ``retry_after_cap_s``; a longer one gives up on this
model at once so that the caller can fall back. :class:`RetryBackend` is the layer (its policy and
random generator are made once, with the layer); :func:`with_retries` the same for any coroutine.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from ..backends.base import Backend
from ..errors import BackendError
from ..types import Completion, CompletionRequest, StreamDelta
from .context import call_scope, closing

T = TypeVar("T")


@dataclass
class RetryPolicy:
    """How often and how patiently to retry one model call."""

    max_retries: int = 2
    base_delay_s: float = 0.25
    max_delay_s: float = 4.0
    retry_after_cap_s: float = 10.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, error: BackendError) -> float | None:
        """Seconds to wait before retry number ``attempt`` (1-based); None: do not retry this model now."""
        if error.retry_after is not None:
            wait = max(error.retry_after, 0.0)
            return wait if wait <= self.retry_after_cap_s else None
        backoff = min(self.base_delay_s * 2.0 ** (attempt - 1), self.max_delay_s)
        return backoff * (1 - self.jitter + self.jitter * self.rng.random())

    def wait_before(self, attempt: int, error: BackendError, deadline: float | None) -> float | None:
        """Seconds to wait before retry ``attempt`` after ``error``; None: give up (not retryable,
        out of retries, or the wait would pass ``deadline``, a loop time)."""
        if not error.retryable or attempt > self.max_retries:
            return None
        wait = self.delay(attempt, error)
        if wait is None or (deadline is not None and asyncio.get_running_loop().time() + wait >= deadline):
            return None
        return wait


@dataclass
class CallReport:
    """What happened across the attempts of one call."""

    retries: int = 0
    errors: list[str] = field(default_factory=list)


async def with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    report: CallReport,
    deadline: float | None = None,
) -> T:
    """Run ``call``; retry retryable BackendErrors per ``policy`` while time remains before ``deadline``."""
    attempt = 0
    while True:
        try:
            return await call()
        except BackendError as exc:
            report.errors.append(str(exc))
            attempt += 1
            wait = policy.wait_before(attempt, exc, deadline)
            if wait is None:
                raise
            report.retries += 1
            await asyncio.sleep(wait)


class RetryBackend:
    """A backend that repeats failed attempts of ``inner`` per ``policy`` (default: the model's
    ``max_retries``), stopping before the deadline of the logical call in progress."""

    def __init__(self, inner: Backend, policy: RetryPolicy | None = None) -> None:
        self.inner = inner
        self.spec = inner.spec
        self.policy = policy or RetryPolicy(max_retries=inner.spec.max_retries)

    async def complete(self, request: CompletionRequest) -> Completion:
        with call_scope() as call:
            attempt = 0
            while True:
                try:
                    return await self.inner.complete(request)
                except BackendError as exc:
                    attempt += 1
                    wait = self.policy.wait_before(attempt, exc, call.deadline)
                    if wait is None:
                        raise
                call.retries += 1
                await asyncio.sleep(wait)

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamDelta]:
        with call_scope() as call:
            attempt = 0
            while True:
                try:
                    async with closing(self.inner.stream(request)) as deltas:
                        async for delta in deltas:
                            yield delta
                    return
                except BackendError as exc:
                    attempt += 1
                    wait = self.policy.wait_before(attempt, exc, call.deadline)
                    if wait is None:
                        raise
                call.retries += 1
                await asyncio.sleep(wait)

    async def aclose(self) -> None:
        await self.inner.aclose()
