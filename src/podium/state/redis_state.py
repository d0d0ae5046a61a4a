"""Shared serving state in Redis (``redis.asyncio``, the ``redis`` extra), for replicas behind one balancer.

Each operation is one round trip and atomic: the token bucket and the bounded window are Lua
scripts (run inside Redis, on Redis' clock, so replicas with skewed clocks agree); an unbounded add
is ``INCRBYFLOAT`` plus ``PEXPIRE`` in one transaction. Keys live under ``podium:`` and expire on
their own.

If Redis cannot be reached, the operation is answered from this process's :class:`LocalState`
instead (after at most ``PODIUM_REDIS_TIMEOUT``, default 1 s): serving goes on (limits then count per replica), a warning is logged once per outage,
and :attr:`RedisState.fallbacks` counts the answers given locally (``podium_shared_state_fallbacks``
in ``/metrics``). Redis is retried after :data:`RETRY_S`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..errors import missing_extra
from .base import Claim, LocalState, Reservation

log = logging.getLogger("podium.state")
T = TypeVar("T")
PREFIX = "podium:"
RETRY_S = 1.0  # after a failure, Redis is left alone this long (no connect timeout on every request)
TIMEOUT_S = 1.0  # default of PODIUM_REDIS_TIMEOUT

TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, cap, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(v[1]) or cap
local stamp = tonumber(v[2]) or now
tokens = math.min(cap, tokens + math.max(0, now - stamp) * rate)
local wait = 0
if tokens >= cost then tokens = tokens - cost else wait = (cost - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'stamp', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(cap / rate * 1000) + 60000)
return string.format('%.17g', wait)
"""

RESERVE = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if cur + amount > limit then
  return {0, string.format('%.17g', cur), redis.call('PTTL', KEYS[1])}
end
local total = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return {1, total, 0}
"""

# KEYS: counter, hold expiries (zset), hold amounts (hash), last run's cost. ARGV: hold id, limit, hold ttl ms.
CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, '0', '0', '0'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, id in ipairs(gone) do redis.call('HDEL', KEYS[3], id) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local committed = tonumber(redis.call('GET', KEYS[1]))
local held = 0
for _, v in ipairs(redis.call('HVALS', KEYS[3])) do held = held + tonumber(v) end
local limit = tonumber(ARGV[2])
local f = function(x) return string.format('%.17g', x) end
if committed + held >= limit then return {0, f(committed), f(held), '0'} end
local amount = tonumber(redis.call('GET', KEYS[4]) or '-1')
if amount < 0 then amount = limit - committed - held end
redis.call('HSET', KEYS[3], ARGV[1], f(amount))
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl + tonumber(ARGV[3]))
  redis.call('PEXPIRE', KEYS[3], ttl + tonumber(ARGV[3]))
end
return {1, f(committed), f(held), f(amount)}
"""

# KEYS as CLAIM's. ARGV: hold id, the run's cost ('' when it never ran), ttl ms of the cost estimate.
SETTLE = """
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[2] == '' then return 0 end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('INCRBYFLOAT', KEYS[1], ARGV[2]) end
redis.call('SET', KEYS[4], ARGV[2], 'PX', ARGV[3])
return 1
"""


def _redis() -> Any:
    try:
        import redis.asyncio as aioredis
    except ImportError:
        raise missing_extra("redis", "redis") from None
    return aioredis


