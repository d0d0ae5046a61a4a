"""``podium traces`` (ls, show, stats, export, audit, purge) and ``podium ui`` (the web trace viewer)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from ..errors import UsageError
from ..traces.store import Store
from .options import SuggestingGroup

db_option = click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False),
    default=None,
    envvar="PODIUM_DB",
    help="Trace database (default: $PODIUM_HOME/podium.db, else the user data dir).",
)
since_option = click.option(
    "--since", default=None, help="Only runs started at/after this (YYYY-MM-DD, ISO time, or 7d/12h)."
)
until_option = click.option("--until", default=None, help="Only runs started before this.")


def open_store(db_path: str | None) -> Store:
    return Store.open(db_path)


def when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def short(text: str | None, width: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@click.group(cls=SuggestingGroup)
def traces() -> None:
    """Inspect, export, audit and purge the stored traces of past runs.

    Runs are stored in $PODIUM_HOME/podium.db (PODIUM_TRACES=hash keeps digests instead of
    texts, PODIUM_TRACES=off stores nothing). A run id can be shortened to any unique prefix
    or suffix, e.g. its last 4 characters.

    \b
    Examples:
      podium traces ls --status failed --since 7d
      podium traces show 3f2a --full
      podium traces audit --allowed-regions eu
      podium traces export --format replay my-runs/ && podium train replay my-runs/ --out head.npz
    """


@traces.command("ls")
@db_option
@click.option(
    "--status", default=None, help="accepted | answered | max_turns | budget_exhausted | failed | interrupted"
)
@click.option("--model", default=None, help="Only runs in which this model took a turn.")
@since_option
@until_option
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def ls_cmd(
    db_path: str | None,
    status: str | None,
    model: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List stored runs, newest first.

    \b
    Examples:
      podium traces ls
      podium traces ls --status accepted --model smollm2-worker --limit 5
      podium traces ls --since 2025-01-01 --until 7d --json
    """
    runs = open_store(db_path).runs(status=status, model=model, since=since, until=until, limit=limit)
    if as_json:
        click.echo(json.dumps(runs, indent=2))
        return
    if not runs:
        click.echo("no stored runs match")
        return
    click.echo(
        f"{'id':<30}  {'started (UTC)':<19}  {'status':<16}  {'turns':>5}  {'tokens':>7}  {'cost $':>9}  {'time s':>6}  query"
    )
    for r in runs:
        click.echo(
            f"{r['id']:<30}  {when(r['started_at'])}  {r['status']:<16}  {r['n_turns']:>5}  {r['total_tokens']:>7}  "
            f"{r['cost_usd']:>9.6f}  {r['latency_s']:>6.2f}  {short(r['query'], 40)}"
        )


def timeline(run: dict[str, Any], width: int = 24) -> list[str]:
    """One line per turn with a bar proportional to its latency."""
    longest = max((t["latency_s"] for t in run["turns"]), default=0) or 1
    rows = [
        f"{'#':>2}  {'role':<8}  {'model':<20}  {'latency':<{width}}  {'time s':>6}  {'in':>5}  {'out':>5}  {'cost $':>9}  verdict/error"
    ]
    for t in run["turns"]:
        bar = "█" * max(1, round(width * t["latency_s"] / longest))
        note = f"error: {short(t['error'], 50)}" if t["error"] else (t["verdict"] or "")
        if t["fallback_from"]:
            note = f"{note} (fallback from {t['fallback_from']})".strip()
        rows.append(
            f"{t['turn']:>2}  {t['role']:<8}  {short(t['model'], 20):<20}  {bar:<{width}}  {t['latency_s']:>6.2f}  "
            f"{t['prompt_tokens']:>5}  {t['completion_tokens']:>5}  {t['cost_usd']:>9.6f}  {note}"
        )
    return rows


def step_graph(run: dict[str, Any], width: int = 32) -> list[str]:
    """Workflow runs: each plan's origin, then one swimlane per step (indented by depth) with what it read."""
    steps = [t for t in run["turns"] if t.get("step") and t.get("started_at") is not None]
    if not steps:
        return []
    t0 = min(t["started_at"] for t in steps)
    span = max((t["ended_at"] or t["started_at"]) - t0 for t in steps) or 1.0
    lines = []
    for p in (run.get("workflow") or {}).get("plans", []):
        inside = f" in step {p['step']}" if p["step"] else ""
        lines.append(f"plan{inside} (depth {p['depth']}, round {p['round']}): {p['origin']}")
    lines.append(
        f"{'step':<22}  {'role':<8}  {'model':<16}  {'timeline (0 to ' + format(span, '.2f') + 's)':<{width + 2}}  reads"
    )
    for t in sorted(steps, key=lambda t: (t["started_at"], t["turn"])):
        a = int(width * (t["started_at"] - t0) / span)
        b = max(a + 1, int(round(width * ((t["ended_at"] or t["started_at"]) - t0) / span)))
        bar = (" " * a + ("x" if t["error"] else "█") * (b - a))[:width]
        label = short("  " * t["depth"] + t["step"], 22)
        reads = ", ".join(t["inputs"] or []) or "-"
        note = f"  error: {short(t['error'], 40)}" if t["error"] else (f"  {t['verdict']}" if t["verdict"] else "")
        lines.append(f"{label:<22}  {t['role']:<8}  {short(t['model'], 16):<16}  |{bar:<{width}}|  {reads}{note}")
    return lines


