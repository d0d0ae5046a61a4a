"""What the trace store is for: per-model stats, region audits, and training data exports.

* :func:`model_stats`: calls, tokens, cost, latency p50/p95, accept and failure rates per model.
* :func:`audit_regions`: runs in which data reached a model outside the allowed regions.
* :func:`sft_records`: instruction/input/output records that teach a small router the choices
  that led to a verifier's acceptance.
* :func:`export_replay`: a replay dataset (``items.parquet``, ``outcomes.parquet``,
  ``models.json``) in the format of ``shared/data/routing``, for ``podium train replay``.
"""

from __future__ import annotations

import json
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..roles import TURN_ROLES
from .rows import loads_column
from .store import Store

ROUTER_INSTRUCTION = (
    "You coordinate a pool of language models that act as thinker (plans), worker (answers) or "
    "verifier (checks an answer). Given the question, the available models and the turns so far, "
    "reply with the next role and the model to take it, as 'ROLE MODEL'."
)


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation; None for no values."""
    if not values:
        return None
    data = sorted(values)
    pos = (len(data) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def model_stats(store: Store, *, since: Any = None, until: Any = None) -> list[dict[str, Any]]:
    """Per model: calls, tokens, cost, latency p50/p95 of successful calls, accept and failure rates.

    ``accept_rate`` is the share of runs the model took part in that a verifier accepted;
    ``failure_rate`` the share of its calls that ended in an error. Computed in SQL: one GROUP BY
    over the per-run-and-model sums, then the two rows either side of each percentile, read by
    rank from an index (time and memory flat in the number of stored runs, without filters).
    """
    aggregates = store.model_aggregates(since=since, until=until)
    oks = {agg["model"]: agg["calls"] - agg["failed"] for agg in aggregates}
    latency = {
        model: _rank_percentiles(store.ok_latency_ranks(model, _ranks(n, QS), since=since, until=until), n, QS)
        for model, n in oks.items()
        if n
    }
    out = []
    for agg in aggregates:
        p50, p95 = latency.get(agg["model"], (None, None))
        out.append(
            {
                "model": agg["model"],
                "calls": agg["calls"],
                "runs": agg["runs"],
                "roles": {role: agg[role] for role in TURN_ROLES if agg[role]},
                "prompt_tokens": agg["prompt_tokens"],
                "completion_tokens": agg["completion_tokens"],
                "tokens": agg["prompt_tokens"] + agg["completion_tokens"],
                "cost_usd": round(agg["cost_usd"], 8),
                "latency_p50_s": _round(p50),
                "latency_p95_s": _round(p95),
                "accept_rate": round(agg["accepted_runs"] / agg["runs"], 4),
                "failure_rate": round(agg["failed"] / agg["calls"], 4),
                "verifier_accept_share": round(agg["accepts"] / agg["verdicts"], 4) if agg["verdicts"] else None,
                "retries": agg["retries"],
            }
        )
    return out


QS = (50.0, 95.0)


def _ranks(n: int, qs: tuple[float, ...]) -> set[int]:
    """The ranks :func:`percentile` reads among ``n`` sorted values: the two either side of each ``q``."""
    return {r for q in qs for r in (int((n - 1) * q / 100), min(int((n - 1) * q / 100) + 1, n - 1))}


def _rank_percentiles(values: dict[int, float], n: int, qs: tuple[float, ...]) -> tuple[float | None, ...]:
    """:func:`percentile` from the values at :func:`_ranks` (``values``: rank to value)."""
    out: list[float | None] = []
    for q in qs:
        pos = (n - 1) * q / 100
        low, high = int(pos), min(int(pos) + 1, n - 1)
        out.append(
            values[low] + (values[high] - values[low]) * (pos - low) if low in values and high in values else None
        )
    return tuple(out)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


# --- audit -------------------------------------------------------------------------------------
#
# The rule, exactly: a model counts as having received a turn's data when an attempt on it got past
# opening the connection. Attempts that failed before any byte of the request was sent do not count:
# a connection never made (httpx ConnectError: refused, DNS, TLS handshake; ConnectTimeout;
# PoolTimeout) and a call an open circuit breaker skipped. Every other failure (an HTTP status, a
# read/write error or timeout, a malformed reply, the total timeout, a call a budget interrupted)
# counts as data that left: the server may have read the request. A turn with no attempt recorded
# and no answer sent nothing; the model that answered a turn always counts.

NOT_SENT_MARKERS = (": ConnectError:", ": ConnectTimeout", ": PoolTimeout", "circuit open for ")
LOCAL_REGION = "local"


def attempt_sent(error: str) -> bool:
    """Whether a failed attempt (``"model: message"``) may have sent the request (see the rule above)."""
    return not any(marker in error for marker in NOT_SENT_MARKERS)


def _reached(row: dict[str, Any]) -> list[str]:
    """Models this turn's data reached: attempts that got past connecting, then the model that answered."""
    names = []
    for attempt in loads_column(row["attempts"], []):
        if attempt.startswith("interrupted: "):  # a call cut short in flight: assume the request went out
            names.append(row["model"])
        elif attempt_sent(attempt):
            names.append(attempt.split(": ", 1)[0])
    if not row["error"]:
        names.append(row["model"])
    return list(dict.fromkeys(names))


