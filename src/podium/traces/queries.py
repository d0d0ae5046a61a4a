"""The trace store's reading side: listing, counting, resolving and loading runs, and the
per-turn and per-model rows that stats and audits read. :class:`~podium.traces.store.Store` (and
the PostgreSQL store) inherit these queries from :class:`StoreQueries`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

from ..errors import UsageError
from .rows import _like_prefix, _run_dict, _run_filters, _turn_dict
from .run_models import RUN_MODEL_SUMS


class Connection(Protocol):
    """What the store needs of a database connection (sqlite3's, or the PostgreSQL adapter)."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any], /) -> Any: ...

    def close(self) -> None: ...


class StoreQueries:
    """The store's read queries; the class mixing it in provides :meth:`_read` (a connection)."""

    def _read(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    def runs(
        self,
        *,
        status: str | None = None,
        model: str | None = None,
        since: float | str | None = None,
        until: float | str | None = None,
        owner: str | None = None,
        query: str | None = None,
        limit: int | None = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Runs, newest first, filtered by status, model (any turn), start time, owner or query text."""
        where, args = _run_filters(status, model, since, until, owner, query)
        order = "ORDER BY r.started_at DESC, r.id DESC"
        if limit is not None:  # pick the page's ids first: the sort then carries ids, not whole rows
            where = f"WHERE r.id IN (SELECT r.id FROM runs r {where} {order} LIMIT ? OFFSET ?)"
            args += [int(limit), int(offset)]
        sql = (
            f"SELECT r.*, (SELECT group_concat(DISTINCT t.model) FROM turns t WHERE t.run_id = r.id) AS models "
            f"FROM runs r {where} {order}"
        )
        with self._read() as conn:
            return [_run_dict(r) for r in conn.execute(sql, args)]

    def count(self, **filters: Any) -> int:
        """How many runs match the same filters as :meth:`runs`."""
        where, args = _run_filters(
            filters.get("status"),
            filters.get("model"),
            filters.get("since"),
            filters.get("until"),
            filters.get("owner"),
            filters.get("query"),
        )
        with self._read() as conn:
            return int(conn.execute(f"SELECT count(*) FROM runs r {where}", args).fetchone()[0])

    def resolve(self, run_id: str) -> str:
        """The full id of the run whose id is ``run_id``, or starts or ends with it (a unique prefix or
        suffix, e.g. the last 4+ characters ``podium ask`` prints); UsageError if none or several."""
        pattern = _like_prefix(run_id)
        with self._read() as conn:
            rows = conn.execute(
                "SELECT id FROM runs WHERE id = ? UNION SELECT id FROM runs WHERE id LIKE ? ESCAPE '\\' "
                "UNION SELECT id FROM runs WHERE id LIKE ? ESCAPE '\\' LIMIT 4",
                (run_id, pattern, "%" + pattern[:-1]),
            ).fetchall()
        ids = sorted({r[0] for r in rows})
        if run_id in ids:
            return run_id
        if not ids:
            raise UsageError(
                f"no stored run with id {run_id!r} (nor one starting or ending with it); list runs with: podium traces ls"
            )
        if len(ids) > 1:
            raise UsageError(
                f"run id {run_id!r} is ambiguous: it matches several runs ({', '.join(ids[:3])}, ...); give more characters"
            )
        return str(ids[0])

    def run(self, run_id: str, *, owner: str | None = None) -> dict[str, Any] | None:
        """One run with its ``turns`` (prompt messages decoded), or None. ``owner`` restricts access."""
        with self._read() as conn:
            row = conn.execute("SELECT r.*, NULL AS models FROM runs r WHERE id = ?", (run_id,)).fetchone()
            if row is None or (owner is not None and row["owner"] != owner):
                return None
            turns = conn.execute("SELECT * FROM turns WHERE run_id = ? ORDER BY turn", (run_id,)).fetchall()
        run = _run_dict(row)
        run["turns"] = [_turn_dict(t) for t in turns]
        run["models"] = sorted({t["model"] for t in run["turns"]})
        return run

    def iter_runs(
        self, *, since: float | str | None = None, until: float | str | None = None, status: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every matching run with its turns, oldest first (for exports)."""
        where, args = _run_filters(status, None, since, until, None, None)
        with self._read() as conn:
            ids = [r[0] for r in conn.execute(f"SELECT id FROM runs r {where} ORDER BY started_at, id", args)]
        for run_id in ids:
            run = self.run(run_id)
            if run is not None:
                yield run

    def turn_rows(self, *, since: float | str | None = None, until: float | str | None = None) -> list[dict[str, Any]]:
        """Per-turn accounting joined with its run's status (no texts), for stats and audits."""
        where, args = _run_filters(None, None, since, until, None, None)
        sql = (
            f"SELECT t.run_id, t.turn, t.role, t.model, t.provider, t.region, t.prompt_tokens, t.completion_tokens, "
            f"t.cost_usd, t.latency_s, t.verdict, t.error, t.retries, t.fallback_from, t.attempts, "
            f"r.status AS run_status, r.started_at, r.pool FROM turns t JOIN runs r ON r.id = t.run_id {where} "
            f"ORDER BY r.started_at, t.run_id, t.turn"
        )
        with self._read() as conn:
            return [dict(r) for r in conn.execute(sql, args)]

    def model_aggregates(self, *, since: Any = None, until: Any = None) -> list[dict[str, Any]]:
        """Per model, summed in SQL (memory flat in the number of runs): calls, runs, calls per role,
        tokens, cost, failed calls, verdicts, retries and accepted runs.

        Reads ``run_models`` (one row per run and model, see :mod:`podium.traces.run_models`) through
        its covering index: one scan in model order, with no per-turn lookup and no distinct count."""
        # aliased r: the time filters name r.started_at, which run_models carries from its run
        where, args = _run_filters(None, None, since, until, None, None)
        sums = ", ".join(f"sum(r.{c}) AS {c}" for c in RUN_MODEL_SUMS)
        sql = (
            f"SELECT r.model AS model, count(*) AS runs, sum(r.accepted) AS accepted_runs, {sums} "
            f"FROM run_models r {where} GROUP BY r.model ORDER BY r.model"
        )
        with self._read() as conn:
            return [dict(row) for row in conn.execute(sql, args)]

    def ok_latency_ranks(
        self, model: str, ranks: Iterable[int], *, since: Any = None, until: Any = None
    ) -> dict[int, float]:
        """The latencies at ``ranks`` (0-based, ascending) among ``model``'s successful calls, and at
        the rank after each: read by ``OFFSET`` along the ``turns_ok_latency`` index, never all of them."""
        runs, args = _run_filters(None, None, since, until, None, None)
        # a filter is a set of run ids, built once per query (probing runs for each turn is ~10x slower),
        # so a filtered query reads the whole span of ranks at once
        only = f" AND t.run_id IN (SELECT r.id FROM runs r {runs})" if runs else ""
        sql = (
            f"SELECT t.latency_s FROM turns t WHERE t.model = ? AND (t.error IS NULL OR t.error = ''){only} "
            "ORDER BY t.latency_s LIMIT ? OFFSET ?"
        )
        wanted = sorted(set(ranks))
        spans = [(wanted[0], wanted[-1] + 2)] if runs and wanted else [(r, r + 2) for r in wanted]
        out: dict[int, float] = {}
        with self._read() as conn:
            for start, stop in spans:
                if start not in out:
                    for i, row in enumerate(conn.execute(sql, [model, *args, stop - start, start])):
                        out[start + i] = row[0]
        return out
