"""The trace viewer draws a workflow run as a swimlane timeline, in a real headless Chromium.

Seeds a store with a real ``topology:moa`` run (three proposers that sleep, so their lanes overlap)
and a conductor run with a nested ``self`` step, then checks the lanes' positions in the page. A
screenshot goes to ``$PODIUM_SWIMLANE_SCREENSHOT`` (else the test's temp dir);
``docs/img/conductor-swimlanes.png`` was made that way.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import POOLS
from podium import Engine, load_pool
from podium.backends import BackendSet
from podium.backends.scripted import ScriptedBackend
from podium.coordinators import get_coordinator
from podium.traces.store import Store
from store_seed import serving_viewer


def plan_reply(request) -> str:
    text = "\n".join(m.content for m in request.messages)
    steps = [
        {"id": "facts", "model": "alpha", "role": "worker", "instruction": "List the facts.", "access": ["query"]},
        {"id": "style", "model": "beta", "role": "worker", "instruction": "Draft the wording.", "access": ["query"]},
    ]
    if "- self:" in text:
        steps.append(
            {
                "id": "sub",
                "model": "self",
                "role": "worker",
                "instruction": "Solve the hard part.",
                "access": ["query", "facts"],
            }
        )
    last = ["facts", "style", *(["sub"] if "- self:" in text else [])]
    steps.append(
        {"id": "merge", "model": "judge", "role": "worker", "instruction": "Merge.", "access": ["query", *last]}
    )
    return json.dumps({"reason": "split facts and style", "steps": steps})


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store.open(tmp_path_factory.mktemp("swim") / "t.db")
    pool = load_pool(POOLS / "conductor.yaml")
    slow = {"alpha": 0.4, "beta": 0.3, "gamma": 0.5, "judge": 0.2}
    backends = {n: ScriptedBackend(pool.get(n), lambda r, n=n, s=s: f"!sleep {s}\n{n} answer") for n, s in slow.items()}
    backends["conductor"] = ScriptedBackend(pool.get("conductor"), plan_reply)

    async def runs() -> None:
        for name, query in (("topology:moa", "[moa] What is 17 * 23?"), ("conductor", "[conductor] Explain 17 * 23.")):
            planner = get_coordinator(name)
            planner.max_depth = 1
            engine = Engine(pool, planner, backends=BackendSet(overrides=dict(backends)), on_event=store.handler())
            await engine.run(query)

    asyncio.run(runs())
    return store


@pytest.fixture
def viewer_url(store: Store) -> Iterator[str]:
    with serving_viewer(store) as url:
        yield f"{url}/"


def lanes(driver) -> dict[str, tuple[float, float]]:
    from selenium.webdriver.common.by import By

    out = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "#timeline .turn"):
        bar = row.find_element(By.CSS_SELECTOR, ".bar")
        out[row.get_attribute("data-step")] = (bar.location["x"], bar.location["x"] + bar.size["width"])
    return out


def test_swimlanes_in_headless_chromium(browser, viewer_url: str, store: Store, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 15)
    browser.get(viewer_url)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr.run-row")) == 2)
    moa = next(r for r in store.runs() if r["coordinator"] == "topology:moa")
    browser.find_element(By.CSS_SELECTOR, f"tr.run-row[data-id='{moa['id']}']").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#timeline.swimlanes .turn")) == 4)
    spans = lanes(browser)
    assert set(spans) == {"p1", "p2", "p3", "aggregate"}
    proposers = [spans[p] for p in ("p1", "p2", "p3")]
    assert max(a for a, _ in proposers) < min(b for _, b in proposers)  # the parallel lanes overlap on screen
    assert spans["aggregate"][0] >= max(b for _, b in proposers) - 2  # the aggregator starts when the last input ends
    assert (
        "reads query, p1, p2, p3" in browser.find_element(By.CSS_SELECTOR, "#timeline .turn[data-step=aggregate]").text
    )
    assert "plan (depth 0, round 1): topology moa" in browser.find_element(By.ID, "detail").text

    conductor = next(r for r in store.runs() if r["coordinator"] == "conductor")
    browser.find_element(By.CSS_SELECTOR, f"tr.run-row[data-id='{conductor['id']}']").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#timeline .turn[data-step='sub/merge']"))
    spans = lanes(browser)
    assert {"facts", "style", "sub", "sub/facts", "sub/style", "sub/merge", "merge"} == set(spans)
    assert (
        spans["sub"][0] <= spans["sub/facts"][0] and spans["sub/merge"][1] <= spans["sub"][1] + 2
    )  # nested inside its step
    nested = browser.find_element(By.CSS_SELECTOR, "#timeline .turn[data-step='sub/facts'] .label")
    assert nested.value_of_css_property("padding-left") == "12px"
    browser.find_element(By.CSS_SELECTOR, "#timeline .turn[data-step=merge]").click()
    detail = wait.until(lambda d: d.find_element(By.ID, "turn-detail"))
    assert "step merge · depth 0 · reads query, facts, style, sub" in detail.text
    shot = Path(os.environ.get("PODIUM_SWIMLANE_SCREENSHOT") or tmp_path / "conductor-swimlanes.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(shot)) and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