def audit_regions(
    store: Store, allowed_regions: Iterable[str], *, since: Any = None, until: Any = None, local_inside: bool = True
) -> list[dict[str, Any]]:
    """Runs in which data reached a model outside ``allowed_regions``, with each offending turn.

    Which calls count is the rule above. ``local_inside`` treats region ``local`` (in-process
    models, servers on this machine) as inside every allowed set. A model whose region was never
    recorded (its every call failed) counts as region ``unknown``, outside any allowed set: the audit
    errs on the side of reporting. Each violation names the turn, role, model, region, and whether
    the call failed (data left, no answer came back).
    """
    allowed = set(allowed_regions) | ({LOCAL_REGION} if local_inside else set())
    rows = store.turn_rows(since=since, until=until)
    region_of = {r["model"]: r["region"] for r in rows if r["region"]}
    findings: dict[str, dict[str, Any]] = {}
    for row in rows:
        for model in _reached(row):
            region = (row["region"] if model == row["model"] else None) or region_of.get(model) or "unknown"
            if region in allowed:
                continue
            run = findings.setdefault(
                row["run_id"],
                {
                    "run_id": row["run_id"],
                    "started_at": row["started_at"],
                    "pool": row["pool"],
                    "status": row["run_status"],
                    "violations": [],
                },
            )
            run["violations"].append(
                {
                    "turn": row["turn"],
                    "role": row["role"],
                    "model": model,
                    "region": region,
                    "call_failed": model != row["model"] or bool(row["error"]),
                }
            )
    return list(findings.values())


# --- exports -----------------------------------------------------------------------------------


