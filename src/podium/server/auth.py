"""API keys (stored as SHA-256 digests) with a policy and a rate limit each.

Keys file (YAML; unknown fields rejected)::

    keys:
      - name: eu-team
        sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
        policy: {allowed_regions: [eu]}
        rate_limit: {requests_per_minute: 120, burst: 20, tokens_per_minute: 200000}
        budget: {max_usd: 50, period: month}     # hour | day | week | month | total
        expires_at: 2027-01-31T00:00:00Z         # after this: 401 key_expired

The file is read again when it changes (checked at most once a second) or on SIGHUP: keys can be
added, revoked or changed without a restart. A file that no longer parses is reported in the log
and the previous keys stay in force.

Keys are random high-entropy tokens, so one SHA-256 is the right hash (as for GitHub tokens): a
leaked file does not reveal them, and lookup stays O(1). ``podium keys create|list|revoke``
(:mod:`podium.cli.keys`) edits the file; ``podium serve --new-key NAME`` prints a fresh key and the
entry to paste.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..config import parse_yaml, read_text_file
from ..errors import ConfigError
from ..pool import Policy
from .quotas import SpendBudget

log = logging.getLogger("podium.server")

if TYPE_CHECKING:
    from ..state import SharedState

KEY_PREFIX = "pk-"


def hash_key(key: str) -> str:
    """The hex SHA-256 digest stored for ``key``."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random API key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


class RateLimit(BaseModel):
    """Token bucket: ``requests_per_minute`` refill, ``burst`` capacity (default: one minute's worth)."""

    model_config = ConfigDict(extra="forbid")
    requests_per_minute: float = Field(default=600, gt=0)
    burst: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)  # all tokens of the key's runs, coordinator's included


class ApiKey(BaseModel):
    """One key: who it is, what it may reach, how fast it may call."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    sha256: str
    policy: Policy = Field(default_factory=Policy)
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    budget: SpendBudget | None = None
    expires_at: datetime | None = None

    def expired(self, now: float | None = None) -> bool:
        if self.expires_at is None:
            return False
        at = self.expires_at if self.expires_at.tzinfo else self.expires_at.replace(tzinfo=UTC)
        return (time.time() if now is None else now) >= at.timestamp()

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        value = value.removeprefix("sha256:").lower()
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ValueError("must be the 64-character hex SHA-256 of the key (podium serve --new-key NAME prints one)")
        return value


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keys: list[ApiKey] = Field(default_factory=list)  # empty (every key revoked): every request is refused


LOCAL = ApiKey(name="local", sha256="0" * 64)
RELOAD_CHECK_S = 1.0


def read_keys(file: Path, shown: str) -> list[ApiKey]:
    """The keys of a keys file; ConfigError naming the file and the problem."""
    if not file.is_file():
        raise ConfigError(f"{shown}: keys file not found; create one (podium serve --new-key NAME prints an entry)")
    parsed = parse_yaml(read_text_file(file, "keys"), str(file), KeysFile, "keys file")
    names = [k.name for k in parsed.keys]
    if len(set(names)) != len(names) or len({k.sha256 for k in parsed.keys}) != len(names):
        raise ConfigError(f"{file}: key names and hashes must be unique")
    return parsed.keys


class Bucket:
    """One key's token bucket."""

    def __init__(self, limit: RateLimit) -> None:
        self.rate = limit.requests_per_minute / 60.0
        self.capacity = float(limit.burst or max(1, math.ceil(limit.requests_per_minute)))
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self) -> float:
        """0 if a request may go now, else the seconds until one may."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class KeyRing:
    """The server's keys. ``open`` is True without a keys file: every caller is ``local``."""

    def __init__(self, keys: list[ApiKey] | None = None, path: Path | None = None) -> None:
        self.open = keys is None
        self.by_hash = {k.sha256: k for k in keys or []}
        self.buckets: dict[str, tuple[RateLimit, Bucket]] = {}
        self.state: SharedState | None = None  # PODIUM_REDIS_URL: limits shared by every replica (podium.state)
        self.path = path
        self.stamp = self._stamp()
        self.checked = time.monotonic()

    @classmethod
    def load(cls, path: str | Path | None) -> KeyRing:
        """Keys from a YAML file, or an open ring when ``path`` is None."""
        if path is None:
            return cls(None)
        file = Path(path).expanduser()
        return cls(read_keys(file, str(path)), file)

    def _stamp(self) -> tuple[float, int] | None:
        try:
            st = self.path.stat() if self.path else None
        except OSError:
            return None
        return (st.st_mtime, st.st_size) if st else None

    def maybe_reload(self, every_s: float = RELOAD_CHECK_S) -> None:
        """Read the keys file again if it changed (checked at most every ``every_s`` seconds)."""
        if self.path is None or time.monotonic() - self.checked < every_s:
            return
        self.checked = time.monotonic()
        if self._stamp() != self.stamp:
            self.reload()

    def reload(self) -> bool:
        """Re-read the keys file now (SIGHUP); on an invalid file keep the current keys. True if reloaded."""
        if self.path is None:
            return False
        stamp = self._stamp()
        try:
            keys = read_keys(self.path, str(self.path))
        except ConfigError as exc:
            log.error("keys file not reloaded, the previous keys stay in force: %s", exc)
            self.stamp = stamp
            return False
        self.by_hash, self.stamp = {k.sha256: k for k in keys}, stamp
        log.warning("keys file %s reloaded: %d keys", self.path, len(keys))
        return True

    def identify(self, authorization: str | None) -> ApiKey | None:
        """The key presented in an ``Authorization: Bearer`` header; None if missing or unknown."""
        if self.open:
            return LOCAL
        if not authorization:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.by_hash.get(hash_key(token.strip()))

    def throttle(self, key: ApiKey) -> float:
        """0 if ``key`` may make a request now, else seconds to wait (for ``Retry-After``)."""
        if self.open:
            return 0.0
        limit, bucket = self.buckets.get(key.name) or (None, None)
        if bucket is None or limit != key.rate_limit:  # new key, or its limit changed in a reload
            bucket = Bucket(key.rate_limit)
            self.buckets[key.name] = (key.rate_limit, bucket)
        return bucket.take()

    async def athrottle(self, key: ApiKey) -> float:
        """:meth:`throttle`, counted in the shared state when there is one (one limit across replicas)."""
        if self.open or self.state is None:
            return self.throttle(key)
        rate = key.rate_limit.requests_per_minute / 60.0
        capacity = float(key.rate_limit.burst or max(1, math.ceil(key.rate_limit.requests_per_minute)))
        return await self.state.take(f"rate:{key.name}", rate, capacity)
