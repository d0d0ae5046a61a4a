"""The compatibility suite's live server: a ``podium serve`` subprocess (tiers included) in front of a
scripted upstream on 127.0.0.1, one per test module (each wraps :func:`serve` in a ``live`` fixture).
Not a conftest.py: a second module named ``conftest`` would shadow tests/conftest.py for helpers that
import from it.

LiteLLM downloads a cost map and sends telemetry when imported unless told not to, and ``llm``
reads its user directory: both are pointed at local state here, before any test imports them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # never fetch the cost map from the internet
os.environ["LITELLM_TELEMETRY"] = "False"
os.environ.setdefault("OPENAI_API_KEY", "sk-unused")  # clients insist on a key; the server has none

pytest.importorskip("fastapi", reason="fastapi is in the 'server' extra")

from compat_upstream import Upstream, compat_upstream

from podium_process import PodiumServer

TIERS = {
    "tiers": [
        {"name": "team", "coordinator": "rules", "max_turns": 4},
        {"name": "solo", "coordinator": "fixed", "max_turns": 2, "roles": ["worker"]},
    ]
}


def pool_config(url: str) -> dict[str, Any]:
    """Pass-through models on the upstream (``gpt-up`` priced by the pool, ``priced-up`` by the
    upstream's ``usage.cost``, ``down`` always failing, ``flaky``
    failing over to ``gpt-up``), and a tier worker ``w-up`` on it too."""
    up = {"backend": "openai", "base_url": url, "region": "eu", "provider": "up-cloud", "context_window": 128000}
    up |= {"max_retries": 0, "breaker_threshold": 0, "timeout_s": 10, "roles": ["worker"]}
    scripted = {"backend": "scripted", "region": "eu", "provider": "local-test"}
    return {
        "name": "compat",
        "models": [
            {"name": "gpt-up", "model": "plain", "input_usd_per_mtok": 2.5, "output_usd_per_mtok": 10.0, **up},
            {"name": "priced-up", "model": "priced", "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 1.0, **up},
            {"name": "down", "model": "fail", **up, "max_retries": 1},
            {"name": "flaky", "model": "fail", **up, "fallbacks": ["gpt-up"]},
            {"name": "w-up", "model": "tier-worker", "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0, **up},
            {"name": "planner", "replies": ["Plan: answer it."], **scripted, "roles": ["thinker", "coordinator"]},
            {"name": "judge", "replies": ["ACCEPT: fine."], **scripted, "roles": ["verifier"]},
        ],
        "defaults": {"worker": "w-up", "thinker": "planner", "verifier": "judge", "coordinator": "planner"},
    }


class Live:
    """The running server and its upstream."""

    def __init__(self, server: PodiumServer, upstream: Upstream) -> None:
        self.server, self.upstream = server, upstream
        self.url = server.url
        self.base = f"{server.url}/v1"


def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The live server for one test module (each module wraps this in its own ``live`` fixture)."""
    home = tmp_path_factory.mktemp("compat")
    with compat_upstream() as upstream:
        pool, tiers = home / "pool.yaml", home / "tiers.yaml"
        pool.write_text(yaml.safe_dump(pool_config(upstream.url)))
        tiers.write_text(yaml.safe_dump(TIERS))
        with PodiumServer(pool, home, args=["--tiers", str(tiers), "--log-level", "warning"]) as server:
            yield Live(server, upstream)
