"""Debian's headless Chromium for the browser tests: a ``browser`` fixture that fails (never skips)
with the install line when Chromium, chromedriver or selenium is missing."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "chromium"
CHROMEDRIVER = "chromedriver"
INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"


def find(program: str) -> str | None:
    """``/usr/bin/PROGRAM`` (Debian's package), else PROGRAM on the PATH."""
    default = Path("/usr/bin") / program
    return str(default) if default.exists() else shutil.which(program)


def require_browser() -> tuple[str, str]:
    """Chromium's and chromedriver's paths; fail (not skip) with the install line when one is missing."""
    found = {program: find(program) for program in (CHROMIUM, CHROMEDRIVER)}
    missing = [program for program, path in found.items() if path is None]
    if missing:
        pytest.fail(f"the headless browser test needs {' and '.join(missing)}; install with: {INSTALL}", pytrace=False)
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail("the browser test needs selenium; install it with: pip install -e '.[test]'", pytrace=False)
    return found[CHROMIUM], found[CHROMEDRIVER]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    chromium, chromedriver = require_browser()
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1440,900",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