def winning_path(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The turns of an accepted run that led to acceptance: no failed calls, no rejected answers."""
    path: list[dict[str, Any]] = []
    for t in turns:
        if t["error"]:
            continue
        if t["role"] == "verifier" and t["verdict"] != "ACCEPT":
            while path and path[-1]["role"] != "worker":
                path.pop()
            if path:
                path.pop()  # the worker answer this verifier rejected
            continue
        path.append(t)
        if t["verdict"] == "ACCEPT":
            break
    return path


def _history(path: list[dict[str, Any]]) -> str:
    return "\n".join(f"{i}. {t['role']} {t['model']}" for i, t in enumerate(path, 1)) or "(none)"


def sft_records(store: Store, *, since: Any = None, until: Any = None) -> Iterator[dict[str, str]]:
    """Instruction/input/output records from accepted runs with stored texts: one per step of the
    path to acceptance, the output being the role and model chosen at that step."""
    for run in store.iter_runs(since=since, until=until, status="accepted"):
        if run["text_mode"] != "full" or not run["query"]:
            continue
        path = winning_path(run["turns"])
        models = ", ".join(run["models"])
        for i, step in enumerate(path):
            yield {
                "instruction": ROUTER_INSTRUCTION,
                "input": f"Question: {run['query']}\nModels: {models}\nTurns so far:\n{_history(path[:i])}",
                "output": f"{step['role']} {step['model']}",
            }


def write_sft(store: Store, out: Path | None, **filters: Any) -> tuple[int, str]:
    """Write :func:`sft_records` as JSON lines to ``out`` (or return them as text); returns (count, text)."""
    lines = [json.dumps(r, ensure_ascii=False) for r in sft_records(store, **filters)]
    text = "\n".join(lines) + ("\n" if lines else "")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    return len(lines), text


def split_of(item_id: str) -> str:
    """The replay-format split: ``crc32(item_id) % 10 < 7`` is train, the rest test."""
    return "train" if zlib.crc32(item_id.encode()) % 10 < 7 else "test"


def run_outcomes(run: dict[str, Any]) -> list[tuple[dict[str, Any], float, str]]:
    """(worker turn, score, source) for a stored run.

    A graded run (``podium bench``, ``train live``) gives its final answer the grounded grade
    (source ``graded``); other answers count by their verdict: ``check`` when an executable check
    judged them, ``verifier`` when a model did.
    """
    judged = [(t, score, "check" if v["model"] == "check" else "verifier") for t, score, v in _judged(run["turns"])]
    if run.get("grade_score") is None:
        return judged
    final = next((t for t in reversed(run["turns"]) if t["role"] == "worker" and not t["error"]), None)
    if final is None:
        return judged
    return [o for o in judged if o[0] is not final] + [(final, float(run["grade_score"]), "graded")]


def _judged(turns: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], float, dict[str, Any]]]:
    pending: dict[str, Any] | None = None
    for t in turns:
        if t["error"]:
            continue
        if t["role"] == "worker":
            pending = t
        elif t["role"] == "verifier" and pending is not None and t["verdict"]:
            yield pending, 1.0 if t["verdict"] == "ACCEPT" else 0.0, t
            pending = None


def replay_tables(
    store: Store, **filters: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int, dict[str, int]]:
    """(items, outcomes, skipped runs, outcome count per score source) for a replay dataset; items are distinct queries."""
    items: dict[str, dict[str, Any]] = {}
    acc: dict[tuple[str, str], list[tuple[float, float, int]]] = defaultdict(list)
    sources: dict[str, int] = defaultdict(int)
    skipped = 0
    for run in store.iter_runs(**filters):
        if run["text_mode"] != "full" or not run["query"]:
            skipped += 1
            continue
        item_id = run["query_hash"].removeprefix("sha256:")[:16]
        judged = run_outcomes(run)
        for turn, score, source in judged:
            acc[(item_id, turn["model"])].append((score, turn["cost_usd"], len(turn["response"] or "")))
            sources[source] += 1
        if judged:
            items.setdefault(
                item_id,
                {"item_id": item_id, "task": run["pool"] or None, "split": split_of(item_id), "text": run["query"]},
            )
    outcomes = [
        {
            "item_id": item,
            "model": model,
            "score": sum(v[0] for v in vals) / len(vals),
            "cost_usd": sum(v[1] for v in vals) / len(vals),
            "output_chars": round(sum(v[2] for v in vals) / len(vals)),
        }
        for (item, model), vals in sorted(acc.items())
    ]
    return list(items.values()), outcomes, skipped, dict(sources)


def export_replay(store: Store, out_dir: Path, **filters: Any) -> dict[str, Any]:
    """Write the replay dataset to ``out_dir``; returns counts (items, outcomes, models, skipped, score sources).

    ``meta.json`` says where the scores came from: ``graded`` (a check graded the final answer),
    ``check`` or ``verifier`` verdicts, and ``score_source`` sums it up (one of those, or ``mixed``).
    """
    from ..learned.replay import write_replay

    items, outcomes, skipped, sources = replay_tables(store, **filters)
    kinds = sorted(k for k, v in sources.items() if v)
    meta = {
        "source": "podium traces export",
        "score_source": kinds[0] if len(kinds) == 1 else ("mixed" if kinds else "none"),
        "outcomes_by_source": sources,
    }
    write_replay(out_dir, items, outcomes, meta=meta)
    models = sorted({o["model"] for o in outcomes})
    return {
        "items": len(items),
        "outcomes": len(outcomes),
        "models": len(models),
        "skipped_runs": skipped,
        "score_source": meta["score_source"],
        "train": sum(i["split"] == "train" for i in items),
        "test": sum(i["split"] == "test" for i in items),
    }
