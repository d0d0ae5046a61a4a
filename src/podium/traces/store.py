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

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError, UsageError  # noqa: F401 (UsageError: re-exported)
from ..scrub import REDACTED, clean_text, clean_value, dumps_scrubbed, scrub, scrub_value, secrets_pinned  # noqa: F401 (REDACTED, scrub: re-exported)
from ..types import RunResult, RunStatus, Turn
from .queries import Connection as Connection
from .queries import StoreQueries as StoreQueries
from .rows import _insert, _private_file
from .rows import digest as digest
from .rows import loads_column as loads_column
from .run_models import RUN_MODELS_MIGRATION, run_model_rows
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

    def _json(self, value: Any, *, private: bool = False) -> str:
        """``value`` scrubbed, then serialized (never the other way round: that can break the JSON).
        ``private`` texts (prompts) are stored as a digest in hash mode."""
        if not value and type(value) in (list, dict) and not private:  # most turns' attempts: nothing to scrub
            return "[]" if type(value) is list else "{}"
        if private and self.text_mode == "hash":
            return digest(json.dumps(clean_value(value), ensure_ascii=False))
        return dumps_scrubbed(value, sort_keys=isinstance(value, dict))

    def record(self, result: RunResult, *, source: str | None = None, owner: str | None = None) -> str:
        """Store ``result`` and its turns (replacing any earlier copy of the same run); returns its id."""
        return self.record_many([(result, source, owner)])[0]

    def record_many(self, items: list[tuple[RunResult, str | None, str | None]]) -> list[str]:
        """Store several ``(result, source, owner)`` runs in one transaction; returns their ids."""
        if not items:
            return []
        with secrets_pinned():  # the environment's secrets looked up once for the batch
            rows = {r.run_id: self._rows(r, source, owner) for r, source, owner in items}  # a run twice: the last copy
        run_rows = [run_row for run_row, _ in rows.values()]
        turn_rows = [t for _, turns in rows.values() for t in turns]
        sums = [s for run_row, turns in rows.values() if turns for s in run_model_rows(run_row, turns)]
        ids = [(run_id,) for run_id in rows]
        with self._write() as conn:  # one statement per table for the whole batch
            conn.executemany("DELETE FROM turns WHERE run_id = ?", ids)
            conn.executemany("DELETE FROM run_models WHERE run_id = ?", ids)
            conn.executemany(_insert_sql("runs", run_rows[0], replace=True), run_rows)
            if turn_rows:
                conn.executemany(_insert_sql("turns", turn_rows[0]), turn_rows)
                conn.executemany(_insert_sql("run_models", sums[0]), sums)
        return [r.run_id for r, _, _ in items]

    def _rows(
        self, result: RunResult, source: str | None, owner: str | None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        status = result.status.value
        if result.status == RunStatus.FAILED and result.reason.startswith("interrupted"):
            status = "interrupted"
        run_row = {
            "id": result.run_id,
            "started_at": result.started_at,
            "finished_at": result.started_at + result.latency_s,
            "query": self._text(result.query),
            "query_hash": digest(result.query),
            "pool": result.pool,
            "policy": self._json(result.policy),
            "coordinator": result.coordinator,
            "status": status,
            "reason": scrub(result.reason),
            "answer": self._text(result.answer),
            "prompt_tokens": sum(t.prompt_tokens for t in result.turns),
            "completion_tokens": sum(t.completion_tokens for t in result.turns),
            "total_tokens": result.total_tokens,
            "cost_usd": result.cost_usd,
            "orchestration_tokens": result.orchestration_prompt_tokens + result.orchestration_completion_tokens,
            "orchestration_cost_usd": result.orchestration_cost_usd,
            "latency_s": result.latency_s,
            "n_turns": len(result.turns),
            "source": source,
            "owner": owner,
            "text_mode": self.text_mode,
            "workflow": self._json(result.workflow, private=True) if result.workflow is not None else None,
        }
        return run_row, [self._turn_row(result.run_id, t) for t in result.turns]

    def _turn_row(self, run_id: str, t: Turn) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "turn": t.turn,
            "role": t.role.value,
            "model": t.model,
            "provider": t.provider,
            "region": t.region,
            "reason": scrub(t.reason),
            "prompt": self._json([m.model_dump() for m in t.messages], private=True),
            "response": self._text(t.output),
            "prompt_tokens": t.prompt_tokens,
            "completion_tokens": t.completion_tokens,
            "cost_usd": t.cost_usd,
            "latency_s": t.latency_s,
            "verdict": t.verdict.value if t.verdict else None,
            "diagnosis": self._text(t.diagnosis),
            "error": scrub(t.error),
            "retries": t.retries,
            "fallback_from": t.fallback_from,
            "attempts": self._json(t.attempts),
            "usage_estimated": int(t.usage_estimated),
            "step": t.step,
            "inputs": json.dumps(t.inputs) if t.inputs is not None else None,
            "depth": t.depth,
            "started_at": t.started_at,
            "ended_at": t.ended_at,
            "deployment": t.deployment,
        }

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


_SQL: dict[tuple[str, tuple[str, ...], bool], str] = {}


def _insert_sql(table: str, row: dict[str, Any], *, replace: bool = False) -> str:
    """:func:`~podium.traces.rows._insert`, built once per table and column list."""
    key = (table, tuple(row), replace)
    sql = _SQL.get(key)
    if sql is None:
        sql = _SQL[key] = _insert(table, row, replace=replace)
    return sql


def _background_handler(
    store: Store, source: str | None, owner: str | None, on_error: Callable[[Exception], None] | None, kind: str
) -> Callable[[Any], None]:
    from ..engine import RunFinished
    from .writer import open_writer

    writer = open_writer(store, kind, on_error=on_error, linger=0.02)  # nobody waits: larger batches

    def on_event(event: Any) -> None:
        if isinstance(event, RunFinished):
            writer.submit(event.result, source=source, owner=owner)

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
