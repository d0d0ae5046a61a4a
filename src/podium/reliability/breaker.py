"""Circuit breakers: one per endpoint, optionally shared between processes through a JSON file.

:class:`CircuitBreaker`: ``threshold`` consecutive failed attempts open it for ``open_s`` seconds,
during which calls fail at once with :class:`CircuitOpen` (the caller goes to a fallback); then one
half-open probe is let through: success closes it, failure opens it again. :class:`BreakerRegistry`
holds one breaker per endpoint and, when given a file, shares open breakers between processes
(``podium pool status`` reads it).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from ..errors import BackendError, EndpointUnavailable
from ..paths import podium_home
from ..pool import ModelSpec
from ..scrub import scrub, scrub_value

BREAKER_FILE_ENV = "PODIUM_BREAKER_FILE"


class CircuitOpen(EndpointUnavailable):
    """The endpoint's circuit breaker is open: the call was not made."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class BreakerState(str, Enum):
    """Closed: calls flow. Open: calls fail at once. Half-open: one probe call is let through."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class CircuitBreaker:
    """Consecutive-failure breaker of one endpoint. ``threshold`` 0 disables it.

    Only retryable failures count (a 4xx means the endpoint is up). Times are wall-clock so
    that an open breaker can be shared with other processes through :class:`BreakerRegistry`.
    """

    key: str
    threshold: int = 5
    open_s: float = 30.0
    clock: Callable[[], float] = time.time
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float | None = None
    last_error: str | None = None
    probing: bool = False
    on_change: Callable[[CircuitBreaker], None] | None = None

    def seconds_left(self) -> float:
        """How long an open breaker stays open."""
        if self.state != BreakerState.OPEN or self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.open_s - self.clock())

    def check(self) -> None:
        """Let a call through, taking the half-open probe slot when due; else raise CircuitOpen."""
        if self.threshold <= 0 or self.state == BreakerState.CLOSED:
            return
        if self.state == BreakerState.OPEN and self.seconds_left() <= 0:
            self._set(BreakerState.HALF_OPEN)
        if self.state == BreakerState.HALF_OPEN and not self.probing:
            self.probing = True
            return
        what = (
            "a half-open probe is in flight"
            if self.state == BreakerState.HALF_OPEN
            else f"{self.seconds_left():.1f}s left"
        )
        raise CircuitOpen(f"circuit open for {self.key} ({what}; last error: {self.last_error})")

    def record(self, error: BackendError | None) -> None:
        """Account one finished attempt: ``None`` or a non-retryable error means the endpoint answered."""
        self.probing = False
        if error is None or not error.retryable:
            self.failures = 0
            if self.state != BreakerState.CLOSED:
                self._set(BreakerState.CLOSED)
            return
        self.failures += 1
        self.last_error = (scrub(str(error)) or "")[
            :200
        ]  # it is written to the state file and repeated in later errors
        if self.threshold > 0 and (self.state == BreakerState.HALF_OPEN or self.failures >= self.threshold):
            self.opened_at = self.clock()
            self._set(BreakerState.OPEN)

    def release(self) -> None:
        """An attempt was abandoned (cancelled) without a verdict: free the probe slot."""
        self.probing = False

    def _set(self, state: BreakerState) -> None:
        if state != self.state:
            self.state = state
            if self.on_change is not None:
                self.on_change(self)

    def describe(self) -> dict[str, Any]:
        """The breaker as JSON (what ``podium pool status`` shows)."""
        return {
            "state": self.state.value,
            "failures": self.failures,
            "threshold": self.threshold,
            "open_s": self.open_s,
            "opened_at": self.opened_at,
            "seconds_left": round(self.seconds_left(), 3),
            "last_error": self.last_error,
            "updated_at": self.clock(),
        }


def endpoint_key(spec: ModelSpec) -> str:
    """What one breaker guards: the provider endpoint plus the model served there."""
    where = spec.base_url.rstrip("/") if spec.base_url else spec.backend
    return f"{where}#{spec.model or spec.name}"


class BreakerRegistry:
    """One :class:`CircuitBreaker` per endpoint, optionally mirrored to a JSON file.

    With ``path``, every state change is written there (best effort, atomic replace) and a
    breaker seen open by another process starts open here until its open time has passed.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path) if path else None
        self.clock = clock
        self.breakers: dict[str, CircuitBreaker] = {}
        from ..state.breakers import breaker_store

        self.shared = breaker_store()  # PODIUM_REDIS_URL: breakers shared by every replica

    def get(self, spec: ModelSpec) -> CircuitBreaker:
        """The breaker of ``spec``'s endpoint, configured from the spec."""
        key = endpoint_key(spec)
        breaker = self.breakers.get(key)
        if breaker is None:
            breaker = CircuitBreaker(key, spec.breaker_threshold, spec.breaker_open_s, self.clock, on_change=self._save)
            self._seed(breaker)
            self.breakers[key] = breaker
        breaker.threshold, breaker.open_s = spec.breaker_threshold, spec.breaker_open_s
        if self.shared is not None:
            self.shared.sync(breaker)
        return breaker

    def _seed(self, breaker: CircuitBreaker) -> None:
        saved = self.load().get(breaker.key)
        if saved and saved.get("state") in ("open", "half_open") and saved.get("opened_at") is not None:
            breaker.state, breaker.opened_at = BreakerState.OPEN, float(saved["opened_at"])
            breaker.last_error = scrub(str(saved.get("last_error") or "")) or None

    def load(self) -> dict[str, dict[str, Any]]:
        """The shared state file's entries (empty when there is none or it is unreadable)."""
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, breaker: CircuitBreaker) -> None:
        if self.shared is not None:
            self.shared.save(breaker)
        if self.path is None:
            return
        data = self.load()
        data[breaker.key] = {**breaker.describe(), "pid": os.getpid()}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(json.dumps(scrub_value(data), indent=1))
            os.chmod(tmp, 0o600)  # an existing temp file keeps its mode through O_CREAT
            os.replace(tmp, self.path)
        except OSError:
            pass  # breaker sharing is an optimisation; never fail a call over it

    def reset(self) -> None:
        """Forget every breaker, here and in the shared file."""
        self.breakers.clear()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def breaker_file() -> Path | None:
    """Where breaker state is shared: ``$PODIUM_BREAKER_FILE`` (empty: nowhere), else
    ``breakers.json`` in ``$PODIUM_HOME``, else in the platform's user data dir."""
    env = os.environ.get(BREAKER_FILE_ENV)
    if env is not None:
        return Path(env).expanduser() if env else None
    return podium_home() / "breakers.json"


_default: BreakerRegistry | None = None


def default_breakers() -> BreakerRegistry:
    """The process-wide registry engines use unless given their own (rebuilt if its file moved)."""
    global _default
    path = breaker_file()
    if _default is None or _default.path != path:
        _default = BreakerRegistry(path)
    return _default
