"""The trace store on PostgreSQL (psycopg 3, the ``postgres`` extra), for replicas that share traces.

:class:`PgStore` is :class:`~podium.traces.store.Store` with another connection: the same named
migrations, queries, privacy modes and scrubbing. The store's SQL is written once, in the SQLite
dialect; :func:`translate` rewrites the few spellings that differ (placeholders, ``INSERT OR
REPLACE``, ``group_concat``, ``REAL`` columns, case-insensitive ``LIKE``), so a query added to the
store works on both. Chosen by ``PODIUM_TRACES_URL=postgresql://USER@HOST/DB`` (or a URL passed to
``Store.open``). Migrations run under an advisory lock, so replicas starting together apply each
one once.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError, missing_extra
from .store import Connection, Store, TextMode

MIGRATION_LOCK = 0x706F6469  # pg_advisory_xact_lock key: "podi"
PRIMARY_KEYS = {"runs": "id", "turns": "run_id, turn", "schema_migrations": "name"}


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise missing_extra("psycopg", "postgres") from None
    return psycopg


def redact(url: str) -> str:
    """``url`` without its password (for messages and ``store.location``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc[-1]}"))


# --- SQL dialect -------------------------------------------------------------------------------


def _upsert(match: re.Match[str]) -> str:
    table, cols, values = match.group(1), match.group(2), match.group(3)
    key = PRIMARY_KEYS[table]
    keys = {k.strip() for k in key.split(",")}
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in (c.strip() for c in cols.split(",")) if c not in keys)
    return f"INSERT INTO {table} ({cols}) VALUES ({values}) ON CONFLICT ({key}) DO UPDATE SET {updates}"


@lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """``sql`` (SQLite dialect, ``?`` or ``:name`` parameters) in PostgreSQL's dialect for psycopg."""
    out = sql.replace("%", "%%")
    out = re.sub(r"INSERT OR REPLACE INTO (\w+) \(([^)]*)\) VALUES \(([^)]*)\)", _upsert, out)
    out = re.sub(r"group_concat\(([^()]*)\)", r"string_agg(\1, ',')", out, flags=re.IGNORECASE)
    out = re.sub(r"\bLIKE\b", "ILIKE", out)  # SQLite's LIKE ignores ASCII case
    if re.match(r"\s*(CREATE|ALTER)\s+TABLE", out, flags=re.IGNORECASE):
        out = re.sub(r"\bREAL\b", "DOUBLE PRECISION", out)  # PostgreSQL's REAL is 4 bytes
    out = re.sub(r"(?<![:\w]):([A-Za-z_]\w*)", r"%(\1)s", out)
    return out.replace("?", "%s")


def _clean(value: Any) -> Any:
    # PostgreSQL text cannot hold NUL characters; SQLite can. Keep the rest of the text.
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def _params(params: Any) -> Any:
    if isinstance(params, Mapping):
        return {k: _clean(v) for k, v in params.items()}
    if isinstance(params, Sequence) and not isinstance(params, (str, bytes)):
        return [_clean(v) for v in params]
    return params


class Row(dict[str, Any]):
    """A result row read both ways, as sqlite3.Row is: ``row["name"]`` and ``row[0]``."""

    def __getitem__(self, key: str | int) -> Any:
        if isinstance(key, int):
            return list(self.values())[key]
        return super().__getitem__(key)


def _row_factory(cursor: Any) -> Any:
    names = [c.name for c in cursor.description or []]

    def make(values: Sequence[Any]) -> Row:
        return Row(zip(names, values))

    return make


class PgConnection:
    """A psycopg connection that speaks the store's SQL (see :func:`translate`)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, sql: str, parameters: Any = None, /) -> Any:
        return self.raw.execute(translate(sql), _params(parameters) if parameters else None)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any], /) -> None:
        with self.raw.cursor() as cursor:
            cursor.executemany(translate(sql), [_params(p) for p in seq_of_parameters])

    def close(self) -> None:
        self.raw.close()


def _numeric_loader(psycopg: Any) -> type:
    """Load NUMERIC (what ``sum`` of integers returns) as int when whole, else float: never Decimal."""

    class NumericLoader(psycopg.adapt.Loader):  # type: ignore[misc]
        def load(self, data: bytes) -> int | float:
            text = bytes(data).decode()
            return int(text) if text.lstrip("-").isdigit() else float(text)

    return NumericLoader


# --- the store -----------------------------------------------------------------------------------


class PgStore(Store):
    """The trace store in a PostgreSQL database. One connection per thread, autocommit outside writes."""

    def __init__(self, url: str, *, text_mode: TextMode | None = None) -> None:
        psycopg = _psycopg()
        self.url = url
        self.location = redact(url)
        self.path = None  # type: ignore[assignment]  # no file: location names the database
        self.errors = (psycopg.Error, ConfigError)
        self._local = threading.local()
        self._init_mode(text_mode)
        self._migrate()

    def _connect(self) -> Connection:
        psycopg = _psycopg()
        try:
            raw = psycopg.connect(self.url, autocommit=True, row_factory=_row_factory, connect_timeout=10)
        except psycopg.Error as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"cannot open the trace store {self.location}: {detail}; check PODIUM_TRACES_URL"
            ) from None
        raw.adapters.register_loader("numeric", _numeric_loader(psycopg))
        return PgConnection(raw)

    def _conn(self) -> Connection:
        """This thread's connection, reopened when the server dropped it (a restart, a failover)."""
        conn = super()._conn()
        if isinstance(conn, PgConnection) and (conn.raw.broken or conn.raw.closed):
            self._local.conn = None
            conn = super()._conn()
        return conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        conn = self._conn()
        assert isinstance(conn, PgConnection)
        with conn.raw.transaction():
            yield conn

    def _migrate(self) -> None:
        with self._write() as conn:
            conn.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            self._apply_migrations(conn)

    def _erase_deleted(self) -> None:
        """Rewrite the tables so deleted rows leave the data files (``VACUUM FULL``)."""
        with self._read() as conn:
            conn.execute("VACUUM (FULL) turns")
            conn.execute("VACUUM (FULL) runs")
