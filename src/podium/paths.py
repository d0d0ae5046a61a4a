"""Where podium keeps its files: one ``podium_home()`` for the trace store, breaker state and caches."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["HOME_ENV", "env_path", "podium_home"]

HOME_ENV = "PODIUM_HOME"


def env_path(var: str) -> Path | None:
    """The path in environment variable ``var`` with ``~`` expanded; None when it is unset or empty."""
    value = os.environ.get(var)
    return Path(value).expanduser() if value else None


def podium_home() -> Path:
    """``$PODIUM_HOME`` (``~`` expanded), else the platform's user data directory for podium."""
    home = env_path(HOME_ENV)
    if home is not None:
        return home
    from platformdirs import user_data_dir

    return Path(user_data_dir("podium"))
