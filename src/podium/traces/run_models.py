"""Per run and model, the sums ``traces stats`` reads: calls, calls per role, tokens, cost, failed
calls, verdicts, accepts, retries, and whether the run was accepted.

The store writes these rows with the run's turns (:mod:`._batch`: the same definitions, in the same
transaction, replaced with them), and migration ``0004_run_models`` computes them once for the runs already
stored. ``traces stats`` then scans one narrow covering index in model order: no per-turn lookup of
the run's status and no ``count(DISTINCT run_id)`` sort, which made it grow with every turn row.
"""

from __future__ import annotations

RUN_MODEL_SUMS = [
    "calls",
    "thinker",
    "worker",
    "verifier",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "failed",
    "verdicts",
    "accepts",
    "retries",
]
_FAILED = "(t.error IS NOT NULL AND t.error <> '')"
_SUM_SQL = {
    "calls": "count(*)",
    **{role: f"sum(CASE WHEN t.role = '{role}' THEN 1 ELSE 0 END)" for role in ("thinker", "worker", "verifier")},
    "prompt_tokens": "sum(t.prompt_tokens)",
    "completion_tokens": "sum(t.completion_tokens)",
    "cost_usd": "sum(t.cost_usd)",
    "failed": f"sum(CASE WHEN {_FAILED} THEN 1 ELSE 0 END)",
    "verdicts": f"sum(CASE WHEN NOT {_FAILED} AND t.verdict IS NOT NULL AND t.verdict <> '' THEN 1 ELSE 0 END)",
    "accepts": f"sum(CASE WHEN NOT {_FAILED} AND t.verdict = 'ACCEPT' THEN 1 ELSE 0 END)",
    "retries": "sum(t.retries)",
}
RUN_MODELS_MIGRATION = [
    """CREATE TABLE run_models (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE, model TEXT NOT NULL, started_at REAL NOT NULL,
    accepted INTEGER NOT NULL DEFAULT 0, calls INTEGER NOT NULL DEFAULT 0, thinker INTEGER NOT NULL DEFAULT 0,
    worker INTEGER NOT NULL DEFAULT 0, verifier INTEGER NOT NULL DEFAULT 0, prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0, cost_usd REAL NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,
    verdicts INTEGER NOT NULL DEFAULT 0, accepts INTEGER NOT NULL DEFAULT 0, retries INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, model))""",
    # the existing runs, summed once (the writer keeps the table from here on)
    f"INSERT INTO run_models (run_id, model, started_at, accepted, {', '.join(RUN_MODEL_SUMS)}) "
    "SELECT t.run_id, t.model, max(r.started_at), max(CASE WHEN r.status = 'accepted' THEN 1 ELSE 0 END), "
    f"{', '.join(_SUM_SQL[c] for c in RUN_MODEL_SUMS)} FROM turns t JOIN runs r ON r.id = t.run_id "
    "GROUP BY t.run_id, t.model",
    # covering: stats (and `ls --model`) read only this index, in model order
    f"CREATE INDEX run_models_stats ON run_models(model, started_at, accepted, {', '.join(RUN_MODEL_SUMS)}, run_id)",
    # latency percentiles: a rank is an OFFSET along one model's successful calls (error: SQLite then
    # reads the index alone)
    "CREATE INDEX turns_ok_latency ON turns(model, latency_s, run_id, error) WHERE error IS NULL OR error = ''",
    "DROP INDEX turns_model",  # `ls --model` now finds runs by run_models_stats: one index less per turn
]
