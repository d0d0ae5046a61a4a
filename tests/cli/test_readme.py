"""Every command of the README, run as written: the test fails when the README and the program disagree.

It parses whatever README.md says: each line of each fenced ```bash block, in order, in one scratch
folder and one PODIUM_HOME; each ```python block; and the keys of the ```yaml pool reference. What is
substituted, and only that:

- A pool that would send requests over the network (a shipped remote pool, or a pool file with a
  non-127.0.0.1 endpoint) becomes ``tests/pools/readme-standin.yaml``, a scripted pool with the
  same model names and regions, for commands that send requests (``ask``, ``serve``, ``pool check``,
  ``pool status --probe``). ``podium models --pool openrouter`` and the like run unchanged.
- The embedded pool (the default) becomes the same stand-in, since a 135M model per README line
  would take minutes; ``PODIUM_README_EMBEDDED=1`` runs it for real (``make demo`` does too).
- ``…`` (a placeholder question) becomes a real question.
- ``make TARGET`` runs as ``make -n TARGET`` (a dry run: the target exists and its recipe expands);
  running ``make test`` inside the test suite would recurse.
- ``pip install 'podium[EXTRA]'`` checks that EXTRA is an extra of pyproject.toml.
- Long-running servers (``serve``, ``ui``) must start and print their address; they are then stopped.

Exit codes: 0, except ``traces audit`` which exits 1 when it finds runs outside the regions (as
documented). No traceback anywhere.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import POOLS, REPO

README = REPO / "README.md"
STANDIN = str(POOLS / "readme-standin.yaml")
OFFLINE_POOLS = {"replay-example"}
SENDING = {("ask",), ("serve",), ("pool", "check")}
QUESTION = "What is 42 * 2?"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README.read_text(), re.M | re.S)


def bash_commands() -> list[str]:
    lines: list[str] = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                lines.append(line.strip())
    return lines


def is_network_pool(ref: str, cwd: Path) -> bool:
    """Whether running pool ``ref`` would contact anything but 127.0.0.1."""
    if ref == "embedded":
        return os.environ.get("PODIUM_README_EMBEDDED") != "1"
    if ref in OFFLINE_POOLS:
        return False
    path = cwd / ref
    text = path.read_text() if path.is_file() else (REPO / "src" / "podium" / "pools" / f"{ref}.yaml").read_text()
    urls = [m.get("base_url") or "" for m in yaml.safe_load(text)["models"] if m.get("backend") == "openai"]
    return any(not url.startswith("http://127.0.0.1") for url in urls)


def substitute(argv: list[str], cwd: Path) -> list[str]:
    """The README command with only what must change changed (see the module docstring)."""
    argv = [QUESTION if a in ("…", "...") else a for a in argv]
    words = [a for a in argv if not a.startswith("-")]
    sends = (
        tuple(words[:1]) in SENDING
        or tuple(words[:2]) in SENDING
        or (words[:2] == ["pool", "status"] and "--probe" in argv)
    )
    if not sends:
        return argv
    if "--pool" in argv:
        i = argv.index("--pool") + 1
        if is_network_pool(argv[i], cwd):
            argv[i] = STANDIN
    elif is_network_pool(os.environ.get("PODIUM_POOL", "embedded"), cwd):
        argv = [*argv[:1], "--pool", STANDIN, *argv[1:]]
    return argv


def run_line(line: str, cwd: Path, env: dict[str, str]) -> None:
    stdin = None
    if "|" in line:  # `echo "question" | podium ...`
        left, line = (part.strip() for part in line.split("|", 1))
        assert left.startswith("echo "), f"README pipes into podium from something other than echo: {left}"
        stdin = shlex.split(left)[1] + "\n"
    argv = shlex.split(line, comments=True)
    program, args = argv[0], argv[1:]
    if program == "make":
        proc = subprocess.run(["make", "-n", *args], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"`{line}`: {proc.stderr}"
        return
    if program in ("pip", "pip3"):
        extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        for spec in args:
            for extra in re.findall(r"podium\[([\w,]+)\]", spec):
                assert set(extra.split(",")) <= set(extras), f"`{line}`: no such extra in pyproject.toml"
        return
    if program == "cp":
        subprocess.run(argv, cwd=cwd, check=True)
        return
    assert program in ("podium", ".venv/bin/podium"), f"README runs an unknown program: {line}"
    command = [sys.executable, "-m", "podium", *substitute(args, cwd)]
    if args and args[0] in ("serve", "ui"):
        return run_server(command, cwd, env, line)
    proc = subprocess.run(
        command,
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    allowed = {0, 1} if args[:2] == ["traces", "audit"] else {0}
    assert proc.returncode in allowed, f"`{line}` (ran {command[3:]}) exited {proc.returncode}: {proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr


def run_server(command: list[str], cwd: Path, env: dict[str, str], line: str) -> None:
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, seen = time.monotonic() + 60, ""
        while time.monotonic() < deadline and "http://" not in seen and proc.poll() is None:
            seen += proc.stdout.readline()  # type: ignore[union-attr]
        assert "http://" in seen, f"`{line}` did not start: {seen[-2000:]}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """One folder (with the repo's examples/) and one PODIUM_HOME for the whole README, in order."""
    cwd = tmp_path_factory.mktemp("readme")
    shutil.copytree(REPO / "examples", cwd / "examples")
    env = {**os.environ, "PODIUM_HOME": str(cwd / "home"), "PYTHONPATH": str(REPO / "src")}
    for var in ("OPENROUTER_API_KEY", "MISTRAL_API_KEY", "SCW_SECRET_KEY", "PODIUM_POOL"):
        env.pop(var, None)
    return cwd, env


def test_readme_has_commands() -> None:
    commands = bash_commands()
    assert len(commands) >= 8 and any(c.startswith("podium ask") for c in commands)


@pytest.mark.parametrize("line", bash_commands())
def test_readme_bash_command(line: str, scratch: tuple[Path, dict[str, str]]) -> None:
    run_line(line, *scratch)


@pytest.mark.parametrize("code", blocks("python"))
def test_readme_python_block(code: str, scratch: tuple[Path, dict[str, str]]) -> None:
    cwd, env = scratch
    if os.environ.get("PODIUM_README_EMBEDDED") != "1":
        code = code.replace('pool="embedded"', f"pool={STANDIN!r}")
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr


def test_readme_pool_reference_names_only_real_keys() -> None:
    from podium.pool import ModelSpec, PoolConfig, RoleDefaults

    (reference,) = [b for b in blocks("yaml") if "models:" in b]
    data = yaml.safe_load(reference)
    assert set(data) <= set(PoolConfig.model_fields), set(data) - set(PoolConfig.model_fields)
    for model in data["models"]:
        assert set(model) <= set(ModelSpec.model_fields), set(model) - set(ModelSpec.model_fields)
    assert set(data["defaults"]) <= set(RoleDefaults.model_fields)
    listed = {key for model in data["models"] for key in model}
    written = {name for name, field in ModelSpec.model_fields.items() if not field.exclude}  # not `options`
    assert written <= listed, f"missing from the README pool reference: {written - listed}"
