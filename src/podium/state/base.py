"""The serving state replicas share, as an interface, and its in-process implementation.

Every limit is keyed by a plain name (``rate:KEYNAME``, ``spend:KEYNAME``, ...). Amounts are
floats (requests, tokens or USD). :class:`LocalState` keeps everything in this process and is the
default; :class:`podium.state.redis.RedisState` keeps it in Redis so every replica sees one count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Reservation:
    """The outcome of :meth:`SharedState.reserve`: whether it fit, the window's total, when it resets."""

    ok: bool
    total: float
    retry_s: float


@dataclass(frozen=True)
class Claim:
    """What :meth:`SharedState.claim` found: whether the hold was granted, the period's committed
    spend and the amount held by other runs in flight before it, and the hold's amount."""

    ok: bool
    committed: float
    held: float
    amount: float


class SharedState(Protocol):
    """Counters and caches that must agree across replicas (all atomic per call)."""

    backend: str  # "local" or "redis"

    async def take(self, name: str, rate_per_s: float, capacity: float, cost: float = 1.0) -> float:
        """Token bucket ``name``: take ``cost`` tokens, returning 0; or take nothing and return the
        seconds until they would be there."""
        ...

    async def reserve(self, name: str, amount: float, limit: float, window_s: float) -> Reservation:
        """Add ``amount`` to the fixed window ``name`` (``window_s`` long) only if the total stays within
        ``limit``: tokens per minute, USD per day."""
        ...

    async def add(self, name: str, amount: float, window_s: float) -> float:
        """Add ``amount`` to the window ``name`` unconditionally (a cost known after the call); the new total."""
        ...

    async def total(self, name: str) -> float:
        """The current total of the window ``name`` (0 when it has expired or never started)."""
        ...

    async def seed(self, name: str, amount: float, ttl_s: float) -> None:
        """Start the counter ``name`` at ``amount`` for ``ttl_s`` seconds unless it exists (a spend read
        from the trace store)."""
        ...

    async def claim(self, name: str, hold_id: str, limit: float, hold_ttl_s: float) -> Claim | None:
        """Hold one run's expected cost on the seeded counter ``name`` if its committed total plus the
        holds in flight stays below ``limit``; None when ``name`` is not seeded (see :mod:`.spend`)."""
        ...

    async def settle(self, name: str, hold_id: str, amount: float | None) -> None:
        """Drop the hold ``hold_id`` and commit ``amount`` (None: nothing) to ``name``; ``amount`` becomes
        the next holds' expected cost."""
        ...

    async def cache_get(self, name: str) -> str | None:
        """A cached value (decision or response cache), or None."""
        ...

    async def cache_set(self, name: str, value: str, ttl_s: float) -> None:
        """Cache ``value`` under ``name`` for ``ttl_s`` seconds."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class LocalState:
    """:class:`SharedState` in this process (the default, and Redis' fallback). Monotonic clock."""

    backend = "local"

    def __init__(self) -> None:
        self.buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, stamp)
        self.windows: dict[str, tuple[float, float]] = {}  # name -> (total, ends_at)
        self.cache: dict[str, tuple[str, float]] = {}  # name -> (value, expires_at)
        self.holds: dict[str, dict[str, tuple[float, float]]] = {}  # counter -> hold id -> (amount, expires_at)
        self.estimates: dict[str, float] = {}  # counter -> the last settled run's cost

    async def take(self, name: str, rate_per_s: float, capacity: float, cost: float = 1.0) -> float:
        now = time.monotonic()
        tokens, stamp = self.buckets.get(name, (capacity, now))
        tokens = min(capacity, tokens + max(0.0, now - stamp) * rate_per_s)
        wait = 0.0
        if tokens >= cost:
            tokens -= cost
        else:
            wait = (cost - tokens) / rate_per_s
        self.buckets[name] = (tokens, now)
        return wait

    def _window(self, name: str, window_s: float) -> tuple[float, float]:
        now = time.monotonic()
        total, ends = self.windows.get(name, (0.0, now + window_s))
        return (0.0, now + window_s) if ends <= now else (total, ends)

    async def reserve(self, name: str, amount: float, limit: float, window_s: float) -> Reservation:
        total, ends = self._window(name, window_s)
        if total + amount > limit:
            return Reservation(False, total, max(0.0, ends - time.monotonic()))
        self.windows[name] = (total + amount, ends)
        return Reservation(True, total + amount, 0.0)

    async def add(self, name: str, amount: float, window_s: float) -> float:
        total, ends = self._window(name, window_s)
        self.windows[name] = (total + amount, ends)
        return total + amount

    async def total(self, name: str) -> float:
        total, ends = self.windows.get(name, (0.0, 0.0))
        return total if ends > time.monotonic() else 0.0

    async def seed(self, name: str, amount: float, ttl_s: float) -> None:
        now = time.monotonic()
        if self.windows.get(name, (0.0, 0.0))[1] <= now:
            self.windows[name] = (amount, now + ttl_s)

    async def claim(self, name: str, hold_id: str, limit: float, hold_ttl_s: float) -> Claim | None:
        now = time.monotonic()
        committed, ends = self.windows.get(name, (0.0, 0.0))
        if ends <= now:
            return None
        holds = {k: v for k, v in self.holds.get(name, {}).items() if v[1] > now}
        held = sum(amount for amount, _ in holds.values())
        if committed + held >= limit:
            return Claim(False, committed, held, 0.0)
        amount = self.estimates.get(name, limit - committed - held)  # unpriced: hold all that is left
        holds[hold_id] = (amount, now + hold_ttl_s)
        self.holds[name] = holds
        return Claim(True, committed, held, amount)

    async def settle(self, name: str, hold_id: str, amount: float | None) -> None:
        self.holds.get(name, {}).pop(hold_id, None)
        if amount is None:
            return
        committed, ends = self.windows.get(name, (0.0, 0.0))
        if ends > time.monotonic():
            self.windows[name] = (committed + amount, ends)
        self.estimates[name] = amount

    async def cache_get(self, name: str) -> str | None:
        hit = self.cache.get(name)
        if hit is None or hit[1] <= time.monotonic():
            self.cache.pop(name, None)
            return None
        return hit[0]

    async def cache_set(self, name: str, value: str, ttl_s: float) -> None:
        self.cache[name] = (value, time.monotonic() + ttl_s)

    async def aclose(self) -> None:
        return None
