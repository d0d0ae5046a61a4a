"""The `podium-conductor` tier end to end: a real `podium serve` (uvicorn) on 127.0.0.1 driven by the
official openai client, plain and streamed; the conductor's plan runs as a parallel graph and only
the final step's output reaches the client. An EU-only key never reaches a US model."""

from __future__ import annotations

import os
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
POOLS = REPO / "tests" / "pools"
ASK = [{"role": "user", "content": "What is 17 * 23?"}]
FINAL = "The product 17 x 23 is 391: 17 x 20 = 340 plus 17 x 3 = 51."
KEYS = {"eu-key": {"allowed_regions": ["eu"]}, "open-key": {}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("conductor_home")
    keys = home / "keys.yaml"
    keys.write_text(
        yaml.safe_dump({"keys": [{"name": n, "sha256": hash_key(f"sk-{n}"), "policy": p} for n, p in KEYS.items()]})
    )
    path = os.pathsep.join(p for p in (str(POOLS), os.environ.get("PYTHONPATH", ""), str(REPO / "src")) if p)
    with PodiumServer(
        POOLS / "conductor_server.yaml",
        home,
        env={"PYTHONPATH": path},
        args=["--host", "127.0.0.1", "--keys", str(keys)],
    ) as proc:
        yield {"url": proc.url, "home": home}


def client(server, key: str = "open-key") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server['url']}/v1", api_key=f"sk-{key}", max_retries=0)


def test_conductor_tier_streams_only_the_final_step(server) -> None:
    stream = client(server).chat.completions.create(
        model="podium-conductor", messages=ASK, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == FINAL and len(pieces) > 1  # streamed in pieces, drafts never sent
    assert chunks[-1].usage is not None and chunks[-1].usage.model_extra["orchestration_input_tokens"] > 0
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish[-1].choices[0].finish_reason == "stop"
    info = finish[-1].model_extra["podium"]
    assert info["coordinator"] == "conductor" and info["status"] == "answered"
    steps = {t["step"]: t for t in info["turns"]}
    assert set(steps) == {"w1", "w2", "merge"} and {steps["w1"]["model"], steps["w2"]["model"]} == {
        "eu-writer",
        "us-writer",
    }
    w1, w2 = steps["w1"], steps["w2"]
    assert w1["started_at"] < w2["ended_at"] and w2["started_at"] < w1["ended_at"]  # the drafts ran in parallel
    assert steps["merge"]["inputs"] == ["query", "w1", "w2"]


def test_conductor_tier_plain_and_traced(server) -> None:
    raw = client(server).chat.completions.with_raw_response.create(model="podium-conductor", messages=ASK)
    assert raw.parse().choices[0].message.content == FINAL
    trace = httpx.get(
        f"{server['url']}/v1/traces/{raw.headers['x-podium-trace-id']}", headers={"Authorization": "Bearer sk-open-key"}
    ).json()
    assert [t["step"] for t in trace["turns"]][-1] == "merge"
    assert trace["workflow"]["plans"][0]["origin"] == "conductor plan by conductor"
    assert trace["workflow"]["max_depth"] == 2 and trace["workflow"]["max_parallel"] == 4


def test_eu_key_conductor_plans_only_eu_models(server) -> None:
    eu = client(server, "eu-key")
    text = "".join(
        c.choices[0].delta.content or ""
        for c in eu.chat.completions.create(model="podium-conductor", messages=ASK, stream=True)
        if c.choices
    )
    assert text == FINAL
    store = Store.open(server["home"] / "podium.db")
    runs = [store.run(r["id"]) for r in store.runs(owner="eu-key", limit=None)]
    assert runs and {t["region"] for run in runs for t in run["turns"]} == {"eu"}
    planned = {s["model"] for run in runs for p in run["workflow"]["plans"] for s in p["workflow"]["steps"]}
    assert planned == {"eu-writer"}  # the conductor was shown only the models the key allows
