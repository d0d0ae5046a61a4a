"""The rows a batch of runs writes (``runs``, ``turns``, ``run_models``) and the statements that write
them; private to :meth:`Store.record_many <podium.traces.store.Store.record_many>` and the writer process.

A run is turned into its *plain* form first: its fields as JSON values, read back from the JSON
that pydantic-core writes for it (≈ 5 µs, no Python walk over the models), together with that JSON
text. The text is searched once, as :func:`podium.scrub.dumps_scrubbed` searches its own output,
for anything scrubbing could change (a secret, a key-shaped pattern's trigger, a 64-hex-digit run,
a lone surrogate): JSON escapes character by character, so whatever a stored string holds is in
that text. Found (rare), every stored string is scrubbed one by one as before; not found, the
strings are stored as they are and the JSON columns serialized once. The stored rows are the same
either way (tests compare them). A run whose JSON would not give it back exactly (a non-finite
float, a lone surrogate, a value JSON cannot hold) takes the slow path: ``model_dump()`` and
scrubbing string by string.

Rows are tuples bound by position (cheaper than named parameters), one ``executemany`` per table
and batch.
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic_core import PydanticSerializationError, from_json

from ..scrub import _may_need_scrub, clean_value, dumps_scrubbed, scrub
from .rows import digest
from .run_models import RUN_MODEL_SUMS

if TYPE_CHECKING:
    from ..types import RunResult
    from .queries import Connection

Plain = tuple[dict[str, Any], str | None]  # a run's fields as JSON values; its JSON text (None: scrub each string)
Item = tuple["RunResult | Plain", str | None, str | None]  # (run, source, owner)

RUN_COLUMNS = [
    "id",
    "started_at",
    "finished_at",
    "query",
    "query_hash",
    "pool",
    "policy",
    "coordinator",
    "status",
    "reason",
    "answer",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    "orchestration_tokens",
    "orchestration_cost_usd",
    "latency_s",
    "n_turns",
    "source",
    "owner",
    "text_mode",
    "workflow",
]
TURN_COLUMNS = [
    "run_id",
    "turn",
    "role",
    "model",
    "provider",
    "region",
    "reason",
    "prompt",
    "response",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "latency_s",
    "verdict",
    "diagnosis",
    "error",
    "retries",
    "fallback_from",
    "attempts",
    "usage_estimated",
    "step",
    "inputs",
    "depth",
    "started_at",
    "ended_at",
    "deployment",
]
MODEL_COLUMNS = ["run_id", "model", "started_at", "accepted", *RUN_MODEL_SUMS]
_ROLE_SUM = {"thinker": 5, "worker": 6, "verifier": 7}  # positions in MODEL_COLUMNS


# json.dumps(value, ensure_ascii=False[, sort_keys=True]) without building an encoder per call (a value
# read back from JSON or dumped from a model cannot be circular: no check)
_ENCODE = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode
_ENCODE_SORTED = json.JSONEncoder(ensure_ascii=False, sort_keys=True, check_circular=False).encode
_STRING = json.encoder.encode_basestring  # what those encoders write for a str (C)


def _encode(value: Any) -> str:
    """``_ENCODE(value)``; a list of string-valued dicts (chat messages: most of a run's JSON columns)
    written directly, without the encoder's per-call set-up (the same text: a test compares)."""
    if type(value) is list:
        try:
            items = ["{" + ", ".join([_STRING(k) + ": " + _STRING(v) for k, v in m.items()]) + "}" for m in value]
        except (TypeError, AttributeError):  # not a str (an _STRING TypeError), not a dict
            return _ENCODE(value)
        return "[" + ", ".join(items) + "]"
    return _ENCODE(value)


def _insert(table: str, columns: Sequence[str], *, replace: bool = False) -> str:
    marks = ", ".join("?" * len(columns))
    return f"INSERT {'OR REPLACE ' if replace else ''}INTO {table} ({', '.join(columns)}) VALUES ({marks})"


INSERT_RUN = _insert("runs", RUN_COLUMNS, replace=True)
INSERT_TURN = _insert("turns", TURN_COLUMNS)
INSERT_MODELS = _insert("run_models", MODEL_COLUMNS)


# --- a run's plain form ------------------------------------------------------------------------


def _exact_json(result: RunResult) -> bool:
    """Whether pydantic-core's JSON gives the run's numbers back exactly (it writes non-finite floats as null)."""
    total = result.started_at + result.latency_s + result.orchestration_cost_usd
    for t in result.turns:
        total += t.cost_usd + t.latency_s + (t.started_at or 0.0) + (t.ended_at or 0.0)
    if not math.isfinite(total):
        return False
    return (not result.policy or _finite(result.policy)) and (not result.workflow or _finite(result.workflow))


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    return True


def to_json(result: RunResult) -> bytes | None:
    """The run's JSON (pydantic-core), or None where it would not give the run back exactly."""
    if not _exact_json(result):
        return None
    try:
        return result.__pydantic_serializer__.to_json(result)
    except PydanticSerializationError:  # a lone surrogate, a value JSON cannot hold
        return None


def plain(result: RunResult) -> Plain:
    """``result``'s plain form (see the module doc)."""
    raw = to_json(result)
    if raw is None:
        return result.model_dump(), None
    return _loads(raw), raw.decode()


def _loads(raw: bytes) -> dict[str, Any]:
    """pydantic-core's JSON of a run read back: by pydantic-core's own parser (twice as fast as
    :func:`json.loads`, and it gives back the same values: floats exactly, ints of any size)."""
    try:
        fields: dict[str, Any] = from_json(raw)
    except ValueError:  # not expected for its own output; json.loads is the reference
        fields = json.loads(raw)
    return fields


def encode(result: RunResult) -> bytes:
    """``result`` for the writer process: ``J`` and its JSON, else ``P`` and the pickled model."""
    raw = to_json(result)
    if raw is not None:
        return b"J" + raw
    from .writer_child import dumps

    return b"P" + dumps(result)


def decode(blob: bytes) -> Plain:
    """:func:`encode`'s output back as a plain form."""
    if blob[:1] == b"J":
        raw = blob[1:]
        return _loads(raw), raw.decode()
    result: RunResult = pickle.loads(blob[1:])
    return result.model_dump(), None


# --- rows --------------------------------------------------------------------------------------


class Rows:
    """The rows of a batch (a run twice in it: its last copy)."""

    def __init__(self, items: Sequence[Item], text_mode: str) -> None:
        self.text_mode = text_mode
        self.ids: list[str] = []
        self._runs: dict[str, tuple[tuple[Any, ...], list[tuple[Any, ...]], list[list[Any]]]] = {}
        for run, source, owner in items:
            fields, text = run if isinstance(run, tuple) else plain(run)
            self.ids.append(fields["run_id"])
            self._runs[fields["run_id"]] = self._run(fields, text, source, owner)

    def write(self, conn: Connection) -> None:
        """One statement per table for the whole batch (inside the caller's transaction)."""
        if not self._runs:
            return
        ids = _stored(conn, list(self._runs))  # a run stored again: its old turns go (most runs are new)
        if ids:
            conn.executemany("DELETE FROM turns WHERE run_id = ?", ids)
            conn.executemany("DELETE FROM run_models WHERE run_id = ?", ids)
        conn.executemany(INSERT_RUN, [run for run, _, _ in self._runs.values()])
        turns = [t for _, ts, _ in self._runs.values() for t in ts]
        if turns:
            conn.executemany(INSERT_TURN, turns)
            conn.executemany(INSERT_MODELS, [m for _, _, ms in self._runs.values() for m in ms])

    def _run(
        self, run: dict[str, Any], text: str | None, source: str | None, owner: str | None
    ) -> tuple[tuple[Any, ...], list[tuple[Any, ...]], list[list[Any]]]:
        clean = text is not None and not _may_need_scrub(text)
        cols = _Columns(clean, self.text_mode == "hash")
        status = _value(run["status"])
        if status == "failed" and run["reason"].startswith("interrupted"):
            status = "interrupted"
        turns, models = self._turns(run, status, cols)
        prompt_tokens = sum(t[9] for t in turns)
        completion_tokens = sum(t[10] for t in turns)
        cost = 0.0
        for t in turns:
            cost += t[11]
        started, latency = run["started_at"], run["latency_s"]
        workflow = run["workflow"]
        row = (
            *(run["run_id"], started, started + latency, cols.private(run["query"]), digest(run["query"])),
            *(run["pool"], cols.json(run["policy"]), run["coordinator"], status, cols.scrub(run["reason"])),
            *(cols.private(run["answer"]), prompt_tokens, completion_tokens, prompt_tokens + completion_tokens, cost),
            run["orchestration_prompt_tokens"] + run["orchestration_completion_tokens"],
            *(run["orchestration_cost_usd"], latency, len(turns), source, owner, self.text_mode),
            cols.json(workflow, private=True) if workflow is not None else None,
        )
        return row, turns, models

    def _turns(self, run: dict[str, Any], status: str, cols: _Columns) -> tuple[list[tuple[Any, ...]], list[list[Any]]]:
        run_id, rows = run["run_id"], []
        sums: dict[str, list[Any]] = {}
        for t in run["turns"]:
            verdict, error = _value(t["verdict"]), cols.scrub(t["error"])
            inputs = t["inputs"]
            rows.append(
                (
                    *(run_id, t["turn"], _value(t["role"]), t["model"], t["provider"], t["region"]),
                    *(cols.scrub(t["reason"]), cols.json(t["messages"], private=True), cols.private(t["output"])),
                    *(t["prompt_tokens"], t["completion_tokens"], t["cost_usd"], t["latency_s"], verdict),
                    *(cols.private(t["diagnosis"]), error, t["retries"], t["fallback_from"], cols.json(t["attempts"])),
                    *(int(t["usage_estimated"]), t["step"], json.dumps(inputs) if inputs is not None else None),
                    *(t["depth"], t["started_at"], t["ended_at"], t["deployment"]),
                )
            )
            _add_sums(sums, run, status, rows[-1])
        return rows, list(sums.values())


def _stored(conn: Connection, ids: list[str]) -> list[tuple[str]]:
    """Those of ``ids`` already in ``runs`` (their turns and models are in the store only with them:
    foreign keys), one indexed lookup each, ``_CHUNK`` a statement."""
    found: list[tuple[str]] = []
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        sql = f"SELECT id FROM runs WHERE id IN ({', '.join('?' * len(chunk))})"
        found += [(row[0],) for row in conn.execute(sql, chunk)]
    return found


_CHUNK = 500  # bound parameters per lookup (SQLite before 3.32 allows 999)


def _add_sums(sums: dict[str, list[Any]], run: dict[str, Any], status: str, turn: tuple[Any, ...]) -> None:
    """Add one turn row to its model's ``run_models`` row (the definitions of :mod:`.run_models`)."""
    model = turn[3]
    row = sums.get(model)
    if row is None:
        row = sums[model] = [run["run_id"], model, run["started_at"], int(status == "accepted"), *[0] * 11]
    failed = bool(turn[15])
    row[4] += 1  # calls
    if turn[2] in _ROLE_SUM:
        row[_ROLE_SUM[turn[2]]] += 1
    row[8] += turn[9]
    row[9] += turn[10]
    row[10] += turn[11]
    row[11] += failed
    row[12] += not failed and bool(turn[13])
    row[13] += not failed and turn[13] == "ACCEPT"
    row[14] += turn[16]


def _value(value: Any) -> Any:
    """An enum's value (the slow path's ``model_dump()`` keeps enums), else ``value``."""
    return getattr(value, "value", value)


def _same(value: Any) -> Any:
    return value


class _Columns:
    """How one run's strings become stored values: scrubbed (unless the run's JSON proved nothing
    needs it), private texts digested in hash mode, JSON columns serialized."""

    def __init__(self, clean: bool, hashed: bool) -> None:
        self.clean, self.hashed = clean, hashed
        self.scrub: Callable[[Any], Any] = _same if clean else scrub

    def private(self, value: str | None) -> str | None:
        if value is None:
            return None
        return digest(value) if self.hashed else self.scrub(value)

    def json(self, value: Any, *, private: bool = False) -> str:
        """``value`` scrubbed, then serialized; ``private`` ones (prompts, workflows) digested in hash mode."""
        if not value and type(value) in (list, dict) and not private:  # most turns' attempts
            return "[]" if type(value) is list else "{}"
        if private and self.hashed:
            return digest(_ENCODE(clean_value(value)))
        sort = isinstance(value, dict)
        if self.clean:
            return _ENCODE_SORTED(value) if sort else _encode(value)
        return dumps_scrubbed(value, sort_keys=sort)
