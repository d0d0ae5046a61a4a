"""`podium serve` as a real uvicorn process on 127.0.0.1, driven by the official openai client
(sync, async, streaming) with only base_url and api_key changed; the EU key is checked in the store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

openai = pytest.importorskip("openai", reason="openai is in the 'test' extra")
pytest.importorskip("uvicorn", reason="uvicorn is in the 'server' extra")

from podium.server.auth import hash_key  # noqa: E402
from podium.traces.store import Store  # noqa: E402
from podium_process import PodiumServer  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
POOL = REPO / "tests" / "pools" / "server.yaml"
ASK = [{"role": "user", "content": "What is 17 * 23?"}]
EU_ANSWER = "The answer is 391, since 17 x 23 = 391."
US_ANSWER = "US answer: 17 x 23 = 391."
KEYS = {"eu-key": {"allowed_regions": ["eu"]}, "open-key": {}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("serve_home")
    keys = home / "keys.yaml"
    keys.write_text(
        yaml.safe_dump({"keys": [{"name": n, "sha256": hash_key(f"sk-{n}"), "policy": p} for n, p in KEYS.items()]})
    )
    with PodiumServer(POOL, home, args=["--host", "127.0.0.1", "--keys", str(keys), "--log-level", "warning"]) as proc:
        yield {"url": proc.url, "home": home}


def client(server, key: str = "open-key") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server['url']}/v1", api_key=f"sk-{key}", max_retries=0)


def aclient(server, key: str = "open-key") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server['url']}/v1", api_key=f"sk-{key}", max_retries=0)


@pytest.mark.parametrize("tier, answer", [("podium", EU_ANSWER), ("podium-ultra", US_ANSWER)])
def test_sync_client_gets_answers(server, tier: str, answer: str) -> None:
    raw = client(server).chat.completions.with_raw_response.create(model=tier, messages=ASK)
    completion = raw.parse()
    assert completion.choices[0].message.content == answer
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens > 0
    assert completion.usage.model_extra["orchestration_input_tokens"] > 0
    trace_id = raw.headers["x-podium-trace-id"]
    trace = httpx.get(f"{server['url']}/v1/traces/{trace_id}", headers={"Authorization": "Bearer sk-open-key"}).json()
    assert trace["id"] == trace_id and trace["answer"] == answer


@pytest.mark.parametrize("tier, answer", [("podium", EU_ANSWER), ("podium-ultra", US_ANSWER)])
def test_sync_client_streams_only_the_answer(server, tier: str, answer: str) -> None:
    stream = client(server).chat.completions.create(
        model=tier, messages=ASK, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


@pytest.mark.parametrize("tier, answer", [("podium", EU_ANSWER), ("podium-ultra", US_ANSWER)])
async def test_async_client_plain_and_streaming(server, tier: str, answer: str) -> None:
    async with aclient(server) as ac:
        completion = await ac.chat.completions.create(model=tier, messages=ASK)
        assert completion.choices[0].message.content == answer
        stream = await ac.chat.completions.create(model=tier, messages=ASK, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == answer
        models = [m.id async for m in ac.models.list()]
        assert {"podium", "podium-ultra", "eu-solver"} <= set(models)


def test_passthrough_model_streams(server) -> None:
    stream = client(server).chat.completions.create(model="eu-solver", messages=ASK, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == EU_ANSWER


def test_client_errors_map_to_openai_exceptions(server) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server['url']}/v1", api_key="sk-wrong", max_retries=0).chat.completions.create(
            model="podium", messages=ASK
        )
    with pytest.raises(openai.NotFoundError, match="does not exist"):  # a key is not told what exists beyond its policy
        client(server, "eu-key").chat.completions.create(model="us-solver", messages=ASK)
    with pytest.raises(openai.NotFoundError):
        client(server).chat.completions.create(model="gpt-none", messages=ASK)
    with pytest.raises(openai.BadRequestError):
        client(server).chat.completions.create(model="podium", messages=ASK, max_tokens=10**8)


async def test_eu_key_never_reaches_a_non_eu_model(server) -> None:
    eu = client(server, "eu-key")
    # ultra prefers the strongest (priciest) allowed worker: for this key, the EU backup
    for tier, answer in (("podium", EU_ANSWER), ("podium-ultra", "391 (from the EU backup).")):
        assert eu.chat.completions.create(model=tier, messages=ASK).choices[0].message.content == answer
        assert (
            "".join(
                c.choices[0].delta.content or ""
                for c in eu.chat.completions.create(model=tier, messages=ASK, stream=True)
                if c.choices
            )
            == answer
        )
    eu.chat.completions.create(model="eu-solver", messages=ASK)
    with pytest.raises(openai.BadRequestError, match="role"):  # asking to widen to the US leaves no model
        eu.chat.completions.create(
            model="podium-ultra", messages=ASK, extra_body={"podium": {"allowed_regions": ["us"]}}
        )
    with pytest.raises(openai.NotFoundError):
        eu.chat.completions.create(model="us-checker", messages=ASK)
    client(server, "open-key").chat.completions.create(
        model="podium-ultra", messages=ASK
    )  # the open key does go to the US
    store = Store.open(server["home"] / "podium.db")
    eu_runs = [store.run(r["id"]) for r in store.runs(owner="eu-key", limit=None)]
    assert len(eu_runs) >= 5
    regions = {t["region"] for run in eu_runs for t in run["turns"]}
    assert regions == {"eu"}, regions
    open_regions = {t["region"] for r in store.runs(owner="open-key", limit=None) for t in store.run(r["id"])["turns"]}
    assert "us" in open_regions  # the check above can fail: other keys do reach US models


def test_serve_refuses_a_public_bind_without_keys(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "podium", "serve", "--host", "0.0.0.0", "--pool", str(POOL)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PODIUM_HOME": str(tmp_path)},
        timeout=60,
    )
    assert out.returncode == 2 and "without a keys file" in out.stderr


def test_new_key_prints_a_hash_entry(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "podium", "serve", "--new-key", "team-a"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert out.returncode == 0
    key = out.stdout.split("\n")[1].strip()
    assert (
        key.startswith("pk-")
        and f"sha256: {hash_key(key)}" in out.stdout
        and key not in out.stdout.split("Add this")[1]
    )


def test_without_keys_it_binds_loopback_and_says_so(tmp_path: Path) -> None:
    with PodiumServer(POOL, tmp_path, args=["--log-level", "warning"]) as proc:
        reply = openai.OpenAI(base_url=f"{proc.url}/v1", api_key="anything", max_retries=0).chat.completions.create(
            model="podium", messages=ASK
        )
        assert reply.choices[0].message.content == EU_ANSWER
        # keyless mode also serves the trace viewer, whose API lists the run just made
        runs = httpx.get(f"{proc.url}/ui/api/runs", timeout=10).json()
        assert any(r["answer"] == EU_ANSWER for r in (runs["runs"] if isinstance(runs, dict) else runs))
        assert "<html" in httpx.get(f"{proc.url}/ui/", timeout=10).text.lower()
    assert "no --keys file, so no authentication: binding 127.0.0.1 only" in proc.log_path.read_text()
