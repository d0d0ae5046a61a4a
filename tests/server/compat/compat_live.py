"""The compatibility suite's live server: a ``podium serve`` subprocess (tiers included) in front of a
scripted upstream on 127.0.0.1, one per test module (each wraps :func:`serve` in a ``live`` fixture).
Not a conftest.py: a second module named ``conftest`` would shadow tests/conftest.py for helpers that
import from it.

LiteLLM downloads a cost map and sends telemetry when imported unless told not to, and ``llm``
reads its user directory: both are pointed at local state here, before any test imports them.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
    failing over to ``gpt-up``, ``cached-up`` with a response cache), and a tier worker ``w-up`` on it too."""
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
            {"name": "cached-up", "model": "plain", **up, "cache": True},
            {"name": "w-up", "model": "tier-worker", "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0, **up},
            {"name": "planner", "replies": ["Plan: answer it."], **scripted, "roles": ["thinker", "coordinator"]},
            {"name": "judge", "replies": ["ACCEPT: fine."], **scripted, "roles": ["verifier"]},
        ],
        "defaults": {"worker": "w-up", "thinker": "planner", "verifier": "judge", "coordinator": "planner"},
    }


class PatientServer(PodiumServer):
    """``podium serve`` given 2 minutes to come up: this suite's imports (LiteLLM, langchain) and a
    loaded test machine can make 30 s too short."""

    def _wait_healthy(self, timeout: float = 120.0) -> None:
        super()._wait_healthy(timeout)


class Live:
    """The running server and its upstream."""

    def __init__(self, server: PodiumServer, upstream: Upstream) -> None:
        self.server, self.upstream = server, upstream
        self.url = server.url
        self.base = f"{server.url}/v1"

    def logged(self, trace_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The server's request log line (``PODIUM_REQUEST_LOG``) of a trace; written once the response
        has been sent, so it may come a moment after the client has it."""
        path, deadline = self.server.home / "requests.jsonl", time.monotonic() + timeout
        while True:
            lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
            found = next((e for e in lines if e.get("trace_id") == trace_id), None)
            if found is not None or time.monotonic() > deadline:
                assert found is not None, f"no request log line for {trace_id}"
                return found
            time.sleep(0.05)


LOOPBACK = ("127.0.0.1", "::1", "localhost")


@contextmanager
def loopback_only() -> Iterator[list[str]]:
    """Refuse (and list) every connection or name lookup this process makes to anything but 127.0.0.1,
    so a client that phones home (a price map, telemetry) fails the suite instead of leaving."""
    attempts: list[str] = []
    connect, lookup = socket.socket.connect, socket.getaddrinfo

    def guarded_connect(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:  # type: ignore[index]
            attempts.append(f"connect {address}")
            raise OSError(f"the compatibility suite never leaves 127.0.0.1 (connect {address})")
        return connect(self, address)  # type: ignore[arg-type]

    def guarded_lookup(host: object, *args: object, **kwargs: object) -> object:
        if host not in (*LOOPBACK, None):
            attempts.append(f"lookup {host}")
            raise socket.gaierror(f"the compatibility suite never leaves 127.0.0.1 (lookup {host})")
        return lookup(host, *args, **kwargs)  # type: ignore[arg-type]

    socket.socket.connect, socket.getaddrinfo = guarded_connect, guarded_lookup  # type: ignore[method-assign,assignment]
    try:
        yield attempts
    finally:
        socket.socket.connect, socket.getaddrinfo = connect, lookup  # type: ignore[method-assign]


def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The live server for one test module (each module wraps this in its own ``live`` fixture); no
    connection from the test process may leave 127.0.0.1 meanwhile (checked at the end)."""
    home = tmp_path_factory.mktemp("compat")
    with loopback_only() as attempts, compat_upstream() as upstream:
        pool, tiers = home / "pool.yaml", home / "tiers.yaml"
        pool.write_text(yaml.safe_dump(pool_config(upstream.url)))
        tiers.write_text(yaml.safe_dump(TIERS))
        log = {"PODIUM_REQUEST_LOG": str(home / "requests.jsonl")}
        args = ["--tiers", str(tiers), "--log-level", "warning"]
        with PatientServer(pool, home, env=log, args=args) as server:
            yield Live(server, upstream)
    assert attempts == [], f"a client tried to leave 127.0.0.1: {attempts}"
