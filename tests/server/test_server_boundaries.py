"""What a client can send and what it gets back (app in-process, real upstreams on 127.0.0.1): the
operator's key never in a response, error, SSE event or the breaker file; a hostile string cannot
corrupt the trace store; lone surrogates are replaced, never a 500 or a lost run; schema edges."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi", reason="fastapi is in the 'server' extra")

from echo_upstream import echo_upstream
from faults.helpers import model
from faults.server import FaultServer
from podium.pool import parse_pool
from podium.scrub import clean_text
from podium.server.app import create_app
from podium.server.schemas import may_hold_surrogates
from podium.server.traces import Traces

KEY = "gsk_8fK2mN4pQ6rS8tU0vW2xY4zA6bC8dE0fG2hJ4"  # a Groq-shaped key in an innocently named variable
ASK = [{"role": "user", "content": "six times seven?"}]


def app_for(pool: dict, db: Path):
    return create_app(parse_pool(yaml.safe_dump(pool), "test pool"), traces=Traces(db))


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


def echo_pool(url: str) -> dict:
    entry = {
        "name": "leaky",
        "backend": "openai",
        "base_url": url,
        "model": "m",
        "api_key_env": "UPSTREAM_SETTING",
        "max_retries": 0,
        "breaker_threshold": 1,
        "breaker_open_s": 60,
    }
    return {"name": "echo", "models": [entry], "defaults": {}}


async def test_upstream_echoing_the_key_reaches_no_client_and_no_state_file(
    tmp_path: Path, podium_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPSTREAM_SETTING", KEY)
    with echo_upstream() as url:
        app = app_for(echo_pool(url), tmp_path / "podium.db")
        async with client(app) as c:
            first = await c.post("/v1/chat/completions", json={"model": "leaky", "messages": ASK})
            again = await c.post("/v1/chat/completions", json={"model": "leaky", "messages": ASK})  # circuit now open
            streamed = await c.post("/v1/chat/completions", json={"model": "leaky", "messages": ASK, "stream": True})
            trace = await c.get(f"/v1/traces/{first.headers['x-podium-trace-id']}")
    assert first.status_code == 502 and "[REDACTED]" in first.text  # the upstream did echo it
    assert "circuit open" in again.text and "error: " in streamed.text
    breakers = podium_home / "breakers.json"
    for what, text in [
        ("502", first.text),
        ("circuit open", again.text),
        ("sse", streamed.text),
        ("trace", trace.text),
        ("breakers.json", breakers.read_text()),
    ]:
        assert KEY not in text and KEY[4:20] not in text, f"the key leaked into {what}"
    assert stat.S_IMODE(breakers.stat().st_mode) == 0o600


def ok_pool(url: str) -> dict:
    return {
        "name": "ok",
        "models": [model("m", url, "ok"), model("n", url, "ok")],
        "defaults": {"worker": "m", "thinker": "m", "verifier": "m", "coordinator": "m"},
    }


async def test_escape_in_a_client_string_cannot_corrupt_the_store(fault_server: FaultServer, tmp_path: Path) -> None:
    db = tmp_path / "podium.db"
    app = app_for(ok_pool(fault_server.url), db)
    hostile = {
        "model": "m",
        "messages": ASK,
        "podium": {"exclude_models": ['api_key=x\\"', 'Bearer abcdefghijkl\\\\\\"']},
    }
    async with client(app) as c:
        r = await c.post("/v1/chat/completions", json=hostile)
        assert r.status_code == 200
        trace = await c.get(f"/v1/traces/{r.headers['x-podium-trace-id']}")
    assert trace.status_code == 200 and 'api_key=[REDACTED]"' in trace.json()["policy"]["exclude_models"]
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    for args in (["ls"], ["show", r.headers["x-podium-trace-id"], "--json"], ["audit", "--allowed-regions", "local"]):
        proc = subprocess.run(
            [sys.executable, "-m", "podium", "traces", *args, "--db", str(db)], capture_output=True, text=True, env=env
        )
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (args, proc.stderr)


async def test_lone_surrogates_are_replaced_and_the_run_is_stored(fault_server: FaultServer, tmp_path: Path) -> None:
    app = app_for(ok_pool(fault_server.url), tmp_path / "podium.db")
    body = '{"model": "%s", "messages": [{"role": "user", "content": "what is \\ud800 and \\udfff?"}]%s}'
    async with client(app) as c:
        for target, extra in (("m", ""), ("m", ', "stream": true'), ("podium", "")):
            r = await c.post(
                "/v1/chat/completions",
                content=(body % (target, extra)).encode(),
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 200, r.text
            trace = await c.get(f"/v1/traces/{r.headers['x-podium-trace-id']}")
            assert trace.status_code == 200 and trace.json()["query"] == "what is \ufffd and \ufffd?"
        # json.loads decodes bytes with surrogatepass: encoded surrogates (UTF-8, UTF-16) and upper-case
        # escapes give lone surrogates too (the fast route skips the cleaning walk only when none can)
        for raw in (
            b'{"model": "m", "messages": [{"role": "user", "content": "what is \xed\xa0\x80 and \xed\xbf\xbf?"}]}',
            b'{"model": "m", "messages": [{"role": "user", "content": "what is \\uD800 and \\uDFFF?"}]}',
            '{"model": "m", "messages": [{"role": "user", "content": "what is \\ud800 and \\udfff?"}]}'.encode(
                "utf-16-le"
            ),
        ):
            r = await c.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 200, (raw, r.text)
            trace = await c.get(f"/v1/traces/{r.headers['x-podium-trace-id']}")
            assert trace.json()["query"] == "what is \ufffd and \ufffd?", raw


def test_cli_question_with_invalid_utf8_is_answered_and_stored(
    fault_server: FaultServer, tmp_path: Path, podium_home: Path
) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text(yaml.safe_dump(ok_pool(fault_server.url)))
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "PODIUM_HOME": str(podium_home)}
    proc = subprocess.run(
        [sys.executable, "-m", "podium", "ask", "--pool", str(pool), "--json", b"what is \xff?"],
        capture_output=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    trace_id = json.loads(proc.stdout)["trace_id"]
    shown = subprocess.run(
        [sys.executable, "-m", "podium", "traces", "show", trace_id, "--json"], capture_output=True, env=env
    )
    assert json.loads(shown.stdout)["query"] == "what is \ufffd?"


async def test_schema_edges(fault_server: FaultServer, tmp_path: Path) -> None:
    app = app_for(ok_pool(fault_server.url), tmp_path / "podium.db")
    async with client(app) as c:
        zero = await c.post(
            "/v1/chat/completions", json={"model": "podium", "messages": ASK, "podium": {"max_cost_usd": 0}}
        )
        assert zero.status_code == 400 and zero.json()["error"]["param"] == "podium.max_cost_usd"
        stops = await c.post(
            "/v1/chat/completions", json={"model": "m", "messages": ASK, "stop": ["a", "b", "c", "d", "e"]}
        )
        assert stops.status_code == 400 and stops.json()["error"]["param"] == "stop"
        wrong_method = await c.put("/v1/chat/completions", json={})
        assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
        metrics = await c.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        schema = (await c.get("/openapi.json")).json()
    assert list(schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    stop = schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]["stop"]
    assert any(option.get("maxItems") == 4 for option in stop["anyOf"])


def test_trace_database_files_are_private(fault_server: FaultServer, tmp_path: Path) -> None:
    from podium.traces.store import Store
    from podium.types import RunResult, RunStatus

    store = Store.open(tmp_path / "new" / "podium.db")
    store.record(RunResult(query="q", status=RunStatus.ANSWERED, answer="a"))
    files = [p for p in (tmp_path / "new").iterdir()]
    assert {p.name for p in files} >= {"podium.db", "podium.db-wal", "podium.db-shm"}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files), [(p.name, oct(p.stat().st_mode)) for p in files]
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700


def test_trace_viewer_refuses_foreign_host_names(tmp_path: Path) -> None:
    import threading

    from podium.traces.store import Store
    from podium.traces.viewer import make_server

    server = make_server(Store.open(tmp_path / "podium.db"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api/runs"
    try:
        assert httpx.get(url, headers={"Host": "rebound.example"}, timeout=5).status_code == 421
        assert httpx.get(url, headers={"Host": "rebound.example:8765"}, timeout=5).status_code == 421
        for host in ("127.0.0.1", "localhost:8765", "[::1]:8765"):
            assert httpx.get(url, headers={"Host": host}, timeout=5).status_code == 200
    finally:
        server.shutdown()
        server.server_close()


def test_rows_corrupted_by_older_versions_still_read(tmp_path: Path) -> None:
    import sqlite3

    from podium.traces.reports import audit_regions
    from podium.traces.store import Store
    from podium.types import RunResult, RunStatus, Turn

    store = Store.open(tmp_path / "podium.db")
    run_id = store.record(
        RunResult(
            query="q",
            status=RunStatus.ANSWERED,
            answer="a",
            turns=[Turn(turn=1, role="worker", model="m", region="eu", output="a")],
        )
    )
    with sqlite3.connect(store.path) as conn:  # what the old scrubber wrote: a JSON escape with its backslash eaten
        conn.execute(
            "UPDATE runs SET policy = ? WHERE id = ?", ('{"exclude_models": ["api_key=[REDACTED]"]"]}', run_id)
        )
        conn.execute("UPDATE turns SET attempts = ? WHERE run_id = ?", ('["m: {"a": "Bearer [REDACTED]"}"]', run_id))
    run = store.run(run_id)
    assert run is not None and run["policy"] == {"unparsable": '{"exclude_models": ["api_key=[REDACTED]"]"]}'}
    assert run["turns"][0]["attempts"] == ['["m: {"a": "Bearer [REDACTED]"}"]']
    assert store.runs()[0]["id"] == run_id
    audit_regions(store, ["eu"])  # the residency proof reads it too


PIECES = ["a", " ", "é", "✓", "\\", "\ud800", "\udbff", "\udc00", "\udfff", "\ud83d\ude00", "\x00", "\u00ff"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(PIECES)).map("".join) | st.text(),
    st.sampled_from(["utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32"]),
    st.booleans(),
)
def test_bodies_without_surrogates_are_told_apart(text: str, encoding: str, ascii_only: bool) -> None:
    """may_hold_surrogates (the fast route's reason to skip the cleaning walk) is never False for a
    body that json.loads reads into a string with a lone surrogate."""
    body = json.dumps({"content": text}, ensure_ascii=ascii_only).encode(encoding, "surrogatepass")
    decoded = json.loads(body)["content"]
    has_lone = decoded != clean_text(decoded)
    assert may_hold_surrogates(body) or not has_lone
