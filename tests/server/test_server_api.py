"""The server app in-process (httpx ASGI transport): errors, auth, rate limits, policy merge, metrics,
trace ownership, tier config and the streaming answer gate."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml

pytest.importorskip("fastapi", reason="fastapi is in the 'server' extra")

from podium.errors import ConfigError
from podium.pool import load_pool
from podium.server.app import create_app
from podium.server.auth import KeyRing, hash_key
from podium.server.tiers import load_tiers
from podium.server.traces import Traces

POOL = str(Path(__file__).parents[1] / "pools" / "server.yaml")
ASK = [{"role": "user", "content": "What is 17 * 23?"}]
KEYS = {"eu-key": {"allowed_regions": ["eu"]}, "open-key": {}, "solver-only": {"allowed_models": ["eu-solver"]}}


def write_keys(folder: Path, rpm: float = 6000, burst: int | None = None) -> Path:
    entries = [
        {
            "name": name,
            "sha256": hash_key(f"sk-{name}"),
            "policy": policy,
            "rate_limit": {"requests_per_minute": rpm, **({"burst": burst} if burst else {})},
        }
        for name, policy in KEYS.items()
    ]
    path = folder / "keys.yaml"
    path.write_text(yaml.safe_dump({"keys": entries}))
    return path


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer sk-{name}"}


@pytest.fixture
def make_client(tmp_path: Path):
    clients: list[httpx.AsyncClient] = []

    def build(**kwargs) -> httpx.AsyncClient:
        app = create_app(POOL, traces=Traces(tmp_path / "podium.db"), **kwargs)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")
        client.app = app  # type: ignore[attr-defined]
        clients.append(client)
        return client

    yield build


@pytest.fixture
def open_client(make_client):
    return make_client()


@pytest.fixture
def keyed(make_client, tmp_path: Path):
    return make_client(keys=write_keys(tmp_path))


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if code:
        assert error["code"] == code, error
    return error


async def chat(client: httpx.AsyncClient, model: str = "podium", headers: dict | None = None, **body) -> httpx.Response:
    return await client.post(
        "/v1/chat/completions", json={"model": model, "messages": ASK, **body}, headers=headers or {}
    )


# bad input


async def test_malformed_json_is_400(open_client) -> None:
    r = await open_client.post(
        "/v1/chat/completions",
        content=b'{"model": "podium", "messages": [',
        headers={"content-type": "application/json"},
    )
    assert_error(r, 400, "invalid_json")


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": "podium", "messages": []}, "messages"),
        ({"model": "podium", "messages": "hello"}, "messages"),
        ({"model": 7, "messages": ASK}, "model"),
        ({"model": "podium", "messages": ASK, "temperature": "hot"}, "temperature"),
        ({"model": "podium", "messages": ASK, "max_tokens": 10**9}, "max_tokens"),
        ({"model": "podium", "messages": ASK, "max_tokens": 0}, "max_tokens"),
        ({"model": "podium", "messages": ASK, "surprise": 1}, "surprise"),
        ({"model": "podium", "messages": [{"role": "function", "content": "x"}]}, "messages.0.role"),
        ({"messages": ASK}, "model"),
    ],
)
async def test_invalid_fields_are_400_naming_the_field(open_client, body, param) -> None:
    r = await open_client.post("/v1/chat/completions", json=body)
    assert assert_error(r, 400)["param"] == param


async def test_empty_user_message_is_400(open_client) -> None:
    r = await open_client.post(
        "/v1/chat/completions", json={"model": "podium", "messages": [{"role": "user", "content": "  "}]}
    )
    assert_error(r, 400, "empty_messages")


async def test_unknown_model_is_404(open_client) -> None:
    assert_error(await chat(open_client, "gpt-17"), 404, "model_not_found")


async def test_oversized_body_is_413(make_client) -> None:
    client = make_client(max_body_bytes=2048)
    r = await chat(client, messages=[{"role": "user", "content": "x" * 5000}])
    assert_error(r, 413, "request_too_large")


async def test_max_tokens_beyond_context_window_is_400(open_client) -> None:
    r = await chat(open_client, "eu-solver", max_tokens=50_000)
    assert_error(r, 400, "max_tokens_too_large")


async def test_unknown_route_is_openai_style_404(open_client) -> None:
    assert_error(await open_client.get("/v1/nothing"), 404)


# auth and rate limits


async def test_missing_and_unknown_keys_are_401(keyed) -> None:
    assert_error(await chat(keyed), 401, "invalid_api_key")
    assert_error(await chat(keyed, headers={"Authorization": "Bearer sk-stolen"}), 401, "invalid_api_key")
    assert (await chat(keyed, headers=auth("open-key"))).status_code == 200


async def test_model_outside_a_keys_policy_is_404_like_an_unknown_one(keyed) -> None:
    hidden = assert_error(await chat(keyed, "us-solver", headers=auth("eu-key")), 404, "model_not_found")
    unknown = assert_error(await chat(keyed, "no-such-model", headers=auth("eu-key")), 404, "model_not_found")
    assert hidden["message"].replace("us-solver", "X") == unknown["message"].replace(
        "no-such-model", "X"
    )  # nothing tells them apart


async def test_tier_with_no_model_for_a_role_names_the_role(keyed) -> None:
    err = assert_error(await chat(keyed, "podium", headers=auth("solver-only")), 403, "no_model_for_role")
    assert "'thinker'" in err["message"]


async def test_rate_limit_is_429_with_retry_after(make_client, tmp_path: Path) -> None:
    client = make_client(keys=write_keys(tmp_path, rpm=1, burst=2))
    codes = [(await chat(client, "eu-solver", headers=auth("open-key"))).status_code for _ in range(3)]
    assert codes[:2] == [200, 200]
    r = await chat(client, "eu-solver", headers=auth("open-key"))
    assert_error(r, 429, "rate_limit_exceeded")
    assert int(r.headers["retry-after"]) >= 1
    assert (await chat(client, "eu-solver", headers=auth("eu-key"))).status_code == 200  # buckets are per key


def test_keys_file_stores_hashes_only(tmp_path: Path) -> None:
    path = write_keys(tmp_path)
    assert "sk-eu-key" not in path.read_text()
    ring = KeyRing.load(path)
    assert ring.identify("Bearer sk-eu-key").name == "eu-key"
    assert ring.identify("Bearer sk-eu-keyX") is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("keys:\n  - name: a\n    sha256: nothex\n")
    with pytest.raises(ConfigError, match="sha256"):
        KeyRing.load(bad)


# policy merge


async def test_request_can_narrow_but_not_widen(keyed) -> None:
    narrowed = await chat(keyed, "podium", headers=auth("open-key"), podium={"allowed_regions": ["eu"], "max_turns": 2})
    assert narrowed.status_code == 200
    turns = narrowed.json()["podium"]["turns"]
    assert len(turns) <= 2 and all(t["model"].startswith("eu-") for t in turns)
    widened = await chat(keyed, "podium-ultra", headers=auth("eu-key"), podium={"allowed_regions": ["us"]})
    assert "no model allowed" in assert_error(widened, 400, "no_model_for_role")["message"]
    assert_error(await chat(keyed, "podium", headers=auth("open-key"), podium={"max_turns": 9}), 400, "policy_widening")


async def test_request_exclusion_removes_a_passthrough_model(open_client) -> None:
    r = await chat(open_client, "eu-solver", podium={"exclude_models": ["eu-solver"]})
    assert_error(r, 400, "model_excluded")


# responses, usage, traces


async def test_tier_response_counts_orchestration_apart(open_client) -> None:
    r = await chat(open_client, "podium")
    body = r.json()
    assert r.status_code == 200 and body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "The answer is 391, since 17 x 23 = 391."
    usage, turns = body["usage"], body["podium"]["turns"]
    assert usage["prompt_tokens"] == sum(t["prompt_tokens"] for t in turns)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["orchestration_input_tokens"] > 0  # the prompted coordinator's own calls
    assert [t["role"] for t in turns] == ["thinker", "worker", "verifier"]
    assert r.headers["x-podium-trace-id"] == body["podium"]["trace_id"]


async def test_passthrough_falls_back_and_is_traced(open_client) -> None:
    r = await chat(open_client, "flaky")
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "391 (from the EU backup)."
    trace = (await open_client.get(f"/v1/traces/{r.headers['x-podium-trace-id']}")).json()
    assert trace["turns"][0]["model"] == "eu-solver-2" and trace["turns"][0]["fallback_from"] == "flaky"


async def test_trace_is_visible_only_to_its_key(keyed) -> None:
    r = await chat(keyed, "podium", headers=auth("eu-key"))
    trace_id = r.headers["x-podium-trace-id"]
    mine = await keyed.get(f"/v1/traces/{trace_id}", headers=auth("eu-key"))
    assert mine.status_code == 200 and mine.json()["id"] == trace_id and mine.json()["owner"] == "eu-key"
    assert_error(await keyed.get(f"/v1/traces/{trace_id}", headers=auth("open-key")), 404, "trace_not_found")
    assert_error(await keyed.get(f"/v1/traces/{trace_id}"), 401)


async def test_models_lists_tiers_and_allowed_models(keyed) -> None:
    data = (await keyed.get("/v1/models", headers=auth("eu-key"))).json()["data"]
    ids = [m["id"] for m in data]
    assert ids[:2] == ["podium", "podium-ultra"]
    assert "eu-solver" in ids and "us-solver" not in ids


async def test_metrics_count_requests_tokens_and_errors(open_client) -> None:
    await chat(open_client, "podium")
    await chat(open_client, "nope")
    text = (await open_client.get("/metrics")).text
    assert 'podium_requests_total{kind="tier",model="podium",status="200"} 1.0' in text
    assert 'podium_requests_total{kind="unknown",model="(unknown)",status="404"} 1.0' in text
    assert 'podium_tokens_total{model="podium",pool_model="eu-solver",type="completion"}' in text
    assert 'podium_cost_usd_total{model="podium",pool_model="eu-planner"}' in text


async def test_healthz(open_client) -> None:
    body = (await open_client.get("/healthz")).json()
    assert (
        body["status"] == "ok"
        and body["tiers"] == ["podium", "podium-ultra", "podium-conductor"]
        and body["auth"] is False
    )


# streaming: only the final answer


def sse_events(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ") and line != "data: [DONE]"]


async def test_streamed_tier_sends_only_the_final_answer(open_client) -> None:
    r = await chat(open_client, "podium-ultra", stream=True, stream_options={"include_usage": True})
    events = sse_events(r.text)
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in events if c["choices"])
    assert content == "US answer: 17 x 23 = 391."
    assert "PLAN" not in r.text.replace(": podium turn", "") and "ACCEPT" not in content
    assert events[-1]["choices"] == [] and events[-1]["usage"]["orchestration_input_tokens"] > 0
    assert r.text.rstrip().endswith("data: [DONE]")
    trace = (await open_client.get(f"/v1/traces/{r.headers['x-podium-trace-id']}")).json()
    assert trace["answer"] == content and [t["role"] for t in trace["turns"]] == ["thinker", "worker", "verifier"]


async def test_last_turn_worker_streams_live(open_client) -> None:
    r = await chat(open_client, "podium", stream=True, podium={"max_turns": 1})
    pieces = [
        c["choices"][0]["delta"]["content"]
        for c in sse_events(r.text)
        if c["choices"] and c["choices"][0]["delta"].get("content")
    ]
    assert "".join(pieces) == "The answer is 391, since 17 x 23 = 391."
    assert len(pieces) > 1  # the worker's own deltas, not one block


# tiers as data


def test_tiers_are_data(tmp_path: Path) -> None:
    tiers = load_tiers().by_name()
    assert (
        tiers["podium"].max_turns == 3 and tiers["podium-ultra"].max_turns == 8 and tiers["podium-ultra"].always_verify
    )
    pool = load_pool(POOL)
    assert tiers["podium-ultra"].pool_view(pool).default_for("worker") == "us-solver"
    assert tiers["podium"].pool_view(pool).default_for("worker") == "eu-solver"
    bad = tmp_path / "tiers.yaml"
    bad.write_text("tiers:\n  - name: x\n    max_turn: 3\n")
    with pytest.raises(ConfigError, match=r"tiers\.0\.max_turn: unknown key"):
        load_tiers(bad)


async def test_always_verify_ends_on_a_verifier(tmp_path: Path) -> None:
    pool = yaml.safe_load(Path(POOL).read_text())
    for m in pool["models"]:
        if m["name"] == "eu-checker":
            m["replies"] = ["REVISE: show the multiplication."]
    (tmp_path / "pool.yaml").write_text(yaml.safe_dump(pool))
    recipe = {"coordinator": "rules", "max_turns": 4, "roles": ["thinker", "worker", "verifier"]}
    (tmp_path / "tiers.yaml").write_text(
        yaml.safe_dump({"tiers": [{"name": "checked", "always_verify": True, **recipe}, {"name": "plain", **recipe}]})
    )
    app = create_app(str(tmp_path / "pool.yaml"), tiers=tmp_path / "tiers.yaml", traces=Traces(tmp_path / "podium.db"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        checked = (await chat(client, "checked")).json()["podium"]
        plain = (await chat(client, "plain")).json()["podium"]
    assert [t["role"] for t in plain["turns"]] == ["thinker", "worker", "verifier", "worker"]
    assert [t["role"] for t in checked["turns"]] == ["thinker", "worker", "verifier", "verifier"]
    assert checked["status"] == "max_turns"


async def test_pool_budget_caps_every_tier(tmp_path: Path) -> None:
    pool = yaml.safe_load(Path(POOL).read_text())
    pool["budget"] = {"max_cost_usd": 0.001}
    (tmp_path / "pool.yaml").write_text(yaml.safe_dump(pool))
    app = create_app(str(tmp_path / "pool.yaml"), traces=Traces(tmp_path / "podium.db"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        assert_error(await chat(client, "podium", podium={"max_cost_usd": 0.01}), 400, "policy_widening")
        assert (await chat(client, "podium", podium={"max_cost_usd": 0.0005})).status_code == 200
