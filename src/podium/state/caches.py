"""The response and routing-decision caches in Redis, shared by every replica (``PODIUM_REDIS_URL``).

- :class:`RedisLRU` (asyncio): exact-key entries (response cache), each ``SET ... PX ttl``, with a
  sorted set per space ordering them by last use; a Lua script evicts the least recently used
  beyond ``max_entries``, so the size bound holds across replicas.
- :class:`DecisionStream` (blocking, short timeouts: the learned coordinator decides synchronously):
  decision-cache entries are appended to a capped Redis stream; each replica reads the entries it
  has not seen yet when its own cache misses and keeps doing similarity lookups locally.

Redis going away never fails a request: an operation that cannot reach Redis answers "miss" (the
caller then uses its local cache), logs one warning per outage, counts in :data:`FALLBACKS`
(``podium_shared_state_fallbacks``) and leaves Redis alone for :data:`RETRY_S`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..errors import missing_extra

log = logging.getLogger("podium.state")
PREFIX = "podium:cache:"
RETRY_S = 1.0
TIMEOUT_S = 0.2  # the decision cache's blocking client: kept short (PODIUM_REDIS_TIMEOUT overrides)


class Fallbacks:
    """Cache operations answered locally because Redis was unreachable (all caches of this process)."""

    def __init__(self) -> None:
        self.fallbacks = 0


FALLBACKS = Fallbacks()

# KEYS: the entry, the space's use order (zset). ARGV: now (ms).
LRU_GET = """
local v = redis.call('GET', KEYS[1])
if v then redis.call('ZADD', KEYS[2], ARGV[1], KEYS[1]) else redis.call('ZREM', KEYS[2], KEYS[1]) end
return v
"""

# KEYS: the entry, the space's use order. ARGV: value, ttl ms, max entries, now (ms).
LRU_SET = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[4]) - tonumber(ARGV[2]))
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if extra > 0 then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[2], 0, extra - 1)) do redis.call('DEL', old) end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1)
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return extra
"""


class _Outage:
    """When Redis last failed: warn once per outage, skip Redis for RETRY_S after a failure."""

    def __init__(self, what: str) -> None:
        self.what, self.retry_at, self.down = what, 0.0, False

    def up(self) -> bool:
        if time.monotonic() >= self.retry_at:
            return True
        FALLBACKS.fallbacks += 1
        return False

    def failed(self, exc: BaseException) -> None:
        FALLBACKS.fallbacks += 1
        self.retry_at = time.monotonic() + RETRY_S
        if not self.down:
            self.down = True
            log.warning("%s: Redis unreachable (%s); using this replica's local cache meanwhile", self.what, exc)

    def ok(self) -> None:
        if self.down:
            self.down = False
            log.warning("%s: Redis is back", self.what)


class RedisLRU:
    """Exact-key cache entries in Redis: ``get``/``put`` by (space, key), TTL and an LRU size bound."""

    def __init__(self, url: str) -> None:
        try:
            import redis.asyncio as aioredis
        except ImportError:
            raise missing_extra("redis", "redis") from None
        from . import redis_timeout

        timeout = redis_timeout(1.0)
        self.client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
        )
        self._errors: tuple[type[BaseException], ...] = (aioredis.RedisError, OSError)
        self._get = self.client.register_script(LRU_GET)
        self._set = self.client.register_script(LRU_SET)
        self.outage = _Outage("shared response cache")

    def _keys(self, space: str, key: str) -> list[str]:
        return [f"{PREFIX}{space}:{key}", f"{PREFIX}{space}:order"]

    async def get(self, space: str, key: str) -> str | bool | None:
        """The entry, None on a miss, False when Redis cannot answer (use the local cache)."""
        if not self.outage.up():
            return False
        try:
            value = await self._get(keys=self._keys(space, key), args=[int(time.time() * 1000)])
        except self._errors as exc:
            self.outage.failed(exc)
            return False
        self.outage.ok()
        return None if value is None else str(value)

    async def put(self, space: str, key: str, value: str, ttl_s: float, max_entries: int) -> bool:
        """Store the entry; False when Redis cannot take it (store it locally)."""
        if not self.outage.up():
            return False
        try:
            args: list[str | int] = [value, max(1, int(ttl_s * 1000)), max_entries, int(time.time() * 1000)]
            await self._set(keys=self._keys(space, key), args=args)
        except self._errors as exc:
            self.outage.failed(exc)
            return False
        self.outage.ok()
        return True

    async def aclose(self) -> None:
        await self.client.aclose()


class DecisionStream:
    """Decision-cache entries on a capped Redis stream (blocking client, short timeouts)."""

    def __init__(self, url: str, name: str, max_len: int) -> None:
        try:
            import redis
        except ImportError:
            raise missing_extra("redis", "redis") from None
        from . import redis_timeout

        timeout = min(redis_timeout(TIMEOUT_S), 5.0)
        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self.key, self.max_len = f"{PREFIX}decisions:{name}", max_len
        self.last_id = "0-0"
        self.outage = _Outage("shared decision cache")

    def add(self, fields: dict[bytes, bytes], ttl_s: float) -> str | None:
        """Append an entry (the stream trimmed to about ``max_len``, expiring ``ttl_s`` after the last add);
        its id, or None when Redis is unreachable."""
        if not self.outage.up():
            return None
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.xadd(self.key, fields, maxlen=self.max_len, approximate=False)  # type: ignore[arg-type]
                pipe.pexpire(self.key, max(1, int(ttl_s * 1000)))
                entry_id, _ = pipe.execute()
        except self._errors as exc:
            self.outage.failed(exc)
            return None
        self.outage.ok()
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def new_entries(self) -> list[tuple[str, dict[bytes, bytes]]]:
        """The entries added since the last call (by any replica), oldest first; [] if Redis is down."""
        if not self.outage.up():
            return []
        try:
            got: Any = self.client.xread({self.key: self.last_id}, count=self.max_len)
        except self._errors as exc:
            self.outage.failed(exc)
            return []
        self.outage.ok()
        entries = [(i.decode() if isinstance(i, bytes) else str(i), f) for _, batch in got or [] for i, f in batch]
        if entries:
            self.last_id = entries[-1][0]
        return entries
