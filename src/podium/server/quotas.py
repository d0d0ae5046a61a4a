"""Per-key quotas besides the request rate: a spend budget per period and a tokens-per-minute limit.

Spend is read from the trace store (what the key's runs cost, the coordinator's calls included,
since the period began), so it survives restarts and counts every server process sharing the
store. Each server caches a key's figure for :data:`SPEND_REFRESH_S` seconds and adds its own runs
as they finish, so a burst cannot run far past the budget between two reads.

Periods are calendar periods in UTC: ``hour``, ``day``, ``week`` (from Monday), ``month``, or
``total`` (since the first run). A key over its budget gets a 400 ``budget_exceeded`` with
``x-should-retry: false`` and ``x-podium-budget-reset`` (the Unix time the period ends).
A key over its tokens-per-minute gets a 429 with ``Retry-After`` (when enough of the last
minute's tokens have aged out), like the request rate limit.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..backends import BackendSet
from ..pool import ModelSpec

Period = Literal["hour", "day", "week", "month", "total"]
SPEND_REFRESH_S = 5.0
WINDOW_S = 60.0


class SpendBudget(BaseModel):
    """``budget: {max_usd: 10, period: month}`` in a keys-file entry."""

    model_config = ConfigDict(extra="forbid")
    max_usd: float = Field(gt=0)
    period: Period = "month"


def period_bounds(period: Period, now: float) -> tuple[float, float | None]:
    """(start, end) of the calendar period holding ``now`` (Unix seconds, UTC); ``total`` has no end."""
    if period == "total":
        return 0.0, None
    t = datetime.fromtimestamp(now, UTC)
    if period == "hour":
        start = t.replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(hours=1)
    elif period == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
    elif period == "week":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=t.weekday())
        end = start + timedelta(days=7)
    else:
        start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start.timestamp(), end.timestamp()


class SpendLedger:
    """Each key's spend in its current period: read from the store, plus this server's runs since."""

    def __init__(self, read_spend: Callable[[str, float], float], refresh_s: float = SPEND_REFRESH_S) -> None:
        self.read_spend = read_spend  # (owner, since) -> USD, from the trace store
        self.refresh_s = refresh_s
        self.cache: dict[str, tuple[float, float, float]] = {}  # key -> (period start, spend, read at)

    def spent(self, key: str, budget: SpendBudget, now: float | None = None) -> float:
        now = time.time() if now is None else now
        start, _ = period_bounds(budget.period, now)
        cached = self.cache.get(key)
        if cached is None or cached[0] != start or now - cached[2] > self.refresh_s:
            cached = (start, self.read_spend(key, start), now)
            self.cache[key] = cached
        return cached[1]

    def add(self, key: str, usd: float) -> None:
        """Count a run this server just finished (until the next read from the store includes it)."""
        if key in self.cache:
            start, spent, read_at = self.cache[key]
            self.cache[key] = (start, spent + usd, read_at)


class TokenWindow:
    """Tokens a key used in the last minute (a sliding window of finished runs)."""

    def __init__(self) -> None:
        self.used: dict[str, deque[tuple[float, int]]] = {}

    def _trim(self, key: str, now: float) -> deque[tuple[float, int]]:
        window = self.used.setdefault(key, deque())
        while window and now - window[0][0] >= WINDOW_S:
            window.popleft()
        return window

    def wait(self, key: str, limit: int, now: float | None = None) -> float:
        """0 if ``key`` is under ``limit`` tokens in the last minute, else seconds until it will be."""
        now = time.monotonic() if now is None else now
        window = self._trim(key, now)
        total = sum(n for _, n in window)
        if total < limit:
            return 0.0
        for stamp, n in window:  # the oldest runs age out first
            total -= n
            if total < limit:
                return max(0.0, WINDOW_S - (now - stamp))
        return WINDOW_S

    def add(self, key: str, tokens: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._trim(key, now).append((now, tokens))


def check_deployments_free(specs: Sequence[ModelSpec], backends: BackendSet) -> None:
    """429 with ``Retry-After`` when every model of a pass-through chain is a model whose deployments
    are all over their rpm/tpm limits (see :mod:`podium.reliability.deployments`)."""
    if not all(s.deployments for s in specs):
        return  # a model without deployments can always be tried (busy_wait's answer, without the imports)
    from ..reliability import busy_wait, states_for
    from .errors import ApiError

    wait = busy_wait(specs, states_for(backends))
    if wait is not None:
        raise ApiError(
            429,
            f"every deployment of {', '.join(s.name for s in specs)} is over its rpm/tpm limit; retry in {wait:.1f}s",
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
