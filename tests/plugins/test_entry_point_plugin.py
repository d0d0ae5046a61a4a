"""A third-party package adds a backend and a coordinator through entry points, with no edit to podium.

The package is written and installed (``pip install --no-deps --target``) into a temp dir by the test;
``podium ask`` then runs in a subprocess with that dir on ``PYTHONPATH`` and uses both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO

PLUGIN = '''
"""A tiny podium plugin: backend 'shout' (answers in capitals) and coordinator 'once-shout'."""

import time

from podium.backends import BackendOptions, BackendType
from podium.backends.base import make_completion
from podium.coordinators import CoordinatorType
from podium.types import Decision, Role, StreamDelta


class ShoutOptions(BackendOptions):
    prefix: str  # a key only this backend takes


class ShoutBackend:
    def __init__(self, spec, client):
        self.spec = spec
        self.prefix = spec.options.prefix

    async def complete(self, request):
        started = time.perf_counter()
        text = f"{self.prefix} " + request.messages[-1].content.rsplit("Task: ", 1)[-1].upper()
        return make_completion(self.spec, request, text, started)

    async def stream(self, request):
        completion = await self.complete(request)
        yield StreamDelta(text=completion.text)
        yield StreamDelta(completion=completion)

    async def check(self):
        return None if self.prefix else "empty prefix"

    async def aclose(self):
        return None


class OnceCoordinator:
    def __init__(self, arg):
        self.model = arg or None
        self.name = "once-shout" + (f":{arg}" if arg else "")

    async def decide(self, state):
        model = self.model or state.pool.default_for(Role.WORKER)
        return Decision(role=Role.WORKER, model=model, reason="the plugin's coordinator", stop_after=True)


BACKEND = BackendType("shout", ShoutBackend, ShoutOptions, description="capital letters")
COORDINATOR = CoordinatorType("once-shout", OnceCoordinator, "once-shout[:MODEL]", "one worker turn")
'''

PYPROJECT = """
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "podium-shout"
version = "0.1.0"

[project.entry-points."podium.backends"]
shout = "podium_shout:BACKEND"

[project.entry-points."podium.coordinators"]
once-shout = "podium_shout:COORDINATOR"

[tool.setuptools]
py-modules = ["podium_shout"]
"""

POOL = """
name: plugged
models:
  - name: loud
    backend: shout
    prefix: "SHOUT:"
    roles: [worker]
"""


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin package, built from source and installed into its own site dir."""
    src = tmp_path_factory.mktemp("podium_shout_src")
    (src / "podium_shout.py").write_text(textwrap.dedent(PLUGIN))
    (src / "pyproject.toml").write_text(PYPROJECT)
    site = tmp_path_factory.mktemp("site")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*cmd, "--target", str(site), str(src)], check=True, capture_output=True, timeout=300)
    assert (site / "podium_shout.py").exists()
    assert "podium.backends" in next(site.glob("podium_shout-*.dist-info")).joinpath("entry_points.txt").read_text()
    return site


def podium(site: Path | None, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    paths = ([str(site)] if site else []) + [str(REPO / "src"), str(REPO)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PODIUM_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "podium", *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_podium_ask_uses_the_plugins_backend_and_coordinator(
    plugin_site: Path, tmp_path: Path, podium_home: Path
) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text(POOL)
    proc = podium(
        plugin_site,
        "ask",
        "--json",
        "--pool",
        str(pool),
        "--coordinator",
        "once-shout",
        "hello there",
        home=podium_home,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["answer"] == "SHOUT: HELLO THERE"  # made by the plugin's backend from this question
    assert result["coordinator"] == "once-shout"
    assert [(t["role"], t["model"]) for t in result["turns"]] == [("worker", "loud")]


def test_the_plugins_backend_keys_are_checked_and_its_check_runs(
    plugin_site: Path, tmp_path: Path, podium_home: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(POOL.replace("prefix:", "prefx:"))
    proc = podium(plugin_site, "pool", "check", "--pool", str(bad), home=podium_home)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "models.0.prefx: unknown key (did you mean 'prefix'?)" in proc.stderr
    empty = tmp_path / "empty.yaml"
    empty.write_text(POOL.replace('"SHOUT:"', '""'))
    proc = podium(plugin_site, "pool", "check", "--pool", str(empty), home=podium_home)
    assert proc.returncode == 1 and "FAIL loud: empty prefix" in proc.stdout


def test_without_the_plugin_its_names_are_unknown_and_the_known_ones_listed(tmp_path: Path, podium_home: Path) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text(POOL)
    proc = podium(None, "ask", "--pool", str(pool), "hi", home=podium_home)
    assert proc.returncode == 2
    assert "models.0.backend: unknown backend 'shout'; known backends: openai, local, scripted, check" in proc.stderr
    proc = podium(
        None,
        "ask",
        "--pool",
        str(REPO / "tests/pools/scripted.yaml"),
        "--coordinator",
        "once-shout",
        "hi",
        home=podium_home,
    )
    assert proc.returncode == 2 and "unknown coordinator 'once-shout'" in proc.stderr and "fixed[:MODEL]" in proc.stderr