def turn_texts(t: dict[str, Any]) -> list[str]:
    """A turn's prompt messages and response, in full."""
    lines = [f"--- turn {t['turn']} {t['role']} {t['model']}: {t['reason']}"]
    if t["messages"]:
        lines += [f"[{m['role']}] {m['content']}" for m in t["messages"]]
    else:
        lines.append(f"[prompt] {t['prompt']}")
    lines.append(f"[response] {t['response'] if t['response'] is not None else ''}")
    return lines


@traces.command("show")
@db_option
@click.argument("run_id")
@click.option("--full", is_flag=True, help="Also print every turn's prompt and response.")
@click.option("--json", "as_json", is_flag=True, help="Print the run and its turns as JSON.")
def show_cmd(db_path: str | None, run_id: str, full: bool, as_json: bool) -> None:
    """Show the turn timeline of run RUN_ID (a unique prefix or suffix is enough).

    \b
    Examples:
      podium traces show run_18c2f0a1b2c_3f2a9b1c
      podium traces show 3f2a9b1c --full          # the id's last characters
      podium traces show run_18c2f --json
    """
    store = open_store(db_path)
    run = store.run(store.resolve(run_id))
    assert run is not None
    if as_json:
        click.echo(json.dumps(run, indent=2))
        return
    click.echo(f"{run['id']}  {run['status']} ({run['reason']})")
    click.echo(
        f"started {when(run['started_at'])} UTC; pool {run['pool']}; coordinator {run['coordinator']}; "
        f"policy {json.dumps(run['policy']) if run['policy'] else 'none'}"
    )
    click.echo(f"{run['n_turns']} turns, {run['total_tokens']} tokens, ${run['cost_usd']:.6f}, {run['latency_s']:.2f}s")
    click.echo(f"question: {short(run['query'], 200) if not full else run['query']}\n")
    click.echo("\n".join(timeline(run)))
    graph = step_graph(run)
    if graph:
        click.echo("\nworkflow graph:\n" + "\n".join(graph))
    click.echo(f"\nanswer: {run['answer'] if run['answer'] is not None else '(none)'}")
    if full:
        for t in run["turns"]:
            click.echo("\n" + "\n".join(turn_texts(t)))


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


@traces.command("stats")
@db_option
@since_option
@until_option
@click.option("--json", "as_json", is_flag=True)
def stats_cmd(db_path: str | None, since: str | None, until: str | None, as_json: bool) -> None:
    """Per model: calls, tokens, cost, latency p50/p95, accept rate and failure rate.

    \b
    Examples:
      podium traces stats
      podium traces stats --since 7d --json
    """
    from ..traces.reports import model_stats

    rows = model_stats(open_store(db_path), since=since, until=until)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no stored turns match")
        return
    click.echo(
        f"{'model':<24}  {'calls':>5}  {'tokens':>8}  {'cost $':>10}  {'p50 s':>6}  {'p95 s':>6}  {'accept':>6}  {'fail':>5}"
    )
    for r in rows:
        click.echo(
            f"{short(r['model'], 24):<24}  {r['calls']:>5}  {r['tokens']:>8}  {r['cost_usd']:>10.6f}  "
            f"{fmt(r['latency_p50_s'], '6.2f')}  {fmt(r['latency_p95_s'], '6.2f')}  {r['accept_rate']:>6.0%}  {r['failure_rate']:>5.0%}"
        )


