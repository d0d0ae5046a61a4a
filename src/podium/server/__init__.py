"""``podium serve``: an OpenAI-compatible HTTP server whose models are orchestration tiers.

``create_app(pool, tiers=, keys=)`` builds the FastAPI app (``pip install 'podium[server]'``).
Imported lazily: ``import podium.server`` does not import FastAPI until ``create_app`` is used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    """Build the server app; see :func:`podium.server.app.create_app`."""
    from .app import create_app as build

    return build(*args, **kwargs)
