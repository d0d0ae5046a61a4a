"""The trace store: every run and each of its turns, persisted in SQLite.

One database file (default ``$PODIUM_HOME/podium.db``, else the platform's user data dir) in WAL
mode, so readers never block the writer. Each operation opens its own short-lived connection and
writes inside ``BEGIN IMMEDIATE`` with a busy timeout, which keeps the store safe under concurrent
writers: threads, asyncio tasks and separate processes alike. The schema grows only by appending
named migrations to :data:`MIGRATIONS`; applied names are kept in ``schema_migrations``.

``PODIUM_TRACES_URL=postgresql://…`` stores traces in PostgreSQL instead (:mod:`.postgres`, the
``postgres`` extra): the same migrations, queries and privacy modes, for replicas that share one store.

Privacy: ``PODIUM_TRACES=hash`` (or ``Store(text_mode="hash")``) stores SHA-256 digests instead of
query, prompt, response and answer texts; ``PODIUM_TRACES=off`` stores nothing. Whatever the mode,
API keys and ``Authorization`` headers are scrubbed (:mod:`podium.scrub`) from every stored value
before it is serialized and written. New database files (and their WAL and shared-memory files)
are created readable by their owner only (0600).

Typical use::

    store = Store.open()
    engine.run(query, on_event=store.handler(source="cli"))   # stores the run at RunFinished
    store.runs(status="accepted")                            # list
    store.run("run_18c...")                                  # one run with its turns
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError, UsageError  # noqa: F401 (UsageError: re-exported)
from ..scrub import REDACTED, scrub, secrets_pinned  # noqa: F401 (REDACTED: re-exported)
from ..types import RunResult
from ._batch import Item, Rows
from .queries import Connection as Connection
from .queries import StoreQueries as StoreQueries
from .rows import _private_file
from .rows import digest as digest
from .rows import loads_column as loads_column
from .run_models import RUN_MODELS_MIGRATION
from .settings import TRACES_ENV as TRACES_ENV
from .settings import TRACES_URL_ENV as TRACES_URL_ENV
from .settings import default_path as default_path
from .settings import is_postgres_url as is_postgres_url
from .settings import parse_time as parse_time
from .settings import traces_setting as traces_setting
from .settings import traces_url as traces_url

TextMode = Literal["full", "hash"]
BUSY_TIMEOUT_MS = 30_000

# Append only: never edit or reorder an applied migration; add a new named one instead.
MIGRATIONS: list[tuple[str, list[str]]] = [
    (
        "0001_runs_and_turns",
        [
            """CREATE TABLE runs (
            id TEXT PRIMARY KEY, started_at REAL NOT NULL, finished_at REAL NOT NULL,
            query TEXT, query_hash TEXT NOT NULL, pool TEXT, policy TEXT, coordinator TEXT,
            status TEXT NOT NULL, reason TEXT, answer TEXT,
            prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0,
            total_tokens INTEGER NOT NULL DEFAULT 0, cost_usd REAL NOT NULL DEFAULT 0,
            orchestration_tokens INTEGER NOT NULL DEFAULT 0, orchestration_cost_usd REAL NOT NULL DEFAULT 0,
            latency_s REAL NOT NULL DEFAULT 0, n_turns INTEGER NOT NULL DEFAULT 0,
            source TEXT, owner TEXT, text_mode TEXT NOT NULL DEFAULT 'full')""",
            """CREATE TABLE turns (
            run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE, turn INTEGER NOT NULL,
            role TEXT NOT NULL, model TEXT NOT NULL, provider TEXT, region TEXT, reason TEXT,
            prompt TEXT, response TEXT, prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0, cost_usd REAL NOT NULL DEFAULT 0,
            latency_s REAL NOT NULL DEFAULT 0, verdict TEXT, diagnosis TEXT, error TEXT,
            retries INTEGER NOT NULL DEFAULT 0, fallback_from TEXT, attempts TEXT,
            usage_estimated INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (run_id, turn))""",
            "CREATE INDEX runs_started ON runs(started_at)",
            "CREATE INDEX runs_status ON runs(status)",
            "CREATE INDEX runs_query_hash ON runs(query_hash)",
            "CREATE INDEX turns_model ON turns(model)",
        ],
    ),
    # grounded grades (podium bench / train live): the final answer's score by the task's check
    (
        "0002_run_grades",
        [
            "ALTER TABLE runs ADD COLUMN grade_score REAL",
            "ALTER TABLE runs ADD COLUMN grade_source TEXT",
            "ALTER TABLE runs ADD COLUMN grade_detail TEXT",
            "ALTER TABLE runs ADD COLUMN task_id TEXT",
        ],
    ),
    (
        "0003_workflow_steps",
        [  # workflow runs: each turn's step id, inputs, depth and span; the run's plan(s)
            "ALTER TABLE turns ADD COLUMN step TEXT",
            "ALTER TABLE turns ADD COLUMN inputs TEXT",
            "ALTER TABLE turns ADD COLUMN depth INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE turns ADD COLUMN started_at REAL",
            "ALTER TABLE turns ADD COLUMN ended_at REAL",
            "ALTER TABLE runs ADD COLUMN workflow TEXT",
        ],
    ),
    ("0004_run_models", RUN_MODELS_MIGRATION),
    # which deployment of a model with ``deployments:`` answered (its name, never its base_url)
    ("0005_turn_deployment", ["ALTER TABLE turns ADD COLUMN deployment TEXT"]),
    # no query filters or sorts by query_hash: its index (random keys, a leaf page dirtied per stored run)
    # only cost every write
    ("0006_drop_runs_query_hash", ["DROP INDEX IF EXISTS runs_query_hash"]),
]


# --- the store -------------------------------------------------------------------------------


class Store(StoreQueries):
    """A SQLite trace store. Cheap to create; every method opens and closes its own connection.
    The read queries (runs, run, counts, stats rows) come from :class:`~podium.traces.queries.StoreQueries`."""

    # what a failed write raises (the PostgreSQL store adds psycopg's errors)
    errors: tuple[type[Exception], ...] = (sqlite3.Error, ConfigError)

    def __init__(self, path: str | os.PathLike[str] | None = None, *, text_mode: TextMode | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_path()
        self.location = str(self.path)
        self._local = threading.local()
        self._init_mode(text_mode)
        self._migrate()

    def _init_mode(self, text_mode: TextMode | None) -> None:
        setting = traces_setting()
        self.text_mode: TextMode = text_mode or ("hash" if setting == "hash" else "full")
        if self.text_mode not in ("full", "hash"):
            raise ConfigError(f"text_mode {self.text_mode!r} is not valid; use 'full' or 'hash'")

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, *, text_mode: TextMode | None = None) -> Store:
        """Open (creating and migrating if needed) the store at ``path``, else ``PODIUM_TRACES_URL``, else
        the default SQLite file. A ``postgresql://`` URL opens the PostgreSQL store."""
        where = path if path is not None else traces_url()
        if is_postgres_url(where):
            from .postgres import PgStore

            return PgStore(str(where), text_mode=text_mode)
        return cls(where, text_mode=text_mode)

    # connections

    def _connect(self) -> Connection:
        try:
            _private_file(self.path)
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"cannot open the trace store {self.path}: {exc}; set PODIUM_HOME to a writable directory"
            ) from None
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA secure_delete=ON")  # purged text is overwritten, not left in free pages
        return conn

    def _conn(self) -> Connection:
        """This thread's connection (opened once: closing the last one checkpoints the WAL, which is slow)."""
        cached = getattr(self._local, "conn", None)
        if cached is not None and cached[0] == os.getpid():
            reused: Connection = cached[1]
            return reused
        conn = self._connect()
        self._local.conn = (os.getpid(), conn)
        return conn

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        cached = getattr(self._local, "conn", None)
        self._local.conn = None
        if cached is not None and cached[0] == os.getpid():
            cached[1].close()

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        yield self._conn()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        conn = self._conn()
        assert isinstance(conn, sqlite3.Connection)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _migrate(self) -> None:
        conn = self._conn()
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode=WAL")
        with self._write() as conn:
            self._apply_migrations(conn)

    def _apply_migrations(self, conn: Connection) -> None:
        """Apply the shipped migrations not yet recorded in ``schema_migrations`` (inside a write)."""
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
        done = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
        for name, statements in MIGRATIONS:
            if name in done:
                continue
            for sql in statements:
                conn.execute(sql)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (name, time.time()))

    def migrations(self) -> list[str]:
        """Names of the applied migrations, in order."""
        with self._read() as conn:
            return [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY applied_at, name")]

    # writing

    def _text(self, value: str | None) -> str | None:
        if value is None:
            return None
        return digest(value) if self.text_mode == "hash" else scrub(value)

    def record(self, result: RunResult, *, source: str | None = None, owner: str | None = None) -> str:
        """Store ``result`` and its turns (replacing any earlier copy of the same run); returns its id."""
        return self.record_many([(result, source, owner)])[0]

    def record_many(self, items: Sequence[Item]) -> list[str]:
        """Store several ``(result, source, owner)`` runs in one transaction; returns their ids. A
        result may also be given in its plain form (:func:`podium.traces._batch.plain`)."""
        if not items:
            return []
        with secrets_pinned():  # the environment's secrets looked up once for the batch
            rows = Rows(items, self.text_mode)
        with self._write() as conn:
            rows.write(conn)
        return rows.ids

    def grade(
        self, run_id: str, *, score: float, source: str, task_id: str | None = None, detail: str | None = None
    ) -> bool:
        """Attach a grounded grade (e.g. ``check:python_tests``) to a stored run; False if the run is not stored."""
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE runs SET grade_score = ?, grade_source = ?, grade_detail = ?, task_id = ? WHERE id = ?",
                (float(score), source, self._text(detail), task_id, run_id),
            )
        return bool(cur.rowcount > 0)

    def handler(
        self,
        *,
        source: str | None = None,
        owner: str | None = None,
        on_error: Callable[[Exception], None] | None = None,
        background: bool | Literal["thread", "process"] = False,
    ) -> Callable[[Any], None]:
        """An engine event handler that stores each run when its ``RunFinished`` event arrives.

        Synchronous on purpose: it also runs while a cancelled run unwinds. A storage failure is
        passed to ``on_error`` (if given) instead of failing the run; without ``on_error`` it raises.
        ``background``: queue the run for a background writer instead (the handler's ``flush()`` waits
        for it; see :mod:`podium.traces.writer` for what a crash can lose): ``True`` or ``"thread"``, a
        :class:`~podium.traces.writer.TraceWriter`; ``"process"``, a
        :class:`~podium.traces.writer_process.ProcessTraceWriter` (for long jobs: the writes run on another core).
        """
        from ..engine import RunFinished

        if background:
            kind = "thread" if background is True else background
            return _background_handler(self, source, owner, on_error, kind)

        def on_event(event: Any) -> None:
            if not isinstance(event, RunFinished):
                return
            try:
                self.record(event.result, source=source, owner=owner)
            except self.errors as exc:
                if on_error is None:
                    raise
                on_error(exc)

        return on_event

    def purge(self, before: float | str) -> int:
        """Delete every run started before ``before`` (and its turns); returns how many were deleted.

        Deleted content is overwritten (``secure_delete``) and the WAL is checkpointed and truncated,
        so purged texts do not linger in the database files.
        """
        cutoff = parse_time(before, name="--before")
        with self._write() as conn:
            count: int = conn.execute("DELETE FROM runs WHERE started_at < ?", (cutoff,)).rowcount
        self._erase_deleted()
        return count

    def _erase_deleted(self) -> None:
        """Make deleted rows unreadable from the database files (SQLite: checkpoint and truncate the WAL)."""
        with self._read() as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _background_handler(
    store: Store, source: str | None, owner: str | None, on_error: Callable[[Exception], None] | None, kind: str
) -> Callable[[Any], None]:
    from ..engine import RunFinished
    from .writer import open_writer

    writer = open_writer(store, kind, on_error=on_error, linger=0.02)  # nobody waits: larger batches

    def on_event(event: Any) -> None:
        if isinstance(event, RunFinished):
            writer.enqueue(event.result, source=source, owner=owner)

    on_event.flush = writer.flush  # type: ignore[attr-defined]
    on_event.close = writer.close  # type: ignore[attr-defined]
    on_event.writer = writer  # type: ignore[attr-defined]
    return on_event


def recorder(
    source: str,
    *,
    owner: str | None = None,
    path: str | os.PathLike[str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> Callable[[Any], None] | None:
    """The event handler that stores runs as ``PODIUM_TRACES`` says (None when it is ``off``).

    Used by the CLI, server and evaluation. A store that cannot be opened or written is reported
    through ``warn`` (default: raise) and never fails the run itself.
    """

    def report(exc: Exception) -> None:
        if warn is None:
            raise exc
        warn(f"trace not stored: {exc}")

    try:
        if traces_setting() == "off":
            return None
        return Store.open(path).handler(source=source, owner=owner, on_error=report)
    except (sqlite3.Error, ConfigError) as exc:  # the PostgreSQL store reports a failed open as ConfigError
        report(exc)
        return None
