"""The trace viewer in a real headless Chromium (Debian ``chromium`` + ``chromium-driver``, via selenium).

Seeds a store with real engine runs on the scripted backend, serves it on 127.0.0.1, and clicks
through: the runs list, a run's timeline, a turn's prompt and response, the filters and the
per-model stats. A screenshot goes to ``$PODIUM_VIEWER_SCREENSHOT`` (else the test's temp dir);
``docs/img/trace-viewer.png`` was made that way.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from podium.engine import Engine
from podium.pool import parse_pool
from podium.traces.store import Store
from podium.types import Budget
from store_seed import questions, seed, serving_viewer

XSS = "[code] <img src=x onerror=\"document.title='pwned'\"> escape me"
BROKEN_POOL = """
name: broken
models:
  - name: flaky-us
    backend: scripted
    replies: ["!error upstream said no"]
    region: us
    max_retries: 0
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store.open(tmp_path_factory.mktemp("browser") / "t.db")
    seed(store, [*questions(2), XSS], slow=True)

    async def failed_run() -> None:
        engine = Engine(parse_pool(BROKEN_POOL, "broken"), "rules", on_event=store.handler())
        await engine.run("[math] a question nobody can answer", budget=Budget(max_turns=3))
        await engine.aclose()

    asyncio.run(failed_run())
    return store


@pytest.fixture
def viewer_url(store: Store) -> Iterator[str]:
    with serving_viewer(store) as url:
        yield f"{url}/"


def test_viewer_in_headless_chromium(browser, viewer_url: str, store: Store, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 15)
    browser.get(viewer_url)
    rows = wait.until(lambda d: (r := d.find_elements(By.CSS_SELECTOR, "tr.run-row")) and len(r) == 7 and r)
    assert "runs 1–7 of 7" in browser.find_element(By.ID, "runs-count").text
    statuses = sorted(r.find_element(By.CSS_SELECTOR, ".status").text for r in rows)
    assert statuses == ["accepted"] * 3 + ["failed"] + ["max_turns"] * 3
    # stored text is shown as text, never run as HTML
    assert any(XSS[:40] in r.text for r in rows)
    assert browser.find_elements(By.CSS_SELECTOR, "#runs img") == [] and browser.title == "podium traces"

    target = next(r for r in store.runs(status="accepted", model="code-us"))
    browser.find_element(By.CSS_SELECTOR, f"tr.run-row[data-id='{target['id']}']").click()
    turns = wait.until(lambda d: (t := d.find_elements(By.CSS_SELECTOR, "#timeline .turn")) and len(t) == 3 and t)
    assert [t.find_element(By.CSS_SELECTOR, ".label").text for t in turns] == [
        "1. thinker · planner",
        "2. worker · code-us",
        "3. verifier · judge",
    ]
    bars = [t.find_element(By.CSS_SELECTOR, ".bar") for t in turns]
    assert [b.get_attribute("class") for b in bars] == ["bar thinker", "bar worker", "bar verifier"]
    widths = [b.size["width"] for b in bars]
    assert widths[1] > widths[0] and widths[1] > widths[2]  # the worker slept longest
    assert "ACCEPT" in turns[2].text and "tok" in turns[1].text

    turns[1].click()
    response = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#turn-detail pre.response"))
    assert response.text == "RIGHT: def f(): pass"
    prompts = browser.find_elements(By.CSS_SELECTOR, "#turn-detail .msg pre")
    assert prompts and target["query"] in prompts[-1].text
    shot = Path(os.environ.get("PODIUM_VIEWER_SCREENSHOT") or tmp_path / "trace-viewer.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert (
        browser.save_screenshot(str(shot))
        and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        and shot.stat().st_size > 20_000
    )

    Select(browser.find_element(By.NAME, "status")).select_by_visible_text("failed")
    browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr.run-row")) == 1)
    assert "a question nobody can answer" in browser.find_element(By.CSS_SELECTOR, "tr.run-row").text

    browser.find_element(By.CSS_SELECTOR, "nav .tab[data-tab=stats]").click()
    stats = wait.until(lambda d: (s := d.find_elements(By.CSS_SELECTOR, "tr.stat-row")) and len(s) == 5 and s)
    by_model = {s.get_attribute("data-model"): s.text for s in stats}
    assert sorted(by_model) == ["code-us", "flaky-us", "judge", "math-eu", "planner"]
    assert "100%" in by_model["flaky-us"]  # its failure rate