@traces.command("export")
@db_option
@click.option(
    "--format",
    "fmt_name",
    type=click.Choice(["sft", "replay"]),
    required=True,
    help="sft: JSON lines of instruction/input/output; replay: a routing dataset folder.",
)
@click.argument("out", required=False, type=click.Path())
@since_option
@until_option
def export_cmd(db_path: str | None, fmt_name: str, out: str | None, since: str | None, until: str | None) -> None:
    """Export stored runs as training data to OUT (sft: a file, default stdout; replay: a folder).

    A replay item is a distinct question whose answer a verifier judged. About 70% of items go
    to the train split (by a hash of the question), and `podium train replay` needs at least 10
    train items: run about 15 distinct questions with a verifier (the rules coordinator) first.

    \b
    Examples:
      podium traces export --format replay my-runs/
      podium traces export --format sft runs.jsonl --since 30d
    """
    from ..traces import reports as trace_reports

    store = open_store(db_path)
    if fmt_name == "sft":
        count, text = trace_reports.write_sft(store, Path(out) if out else None, since=since, until=until)
        if out is None:
            click.echo(text, nl=False)
        click.echo(f"wrote {count} sft records" + (f" to {out}" if out else ""), err=True)
        return
    if not out:
        raise click.UsageError("--format replay needs an output folder: podium traces export --format replay DIR")
    counts = trace_reports.export_replay(store, Path(out), since=since, until=until)
    click.echo(
        f"wrote {counts['items']} items ({counts['train']} train, {counts['test']} test), {counts['outcomes']} outcomes "
        f"over {counts['models']} models to {out} (scores: {counts['score_source']}, see meta.json)"
        + (f"; skipped {counts['skipped_runs']} runs stored without texts" if counts["skipped_runs"] else "")
    )
    if counts["items"] == 0:
        click.echo(
            "warning: no verified answers found; runs need a grade or a verifier verdict to give outcomes", err=True
        )
    elif counts["train"] < 10:
        click.echo(
            f"note: podium train replay needs at least 10 train items, this export has {counts['train']}; "
            "run more distinct questions with a verifier (about 15 in all), then export again",
            err=True,
        )


@traces.command("audit")
@db_option
@click.option(
    "--allowed-regions",
    "regions",
    required=True,
    multiple=True,
    help="Regions data may reach (comma-separated or repeated), e.g. eu or eu,us.",
)
@click.option(
    "--local-inside/--local-outside",
    default=True,
    show_default=True,
    help="Count region 'local' (in-process models, servers on this machine) as inside every allowed region.",
)
@since_option
@until_option
@click.option("--json", "as_json", is_flag=True)
def audit_cmd(
    db_path: str | None,
    regions: tuple[str, ...],
    local_inside: bool,
    since: str | None,
    until: str | None,
    as_json: bool,
) -> None:
    """List runs in which data reached a model outside the allowed regions (exit 1 if any).

    \b
    Only calls that reached a model count: an attempt that failed before sending (connection
    refused, DNS or TLS failure, connect timeout, open circuit breaker) sent nothing. Any other
    failure (HTTP error, read timeout, broken stream) counts, since the server may have read it.
    For each run it prints every offending turn: number, role, model and region.

    \b
    Examples:
      podium traces audit --allowed-regions eu
      podium traces audit --allowed-regions eu,us --since 7d --json
      podium traces audit --allowed-regions eu --local-outside   # embedded models count as leaving
    """
    from ..traces.reports import audit_regions

    allowed = [r.strip() for group in regions for r in group.split(",") if r.strip()]
    store = open_store(db_path)
    found = audit_regions(store, allowed, since=since, until=until, local_inside=local_inside)
    if as_json:
        click.echo(json.dumps(found, indent=2))
    else:
        checked = store.count(since=since, until=until)
        for run in found:
            click.echo(f"{run['run_id']}  {when(run['started_at'])}  {run['status']:<16}  pool {run['pool']}")
            for v in run["violations"]:
                note = "  (call failed after sending)" if v["call_failed"] else ""
                click.echo(f"    turn {v['turn']:>2} {v['role']:<8} {v['model']} @ {v['region']}{note}")
        inside = ", ".join(allowed) + (" (and local)" if local_inside and "local" not in allowed else "")
        click.echo(f"{len(found)} of {checked} runs sent data outside {inside}", err=True)
    if found:
        sys.exit(1)


@traces.command("purge")
@db_option
@click.option("--before", required=True, help="Delete runs started before this (YYYY-MM-DD, ISO time, or 30d).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge_cmd(db_path: str | None, before: str, yes: bool) -> None:
    """Delete stored runs started before a date; their texts are overwritten, not just unlinked.

    \b
    Examples:
      podium traces purge --before 30d
      podium traces purge --before 2025-01-01 --yes
    """
    store = open_store(db_path)
    count = store.count(until=before)
    if count and not yes:
        click.confirm(f"delete {count} runs started before {before} from {store.location}?", abort=True)
    deleted = store.purge(before)
    click.echo(f"deleted {deleted} runs")


@click.command()
@db_option
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to bind; traces hold prompts, keep it local."
)
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option("--open/--no-open", "open_browser", default=False, help="Open the page in a browser.")
def ui(db_path: str | None, host: str, port: int, open_browser: bool) -> None:
    """Serve the web trace viewer (runs, timelines, per-model stats).

    \b
    Examples:
      podium ui --open
      podium ui --port 9000 --db /path/to/podium.db
    """
    from ..traces.viewer import make_server

    try:
        server = make_server(open_store(db_path), host, port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port") from None
    url = f"http://{host}:{server.server_address[1]}/"
    click.echo(f"podium trace viewer on {url} (Ctrl-C to stop)", err=True)
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        server.serve_forever()
    finally:
        server.server_close()
