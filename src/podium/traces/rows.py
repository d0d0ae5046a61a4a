"""The store's rows: SQL built from row dicts, run filters, stored JSON read back, hash-mode digests,
and the database file's private mode. Shared by the SQLite and PostgreSQL stores."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from ..scrub import clean_text
from .settings import parse_time


def digest(text: str) -> str:
    """The stored stand-in for a text in hash mode."""
    return "sha256:" + hashlib.sha256(clean_text(text).encode()).hexdigest()


def _private_file(path: Path) -> None:
    """Create ``path`` (and its directory) readable by the owner only; tighten an existing file we own.

    SQLite gives the WAL and shared-memory files the database file's mode, so they are 0600 too.
    """
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if file.stat().st_mode & 0o077 and file.stat().st_uid == os.getuid():
                file.chmod(0o600)
        except OSError:
            pass


def _insert(table: str, row: dict[str, Any], *, replace: bool = False) -> str:
    cols = ", ".join(row)
    marks = ", ".join(f":{c}" for c in row)
    return f"INSERT {'OR REPLACE ' if replace else ''}INTO {table} ({cols}) VALUES ({marks})"


def _like_prefix(text: str) -> str:
    return re.sub(r"([\\%_])", r"\\\1", text) + "%"


def _run_filters(
    status: str | None, model: str | None, since: Any, until: Any, owner: str | None, query: str | None
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if status:
        clauses.append("r.status = ?")
        args.append(status)
    if model:
        clauses.append("r.id IN (SELECT run_id FROM run_models WHERE model = ?)")
        args.append(model)
    if since is not None:
        clauses.append("r.started_at >= ?")
        args.append(parse_time(since, name="--since"))
    if until is not None:
        clauses.append("r.started_at < ?")
        args.append(parse_time(until, name="--until"))
    if owner is not None:
        clauses.append("r.owner = ?")
        args.append(owner)
    if query:
        clauses.append("r.query LIKE ? ESCAPE '\\'")
        args.append("%" + _like_prefix(query))
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", args


def loads_column(text: str | None, empty: Any) -> Any:
    """A stored JSON column; a row written by an older podium that scrubbed serialized JSON (and so
    could break it) reads as the raw text in a list instead of failing the whole read."""
    if not text:
        return empty
    try:
        return json.loads(text)
    except ValueError:
        return [text] if isinstance(empty, list) else {"unparsable": text}


def _run_dict(row: Any) -> dict[str, Any]:
    run = dict(row)
    run["policy"] = loads_column(run.get("policy"), {})
    workflow = run.get("workflow")
    run["workflow"] = loads_column(workflow, None) if workflow and not workflow.startswith("sha256:") else None
    models = run.get("models")
    run["models"] = sorted(models.split(",")) if isinstance(models, str) else []
    return run


def _turn_dict(row: Any) -> dict[str, Any]:
    turn = dict(row)
    turn["attempts"] = loads_column(turn.get("attempts"), [])
    turn["usage_estimated"] = bool(turn["usage_estimated"])
    turn["inputs"] = json.loads(turn["inputs"]) if turn.get("inputs") else None
    prompt = turn.get("prompt")
    if prompt and not prompt.startswith("sha256:"):
        try:
            turn["messages"] = json.loads(prompt)
        except ValueError:
            turn["messages"] = None
    else:
        turn["messages"] = None
    return turn
