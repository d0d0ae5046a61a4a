"""The trace viewer's HTTP side: the stdlib server (``podium ui``) and the mountable ASGI app."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from podium.traces.store import Store
from podium.traces.viewer import asgi_app
from store_seed import questions, seed, serving_viewer

XSS = "[math] <img src=x onerror=alert(1)> what is it?"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def seeded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Store:
    if request.param == "sqlite":
        where = str(tmp_path_factory.mktemp("viewer") / "t.db")
    else:
        where = request.getfixturevalue("postgres_server").fresh_schema()
    store = Store.open(where)
    seed(store, [*questions(2), XSS], workers=("math-eu",))
    return store


@pytest.fixture
def base_url(seeded: Store) -> Iterator[str]:
    with serving_viewer(seeded) as url:
        yield url


def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_page_and_static_files(base_url: str) -> None:
    status, headers, body = get(base_url + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and b"static/viewer.js" in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    status, headers, body = get(base_url + "/static/viewer.js")
    assert status == 200 and "javascript" in headers["Content-Type"] and b"textContent" in body
    assert get(base_url + "/static/../store.py")[0] == 404
    assert get(base_url + "/static/viewer.py")[0] == 404


def test_json_api(base_url: str, seeded: Store) -> None:
    status, _, body = get(base_url + "/api/runs")
    data = json.loads(body)
    assert status == 200 and data["total"] == 3 and len(data["runs"]) == 3
    assert XSS in [r["query"] for r in data["runs"]]  # stored and served verbatim, as JSON
    assert json.loads(get(base_url + "/api/runs?status=accepted&limit=1")[2])["total"] == 2
    assert json.loads(get(base_url + "/api/runs?q=onerror")[2])["total"] == 1
    run_id = data["runs"][0]["id"]
    run = json.loads(get(base_url + f"/api/runs/{run_id}")[2])
    assert [t["role"] for t in run["turns"]] == ["thinker", "worker", "verifier"]
    assert run["turns"][1]["messages"][0]["role"] == "user" and run["turns"][1]["response"]
    stats = json.loads(get(base_url + "/api/stats")[2])["models"]
    assert {s["model"]: s["calls"] for s in stats} == {"judge": 3, "math-eu": 3, "planner": 3}
    assert json.loads(get(base_url + "/api/models")[2])["models"] == ["judge", "math-eu", "planner"]


@pytest.mark.parametrize(
    "path, code",
    [
        ("/api/runs/run_missing", 404),
        ("/api/runs?limit=abc", 400),
        ("/api/runs?limit=100000", 400),
        ("/api/runs?since=someday", 400),
        ("/nowhere", 404),
    ],
)
def test_bad_requests_get_json_errors(base_url: str, path: str, code: int) -> None:
    status, headers, body = get(base_url + path)
    assert status == code and headers["Content-Type"] == "application/json" and json.loads(body)["error"]


def test_only_get(base_url: str) -> None:
    assert get(base_url + "/api/runs", method="POST")[0] == 405


async def test_asgi_app_mounted_under_a_prefix(seeded: Store) -> None:
    app = asgi_app(seeded)
    transport = httpx.ASGITransport(app=app, root_path="/ui")
    async with httpx.AsyncClient(transport=transport, base_url="http://viewer") as client:
        page = await client.get("/ui/")
        assert page.status_code == 200 and "podium" in page.text
        runs = (await client.get("/ui/api/runs", params={"status": "accepted"})).json()
        assert runs["total"] == 2
        one = await client.get(f"/ui/api/runs/{runs['runs'][0]['id']}")
        assert one.status_code == 200 and len(one.json()["turns"]) == 3
        redirect = await client.get("/ui")
        assert redirect.status_code == 307 and redirect.headers["location"] == "/ui/"
        assert (await client.get("/ui/api/runs/nope")).status_code == 404


async def test_asgi_app_at_the_root(seeded: Store) -> None:
    transport = httpx.ASGITransport(app=asgi_app(seeded))
    async with httpx.AsyncClient(transport=transport, base_url="http://viewer") as client:
        assert (await client.get("/api/stats")).json()["models"]
        assert (await client.get("/static/viewer.css")).headers["content-type"].startswith("text/css")


def test_podium_ui_command(podium_home: Path) -> None:
    """``podium ui`` as a user runs it: serves the default store, refuses a busy port cleanly, stops on Ctrl-C."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import default_sigint, free_port

    seed(Store.open(), questions(1), workers=("math-eu",))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "podium", "ui", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
        preexec_fn=default_sigint,
    )
    try:
        deadline, body = time.monotonic() + 30, None
        while body is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                body = json.loads(get(f"http://127.0.0.1:{port}/api/runs")[2])
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        assert body is not None and body["total"] == 1, proc.stderr.read() if proc.poll() is not None else ""
        busy = subprocess.run(
            [sys.executable, "-m", "podium", "ui", "--port", str(port)], capture_output=True, text=True, timeout=30
        )
        assert busy.returncode == 2 and "pick another --port" in busy.stderr and "Traceback" not in busy.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 130 and "Traceback" not in err and f"127.0.0.1:{port}" in err
