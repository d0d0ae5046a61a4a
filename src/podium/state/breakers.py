"""Circuit-breaker state shared through Redis: a breaker one replica opens is open on every replica.

The breaker registry (:mod:`podium.reliability`) calls :meth:`BreakerStore.save` on each state
change and :meth:`BreakerStore.sync` each time it hands out a breaker. The registry is synchronous
(breakers are checked outside any await), so this uses Redis' blocking client with short timeouts,
reads at most once per :data:`SYNC_S` per endpoint, and after a failure leaves Redis alone for
:data:`RETRY_S`: a dead Redis costs one short timeout per few seconds, and breakers carry on per
replica. Entries are one hash, ``podium:breakers``, field = endpoint key, value = the breaker as JSON.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Protocol

from ..errors import missing_extra

log = logging.getLogger("podium.state")
SYNC_S = 0.25
RETRY_S = 5.0
TIMEOUT_S = 0.2  # blocking: kept short (PODIUM_REDIS_TIMEOUT overrides)
HASH = "podium:breakers"


class SharedBreaker(Protocol):
    """What the store reads and writes of a breaker (:class:`podium.reliability.CircuitBreaker`)."""

    key: str
    opened_at: float | None
    last_error: str | None

    @property
    def state(self) -> Any: ...

    def describe(self) -> dict[str, Any]: ...


class BreakerStore:
    """Breaker states in the Redis at ``url``."""

    def __init__(self, url: str) -> None:
        try:
            import redis
        except ImportError:
            raise missing_extra("redis", "redis") from None
        from . import redis_timeout

        timeout = min(redis_timeout(TIMEOUT_S), 5.0)
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
        )
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._synced: dict[str, float] = {}
        self._retry_at = 0.0
        self.fallbacks = 0

    def _up(self) -> bool:
        return time.monotonic() >= self._retry_at

    def _failed(self, exc: BaseException) -> None:
        if self._retry_at == 0.0 or time.monotonic() - self._retry_at > RETRY_S:
            log.warning("shared breakers: Redis unreachable (%s); breakers are per replica meanwhile", exc)
        self._retry_at = time.monotonic() + RETRY_S
        self.fallbacks += 1

    def save(self, breaker: SharedBreaker) -> None:
        """Publish ``breaker``'s state (called on each change)."""
        if not self._up():
            self.fallbacks += 1
            return
        try:
            self.client.hset(HASH, breaker.key, json.dumps(breaker.describe()))
        except self._errors as exc:
            self._failed(exc)

    def sync(self, breaker: Any) -> None:
        """Open ``breaker`` here if another replica opened it more recently; close it if another replica
        closed it after it opened here. At most one read per :data:`SYNC_S` per endpoint."""
        now = time.monotonic()
        if now - self._synced.get(breaker.key, -SYNC_S) < SYNC_S or not self._up():
            return
        self._synced[breaker.key] = now
        try:
            raw = self.client.hget(HASH, breaker.key)
        except self._errors as exc:
            self._failed(exc)
            return
        if not raw:
            return
        saved = json.loads(str(raw))
        adopt(breaker, saved)


def adopt(breaker: Any, saved: dict[str, Any]) -> None:
    """Bring ``breaker`` to the shared state ``saved`` (without publishing it back)."""
    from ..reliability import BreakerState

    opened_at = saved.get("opened_at")
    mine = breaker.opened_at or 0.0
    if saved.get("state") in ("open", "half_open") and opened_at is not None and float(opened_at) > mine:
        breaker.state, breaker.opened_at = BreakerState.OPEN, float(opened_at)
        breaker.last_error = saved.get("last_error")
    elif (
        saved.get("state") == "closed"
        and breaker.state != BreakerState.CLOSED
        and float(saved.get("updated_at") or 0.0) > mine
    ):
        breaker.state, breaker.failures = BreakerState.CLOSED, 0


def breaker_store() -> BreakerStore | None:
    """The shared breaker store when ``PODIUM_REDIS_URL`` is set, else None."""
    from . import redis_url

    url = redis_url()
    return BreakerStore(url) if url else None
