"""Shared fixtures: temp podium home, repo paths, free ports, the fault-injecting upstream server."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pytest

# Headless Chromium (`browser`) for the viewer tests; real Redis and PostgreSQL servers for the shared-state
# and store tests.
pytest_plugins = ["headless_browser", "local_servers"]

if TYPE_CHECKING:
    from faults.server import FaultServer

REPO = Path(__file__).resolve().parent.parent
POOLS = Path(__file__).resolve().parent / "pools"
SHARED = REPO.parent / "shared"


@pytest.fixture(autouse=True)
def podium_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own PODIUM_HOME so nothing touches the user's real store."""
    home = tmp_path_factory.mktemp("podium_home")
    monkeypatch.setenv("PODIUM_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def fault_server() -> Iterator[FaultServer]:
    """An OpenAI-compatible server on 127.0.0.1 whose replies follow the fault named by each request's
    model (``ok``, ``hang``, ``http500``, ...; see tests/faults/server.py), one per test module."""
    from faults.server import FaultServer

    with FaultServer() as srv:
        yield srv


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Ran(NamedTuple):
    """What an in-process ``podium`` invocation printed, and its exit code."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    """Run ``podium ARGS`` in this process through the real entry point (faster than a subprocess)."""
    from podium.cli import main

    def run(*args: str) -> Ran:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out = capsys.readouterr()
        return Ran(code, out.out, out.err)

    return run


def default_sigint() -> None:
    """``preexec_fn`` for a child that the test stops with Ctrl-C (SIGINT): give it SIGINT as a user's
    shell does (default action, unblocked). A child inherits an ignored or blocked SIGINT from this
    process, and in a full run something in it (a library, not podium) leaves SIGINT so: the child
    then never sees the signal."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
