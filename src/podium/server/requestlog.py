"""One JSON line per request: who asked for what, what answered, how it ended, how long, what it cost.

Written by :class:`podium.server.edges.RequestEdge` to the logger ``podium.requests`` at INFO; ``PODIUM_REQUEST_LOG`` (or
``create_app(request_log=...)``) set to a file path, or ``-`` for stderr, sends the lines there.
A line holds names, ids and figures only: the key's *name*, never the key, no headers, no message
text. Fields: ``ts``, ``request_id``, ``method``, ``path``, ``status``, ``latency_ms``, and for
chat completions ``key``, ``model``, ``kind``, ``stream``, ``trace_id``, ``served_model``,
``run_status``, ``prompt_tokens``, ``completion_tokens``, ``cost_usd``, ``usage_estimated``,
``ttft_ms`` (streams).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..scrub import scrub_value
from ..types import RunResult
from .accounting import served_model

log = logging.getLogger("podium.requests")
Scope = MutableMapping[str, Any]


def configure(target: str | Path | None) -> None:
    """Send request lines to ``target`` (a file path, ``-`` for stderr; None: ``PODIUM_REQUEST_LOG``)."""
    target = target if target is not None else os.environ.get("PODIUM_REQUEST_LOG")
    if not target or any(getattr(h, "podium_target", None) == str(target) for h in log.handlers):
        return
    for old in [h for h in log.handlers if hasattr(h, "podium_target")]:  # one target per process
        log.removeHandler(old)
        old.close()
    handler: logging.Handler = (
        logging.StreamHandler(sys.stderr) if str(target) == "-" else logging.FileHandler(target, encoding="utf-8")
    )
    handler.podium_target = str(target)  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def run_fields(result: RunResult) -> dict[str, Any]:
    """What a finished run adds to its request's line."""
    return {
        "trace_id": result.run_id,
        "served_model": served_model(result),
        "run_status": result.status.value,
        "prompt_tokens": sum(t.prompt_tokens for t in result.turns) + result.orchestration_prompt_tokens,
        "completion_tokens": sum(t.completion_tokens for t in result.turns) + result.orchestration_completion_tokens,
        "cost_usd": round(result.cost_usd + result.orchestration_cost_usd, 8),
        "usage_estimated": any(t.usage_estimated for t in result.turns),
    }


def enabled() -> bool:
    """Whether request lines are written (the logger takes INFO)."""
    return log.isEnabledFor(logging.INFO)


def write_line(scope: Scope, status: int, started: float, fields: dict[str, Any]) -> None:
    """The request's line, once its response has been sent (``status`` 0: none was, logged as 499)."""
    line = {
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "request_id": scope["state"].get("request_id"),
        "method": scope.get("method"),
        "path": scope.get("path"),
        "status": status or 499,
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        **fields,
    }
    log.info(json.dumps(scrub_value(line), ensure_ascii=False, default=str))
