"""Serving state that replicas share: rate and token limits, spend budgets, breakers, caches.

Without ``PODIUM_REDIS_URL`` everything stays in the process (:class:`LocalState`), as a single
``podium serve`` needs. With ``PODIUM_REDIS_URL=redis://HOST:PORT/DB`` (the ``redis`` extra) every
replica counts against the same limits (:class:`~podium.state.redis_state.RedisState`) and sees the
same circuit breakers (:mod:`podium.state.breakers`). Redis going away never fails a request: the
replica carries on with its local state and says so (docs/deployment.md).
"""

from __future__ import annotations

import os

from .base import LocalState, Reservation, SharedState

REDIS_URL_ENV = "PODIUM_REDIS_URL"
REDIS_TIMEOUT_ENV = "PODIUM_REDIS_TIMEOUT"  # seconds one Redis operation may take before local state answers


def redis_timeout(default: float) -> float:
    """``PODIUM_REDIS_TIMEOUT`` when set (a positive number of seconds), else ``default``."""
    try:
        value = float(os.environ.get(REDIS_TIMEOUT_ENV, "") or default)
    except ValueError:
        return default
    return value if value > 0 else default


__all__ = [
    "REDIS_TIMEOUT_ENV",
    "REDIS_URL_ENV",
    "LocalState",
    "Reservation",
    "SharedState",
    "open_state",
    "redis_timeout",
    "redis_url",
]


def redis_url() -> str | None:
    """``PODIUM_REDIS_URL``, or None when unset (or empty)."""
    return os.environ.get(REDIS_URL_ENV, "").strip() or None


def open_state(url: str | None = None) -> SharedState:
    """Redis state at ``url`` (default ``PODIUM_REDIS_URL``), else local state. One per event loop."""
    url = url or redis_url()
    if url is None:
        return LocalState()
    from .redis_state import RedisState

    return RedisState(url)
