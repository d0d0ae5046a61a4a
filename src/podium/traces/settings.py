"""Where traces go and what they keep: the store's location (``PODIUM_HOME``, ``PODIUM_TRACES_URL``),
its privacy mode (``PODIUM_TRACES``), and the dates and durations its queries take."""

from __future__ import annotations

import os
import re
import time
from datetime import UTC
from pathlib import Path

from ..errors import ConfigError, UsageError

TRACES_ENV = "PODIUM_TRACES"
TRACES_URL_ENV = "PODIUM_TRACES_URL"


def default_path() -> Path:
    """``$PODIUM_HOME/podium.db``, else ``podium.db`` in the platform's user data directory."""
    from ..paths import podium_home

    return podium_home() / "podium.db"


def is_postgres_url(location: object) -> bool:
    """Whether ``location`` names a PostgreSQL database rather than a SQLite file."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def traces_url() -> str | None:
    """``PODIUM_TRACES_URL``: a ``postgresql://`` URL, a ``sqlite:///PATH`` or a file path; None if unset."""
    value = os.environ.get(TRACES_URL_ENV, "").strip()
    if not value:
        return None
    if value.startswith("sqlite://"):
        return value.removeprefix("sqlite://") or None
    if "://" in value and not is_postgres_url(value):
        raise ConfigError(
            f"{TRACES_URL_ENV}={value.split('://')[0]}://... is not supported; use postgresql:// or sqlite:///PATH"
        )
    return value


def traces_setting() -> str:
    """``PODIUM_TRACES``: ``full`` (default), ``hash`` or ``off``."""
    value = os.environ.get(TRACES_ENV, "full").strip().lower() or "full"
    if value not in ("full", "hash", "off"):
        raise ConfigError(f"{TRACES_ENV}={value!r} is not valid; use full, hash or off")
    return value


def parse_time(value: str | float | None, *, name: str = "date") -> float | None:
    """Epoch seconds from an ISO date/datetime (UTC if no zone), a duration ago (``7d``, ``12h``,
    ``30m``), or a number. ``None`` passes through."""
    if value is None or isinstance(value, (int, float)):
        return value
    text = value.strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", text)
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
        return time.time() - float(m.group(1)) * unit
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{name} {value!r} is not a date; use YYYY-MM-DD, an ISO datetime, or a duration like 7d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
