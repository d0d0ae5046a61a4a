"""Real Redis and PostgreSQL servers (and a Ray head) on 127.0.0.1 and free ports, for the shared-state,
store and Ray tests.

Both come from Debian packages that ``make test`` installs (``make services``). A missing binary
fails the test with the install hint: these tests never skip. PostgreSQL refuses to run as root,
so as root the cluster is created and run as the ``postgres`` user (created by the package).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


HINT = "install it with `make services` (Debian: apt-get install redis-server postgresql)"


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        pytest.fail(f"{name} not found: {HINT}", pytrace=False)
    return found


class RedisServer:
    """``redis-server`` on a free port, no persistence; ``stop``/``start`` keep the port."""

    def __init__(self) -> None:
        self.binary = _binary("redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, self.proc, "redis-server")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def keys(self) -> int:
        """How many keys the server holds now."""
        import redis

        return int(redis.Redis.from_url(self.url).dbsize())

    def flush(self) -> None:
        import redis

        redis.Redis.from_url(self.url).flushall()


class PostgresServer:
    """A throwaway PostgreSQL cluster (initdb in a temp dir, trust auth on 127.0.0.1 only)."""

    def __init__(self) -> None:
        self.initdb, self.pg_ctl = _binary("initdb"), _binary("pg_ctl")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="podium-pg-"))
        self.data = self.dir / "data"
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(self.dir, self.user)
        self._run([self.initdb, "-D", str(self.data), "-U", "podium", "--auth=trust", "-E", "UTF8", "--locale=C"])
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off -c full_page_writes=off"
        self._run([self.pg_ctl, "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start"])
        self.url = f"postgresql://podium@127.0.0.1:{self.port}/postgres"

    def _run(self, args: list[str]) -> None:
        if self.user:
            args = ["runuser", "-u", self.user, "--", *args]
        done = subprocess.run(args, capture_output=True, text=True, cwd=self.dir)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(args)} failed: {done.stderr.strip()[-400:]}", pytrace=False)

    def restart(self) -> None:
        """Stop the server (dropping every connection) and start it again on the same port."""
        self._run([self.pg_ctl, "-D", str(self.data), "-m", "fast", "-l", str(self.dir / "log"), "-w", "restart"])

    def fresh_schema(self) -> str:
        """A URL whose connections use a new, empty schema: one store per test, one server per session."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return f"{self.url}?options=-csearch_path%3D{name}"

    def fresh_database(self) -> str:
        """A URL of a new, empty database (its data files hold nothing but what the test writes)."""
        import psycopg

        name = "d_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + "/" + name

    def database_bytes(self, url: str) -> bytes:
        """Every byte of the data files of the database at ``url``, after a checkpoint flushed them."""
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
            row = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()
        assert row is not None
        folder = self.data / "base" / str(row[0])
        return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())

    def stop(self) -> None:
        subprocess.run(
            (["runuser", "-u", self.user, "--"] if self.user else [])
            + [self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


def _wait_port(port: int, proc: subprocess.Popen[bytes], name: str, timeout: float = 20.0) -> None:

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{name} exited at start (code {proc.returncode})", pytrace=False)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"{name} did not listen on 127.0.0.1:{port} within {timeout}s", pytrace=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


class RayHead:
    """``ray start --head --block`` in its own process group on 127.0.0.1 (``address``: HOST:PORT)."""

    def __init__(self, temp: Path) -> None:
        ray_cli = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
        if not Path(ray_cli).exists():
            pytest.fail(
                "ray not found: install the ray extra (pip install 'podium[ray]'; make setup does)", pytrace=False
            )
        self.port, self.log_path = free_port(), temp / "head.log"
        self.address = f"127.0.0.1:{self.port}"
        self._log = self.log_path.open("w")
        args = [ray_cli, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={self.port}"]
        args += ["--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"]
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def ready(self, timeout: float = 180.0) -> bool:
        """Wait until the head says it started (its raylet registered, not just its port open); False
        if it gave up (on a loaded machine Ray's own 30 s startup limit can pass)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if "Ray runtime started" in self.log_path.read_text(errors="replace"):
                return True
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        """Stop the head and what it started: its process group only."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                continue
            if sig == signal.SIGTERM:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers of the group
                break
        self._log.close()


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Ray head for the whole test session (Ray is slow to start on a small machine); yields
    HOST:PORT. Ray gives its raylet 30 s to register, which a loaded machine can miss: a start that
    times out is tried again (five times in all)."""
    for attempt in range(5):
        head = RayHead(tmp_path_factory.mktemp("ray"))
        if head.ready():
            break
        head.stop()
    else:
        pytest.fail(f"the Ray head did not start:\n{head.log_path.read_text()[-2000:]}", pytrace=False)
    try:
        yield head.address
    finally:
        head.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's trace store lives: a SQLite file, or a fresh schema on the session's PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "t.db")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.fresh_schema()


@pytest.fixture(params=["sqlite", "postgres"])
def store_database(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, PostgresServer | None]:
    """A store location with files of its own (a SQLite file, or a new PostgreSQL database) and the
    server holding it (None for SQLite), for tests that read the bytes on disk."""
    if request.param == "sqlite":
        return str(tmp_path / "t.db"), None
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.fresh_database(), server
