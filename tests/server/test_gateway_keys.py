"""Keys as operators expect, with the real openai SDK: a spend budget per period read from the trace
store (so it holds across restarts), tokens per minute, expiry, and the keys file reloaded when it
changes or on SIGHUP, without a restart."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

openai = pytest.importorskip("openai", reason="openai is in the 'test' extra")
pytest.importorskip("fastapi", reason="fastapi is in the 'server' extra")

from podium.server.app import create_app  # noqa: E402
from podium.server.auth import hash_key  # noqa: E402
from podium.server.quotas import period_bounds  # noqa: E402
from podium.server.traces import Traces  # noqa: E402

POOL = str(Path(__file__).parents[1] / "pools" / "server.yaml")
ASK = [{"role": "user", "content": "What is 17 * 23?"}]


def entry(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "sha256": hash_key(f"sk-{name}"), **extra}


def write(path: Path, *entries: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"keys": list(entries)}, default_flow_style=False))
    return path


def sdk(app: Any, name: str) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")
    return openai.AsyncOpenAI(base_url="http://127.0.0.1/v1", api_key=f"sk-{name}", http_client=http, max_retries=0)


async def test_spend_budget_per_period_holds_across_a_restart(tmp_path: Path) -> None:
    keys = write(tmp_path / "keys.yaml", entry("capped", budget={"max_usd": 1e-7, "period": "day"}), entry("free"))
    app = create_app(POOL, keys=keys, traces=Traces(tmp_path / "p.db"))
    await sdk(app, "capped").chat.completions.create(model="podium", messages=ASK)  # spends more than $1e-7
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk(app, "capped").chat.completions.create(model="eu-solver", messages=ASK)
    assert caught.value.code == "budget_exceeded"
    headers = caught.value.response.headers
    assert headers["x-should-retry"] == "false"
    assert int(headers["x-podium-budget-reset"]) == int(period_bounds("day", time.time())[1] or 0)
    await sdk(app, "free").chat.completions.create(model="eu-solver", messages=ASK)  # other keys unaffected
    restarted = create_app(POOL, keys=keys, traces=Traces(tmp_path / "p.db"))  # spend is read from the store
    with pytest.raises(openai.BadRequestError):
        await sdk(restarted, "capped").chat.completions.create(model="eu-solver", messages=ASK)


async def test_tokens_per_minute(tmp_path: Path) -> None:
    keys = write(tmp_path / "keys.yaml", entry("tpm", rate_limit={"tokens_per_minute": 10}))
    client = sdk(create_app(POOL, keys=keys, traces=Traces(tmp_path / "p.db")), "tpm")
    await client.chat.completions.create(model="eu-solver", messages=ASK)  # about 18 tokens: over the limit after
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="eu-solver", messages=ASK)
    assert caught.value.code == "tokens_per_minute_exceeded"
    assert 1 <= int(caught.value.response.headers["Retry-After"]) <= 60


async def test_expired_key_is_refused(tmp_path: Path) -> None:
    keys = write(
        tmp_path / "keys.yaml",
        entry("old", expires_at="2020-01-01T00:00:00Z"),
        entry("new", expires_at="2999-01-01T00:00:00+00:00"),
    )
    app = create_app(POOL, keys=keys, traces=Traces(None))
    with pytest.raises(openai.AuthenticationError) as caught:
        await sdk(app, "old").chat.completions.create(model="eu-solver", messages=ASK)
    assert caught.value.code == "key_expired"
    assert (await sdk(app, "new").chat.completions.create(model="eu-solver", messages=ASK)).choices


async def test_keys_file_reloads_when_it_changes(tmp_path: Path) -> None:
    keys = write(tmp_path / "keys.yaml", entry("alice"))
    app = create_app(POOL, keys=keys, traces=Traces(None))
    with pytest.raises(openai.AuthenticationError):
        await sdk(app, "bob").chat.completions.create(model="eu-solver", messages=ASK)
    write(keys, entry("bob"))  # bob added, alice revoked
    await asyncio.sleep(1.1)  # the file is checked at most once a second
    assert (await sdk(app, "bob").chat.completions.create(model="eu-solver", messages=ASK)).choices
    with pytest.raises(openai.AuthenticationError):
        await sdk(app, "alice").chat.completions.create(model="eu-solver", messages=ASK)
    keys.write_text("keys: [this is not valid")  # a broken file: the previous keys stay in force
    await asyncio.sleep(1.1)
    assert (await sdk(app, "bob").chat.completions.create(model="eu-solver", messages=ASK)).choices


async def test_sighup_reloads_the_keys_file(tmp_path: Path) -> None:
    keys = write(tmp_path / "keys.yaml", entry("alice"))
    app = create_app(POOL, keys=keys, traces=Traces(None))
    ring, loop = app.state.keys, asyncio.get_running_loop()
    app.state.guard.watch_sighup(loop)
    try:
        ring.checked = time.monotonic() + 3600  # no change detection: only the signal can reload
        write(keys, entry("alice"), entry("carol"))
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.2)
        assert ring.identify("Bearer sk-carol") is not None
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