class RedisState:
    """:class:`~podium.state.base.SharedState` in Redis at ``url``, falling back to local state."""

    backend = "redis"

    def __init__(self, url: str, *, prefix: str = PREFIX) -> None:
        from . import redis_timeout

        aioredis = _redis()
        self.url, self.prefix = url, prefix
        timeout = redis_timeout(TIMEOUT_S)
        self.client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
        )
        self._errors: tuple[type[BaseException], ...] = (aioredis.RedisError, OSError)
        self._take = self.client.register_script(TAKE)
        self._reserve = self.client.register_script(RESERVE)
        self._claim = self.client.register_script(CLAIM)
        self._settle = self.client.register_script(SETTLE)
        self.local = LocalState()
        self.fallbacks = 0
        self.down_since: float | None = None
        self._retry_at = 0.0

    async def _shared(self, op: Callable[[], Awaitable[T]], local: Callable[[], Awaitable[T]]) -> T:
        """``op`` on Redis; ``local`` when Redis is unreachable (or was, less than RETRY_S ago)."""
        if time.monotonic() >= self._retry_at:
            try:
                result = await op()
            except self._errors as exc:
                self._failed(exc)
            else:
                if self.down_since is not None:
                    log.warning("shared state: Redis is back after %.1fs", time.monotonic() - self.down_since)
                    self.down_since = None
                return result
        self.fallbacks += 1
        return await local()

    def _failed(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + RETRY_S
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("shared state: Redis unreachable (%s); serving on this replica's local state", exc)

    async def take(self, name: str, rate_per_s: float, capacity: float, cost: float = 1.0) -> float:
        async def op() -> float:
            return float(await self._take(keys=[self.prefix + name], args=[rate_per_s, capacity, cost]))

        return await self._shared(op, lambda: self.local.take(name, rate_per_s, capacity, cost))

    async def reserve(self, name: str, amount: float, limit: float, window_s: float) -> Reservation:
        async def op() -> Reservation:
            ok, total, ttl_ms = await self._reserve(
                keys=[self.prefix + name], args=[amount, limit, max(1, int(window_s * 1000))]
            )
            return Reservation(bool(int(ok)), float(total), max(0.0, int(ttl_ms) / 1000))

        return await self._shared(op, lambda: self.local.reserve(name, amount, limit, window_s))

    async def add(self, name: str, amount: float, window_s: float) -> float:
        async def op() -> float:
            key = self.prefix + name
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.incrbyfloat(key, amount)
                pipe.pexpire(key, max(1, int(window_s * 1000)), nx=True)
                total, _ = await pipe.execute()
            return float(total)

        return await self._shared(op, lambda: self.local.add(name, amount, window_s))

    async def total(self, name: str) -> float:
        async def op() -> float:
            return float(await self.client.get(self.prefix + name) or 0.0)

        return await self._shared(op, lambda: self.local.total(name))

    def _spend_keys(self, name: str) -> list[str]:
        key = self.prefix + name
        return [key, key + ":holds", key + ":held", key + ":last"]

    async def seed(self, name: str, amount: float, ttl_s: float) -> None:
        async def op() -> None:
            await self.client.set(self.prefix + name, repr(float(amount)), px=max(1, int(ttl_s * 1000)), nx=True)

        await self._shared(op, lambda: self.local.seed(name, amount, ttl_s))

    async def claim(self, name: str, hold_id: str, limit: float, hold_ttl_s: float) -> Claim | None:
        async def op() -> Claim | None:
            ok, committed, held, amount = await self._claim(
                keys=self._spend_keys(name), args=[hold_id, limit, max(1, int(hold_ttl_s * 1000))]
            )
            if int(ok) < 0:
                return None
            return Claim(bool(int(ok)), float(committed), float(held), float(amount))

        return await self._shared(op, lambda: self.local.claim(name, hold_id, limit, hold_ttl_s))

    async def settle(self, name: str, hold_id: str, amount: float | None) -> None:
        async def op() -> None:
            cost = "" if amount is None else repr(float(amount))
            await self._settle(keys=self._spend_keys(name), args=[hold_id, cost, 31 * 86400 * 1000])

        await self._shared(op, lambda: self.local.settle(name, hold_id, amount))

    async def cache_get(self, name: str) -> str | None:
        async def op() -> str | None:
            value = await self.client.get(self.prefix + "cache:" + name)
            return None if value is None else str(value)

        return await self._shared(op, lambda: self.local.cache_get(name))

    async def cache_set(self, name: str, value: str, ttl_s: float) -> None:
        async def op() -> None:
            await self.client.set(self.prefix + "cache:" + name, value, px=max(1, int(ttl_s * 1000)))

        await self._shared(op, lambda: self.local.cache_set(name, value, ttl_s))

    async def aclose(self) -> None:
        await self.client.aclose()
