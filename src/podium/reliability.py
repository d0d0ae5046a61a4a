"""Retries with exponential backoff and jitter, honouring ``Retry-After`` up to a cap.

Only retryable failures are retried (408/409/429/5xx, timeouts, connection errors, malformed
payloads); a 4xx client error fails at once. The engine moves on to fallbacks after this gives up.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Awaitable, Callable, TypeVar

from podium.errors import BackendError

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

    def delay(self, attempt: int, error: BackendError) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        if error.retry_after is not None:
            return min(max(error.retry_after, 0.0), self.retry_after_cap_s)
        backoff = min(self.base_delay_s * 2 ** (attempt - 1), self.max_delay_s)
        return backoff * (1 - self.jitter + self.jitter * self.rng.random())


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
    loop = asyncio.get_running_loop()
    attempt = 0
    while True:
        try:
            return await call()
        except BackendError as exc:
            report.errors.append(str(exc))
            attempt += 1
            if not exc.retryable or attempt > policy.max_retries:
                raise
            wait = policy.delay(attempt, exc)
            if deadline is not None and loop.time() + wait >= deadline:
                raise
            report.retries += 1
            await asyncio.sleep(wait)
