"""A streamed tier run that finishes as its client hangs up: the tier's answer is released only at
the run's end, so the client can be gone when the answer's first chunk is sent, after the run has
finished with its own reason (not ``interrupted``). Its trace must still be stored (the soak test
lost 2 of 232 this way under CI load)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from podium.server.app import create_app
from podium.server.traces import Traces
from podium.traces.store import Store

POOL = str(Path(__file__).parents[1] / "pools" / "server.yaml")


async def stream_until_the_answer(app: Any, model: str) -> list[bytes]:
    """POST a streamed chat straight to the ASGI app; the "client" hangs up (send raises) at the
    first chunk that carries answer text. Returns the bodies sent before that."""
    body = json.dumps({"model": model, "stream": True, "messages": [{"role": "user", "content": "What is 17 * 23?"}]})
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[bytes] = []
    gone = asyncio.Event()
    messages = [{"type": "http.request", "body": body.encode(), "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        chunk = message.get("body", b"")
        if b'"content": "' in chunk and b'"content": ""' not in chunk:
            gone.set()
            raise OSError("the client hung up")
        sent.append(chunk)

    try:
        await asyncio.wait_for(app(scope, receive, send), 30)
    except OSError:
        pass
    await asyncio.sleep(0.2)  # let a closed generator's clean-up run
    return sent


@pytest.mark.parametrize("fast_chat", [True, False])
async def test_a_tier_run_that_finished_as_its_client_left_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast_chat: bool
) -> None:
    monkeypatch.setenv("PODIUM_TRACES", "full")
    traces = Traces(tmp_path / "podium.db")
    app = create_app(POOL, traces=traces, fast_chat=fast_chat)
    sent = await stream_until_the_answer(app, "podium")
    assert any(b"podium turn" in chunk for chunk in sent), sent  # the run went through its turns
    traces.close()
    runs = Store.open(tmp_path / "podium.db").runs(limit=10)
    assert len(runs) == 1, "the finished run's trace was lost"
    assert runs[0]["status"] == "accepted"  # stored as it finished, not as interrupted
