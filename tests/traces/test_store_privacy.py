"""Privacy of the trace store: no API keys or Authorization headers, hash mode, and purge that erases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from echo_upstream import echo_upstream
from local_servers import PostgresServer
from podium.engine import Engine
from podium.pool import parse_pool
from podium.traces.store import Store, digest, scrub
from podium.types import Budget, RunStatus
from store_seed import questions, seed

KEY_IN_SECRET_ENV = "k3y-planted-7f1d9a0c44e2b6aa"  # no recognisable shape: caught because its env name says KEY
KEY_WITH_SHAPE = "sk-planted9c0ffee1234567890abcdef"  # under an innocent env name: caught by its shape


Where = tuple[str, PostgresServer | None]


def database_bytes(store: Store, where: Where) -> bytes:
    """Every byte of the database: SQLite's file, WAL and shared-memory files; PostgreSQL's data files."""
    if where[1] is not None:
        return where[1].database_bytes(where[0])
    files = [store.path, *(store.path.with_name(store.path.name + s) for s in ("-wal", "-shm"))]
    return b"".join(p.read_bytes() for p in files if p.exists())


@pytest.fixture
def echo_server() -> Iterator[str]:
    """An OpenAI-style endpoint that rejects every key (401) and echoes the Authorization header back."""
    with echo_upstream() as url:
        yield url.replace("/v1", "/401/v1")


def leaky_pool(base_url: str) -> str:
    return f"""
name: leaky
models:
  - name: a
    backend: openai
    base_url: {base_url}
    model: a
    api_key_env: PODIUM_TEST_API_KEY
    max_retries: 0
    roles: [worker]
  - name: b
    backend: openai
    base_url: {base_url}
    model: b
    api_key_env: PROVIDER_ACCESS
    max_retries: 0
    roles: [worker, thinker, verifier]
"""


async def test_planted_api_keys_never_reach_the_database(
    store_database: Where, echo_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PODIUM_TEST_API_KEY", KEY_IN_SECRET_ENV)
    monkeypatch.setenv("PROVIDER_ACCESS", KEY_WITH_SHAPE)
    store = Store.open(store_database[0])
    engine = Engine(parse_pool(leaky_pool(echo_server), "leaky"), "rules", on_event=store.handler())
    result = await engine.run(
        f"my key is {KEY_IN_SECRET_ENV} and also {KEY_WITH_SHAPE}; use them", budget=Budget(max_turns=2)
    )
    await engine.aclose()
    assert result.status == RunStatus.FAILED
    echoed = " ".join(t.error or "" for t in result.turns)
    assert "Authorization: [REDACTED]" in echoed  # the server echoed the keys: scrubbed as the error was made
    assert KEY_IN_SECRET_ENV not in echoed and KEY_WITH_SHAPE not in echoed
    run = store.run(result.run_id)
    assert run is not None and run["turns"] and "[REDACTED]" in run["query"]
    assert all("[REDACTED]" in t["error"] for t in run["turns"])
    data = database_bytes(store, store_database)
    for secret in (KEY_IN_SECRET_ENV, KEY_WITH_SHAPE, "planted"):
        assert secret.encode() not in data
    assert b"Bearer sk-" not in data


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer abcdefghijklmnop123",
        '{"authorization": "Basic dXNlcjpwYXNzd29yZA=="}',
        "headers={'api-key': 'x9y8z7w6v5u4'}",
        "https://host/v1?api_key=Zz0123456789&x=1",
        "token hf_ABCDEFGHIJKLMNOPQRSTUVWX and ghp_abcdefghijklmnopqrstuvwx12",
    ],
)
def test_scrub_patterns(text: str) -> None:
    out = scrub(text, secrets=[])
    assert "[REDACTED]" in out
    for secret in (
        "abcdefghijklmnop123",
        "dXNlcjpwYXNzd29yZA==",
        "x9y8z7w6v5u4",
        "Zz0123456789",
        "ABCDEFGHIJKLMNOPQRSTUVWX",
        "abcdefghijklmnopqrstuvwx12",
    ):
        assert secret not in out


def test_hash_mode_stores_no_texts(store_database: Where, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODIUM_TRACES", "hash")
    store = Store.open(store_database[0])
    assert store.text_mode == "hash"
    results = seed(store, questions(1), workers=("math-eu",))
    data = database_bytes(store, store_database)
    for text in ("question number 0", "RIGHT: 42", "1. Read. 2. Answer.", "Answer to check", "ACCEPT: correct"):
        assert text.encode() not in data
    run = store.run(results[0].run_id)
    assert run["query"] == digest(results[0].query) and run["answer"] == digest("RIGHT: 42")
    assert run["status"] == "accepted" and [t["model"] for t in run["turns"]] == ["planner", "math-eu", "judge"]
    assert all(t["prompt"].startswith("sha256:") and t["response"].startswith("sha256:") for t in run["turns"])
    assert run["text_mode"] == "hash" and run["total_tokens"] > 0


def test_purge_deletes_and_erases(store_database: Where) -> None:
    store = Store.open(store_database[0])
    (old,) = seed(store, ["[math] ancient-secret-question"], workers=("math-eu",))
    (new,) = seed(store, ["[math] recent question"], workers=("math-eu",))
    with store._write() as conn:  # age one run
        conn.execute("UPDATE runs SET started_at = 1.0e9 WHERE id = ?", (old.run_id,))
    assert b"ancient-secret-question" in database_bytes(store, store_database)
    assert store.purge("2005-01-01") == 1
    assert [r["id"] for r in store.runs()] == [new.run_id]
    assert store.run(old.run_id) is None
    assert [t for t in store.turn_rows() if t["run_id"] == old.run_id] == []
    data = database_bytes(store, store_database)
    assert b"recent question" in data
    assert b"ancient-secret-question" not in data  # overwritten, not merely unlinked
