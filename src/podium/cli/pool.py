"""``podium models``, ``podium pool check`` and ``podium pool status``: what a pool holds, whether it is
reachable, and the state of its endpoints' circuit breakers."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import click
import httpx

from ..backends import BackendSet, check_backend
from ..errors import PodiumError
from ..pool import ModelSpec, Pool, load_pool
from .options import SuggestingGroup, pool_option


@click.command()
@pool_option
@click.option("--json", "as_json", is_flag=True)
def models(pool_ref: str, as_json: bool) -> None:
    """List the pool's models with prices, regions and roles.

    \b
    Examples:
      podium models                        # the embedded offline pool
      podium models --pool openrouter      # a shipped pool: embedded, ollama, openrouter, eu
      podium models --pool my-pool.yaml --json
    """
    pool = load_pool(pool_ref)
    if as_json:
        click.echo(json.dumps([m.model_dump(exclude_none=True) for m in pool.config.models], indent=2))
        return
    click.echo(f"pool {pool.name}: {pool.config.description.strip()}")
    click.echo(f"{'model':<24} {'backend':<8} {'region':<6} {'$in/M':>7} {'$out/M':>7}  roles")
    for m in pool.config.models:
        click.echo(
            f"{m.name:<24} {m.backend:<8} {m.region:<6} {m.input_usd_per_mtok:>7.3f} {m.output_usd_per_mtok:>7.3f}  {','.join(m.roles)}"
        )
    d = pool.config.defaults
    click.echo(f"defaults: thinker={d.thinker} worker={d.worker} verifier={d.verifier} coordinator={d.coordinator}")


async def probe(spec: ModelSpec, backends: BackendSet) -> str | None:
    """None if the model looks usable, else what is wrong: its backend's ``check()`` (or why it cannot be built);
    a model with deployments: each deployment's."""
    if spec.deployments:
        found = await asyncio.gather(*(probe(d, backends) for d in spec.deployment_specs()))
        problems = [f"{d.name}: {p}" for d, p in zip(spec.deployment_specs(), found, strict=True) if p]
        return "; ".join(problems) or None
    try:
        backend = backends.get(spec)
    except PodiumError as exc:
        return str(exc)
    return await check_backend(backend)


async def probe_all(pool: Pool) -> dict[str, str | None]:
    """Every pool model's problem (None: ok), checked concurrently over one shared HTTP client."""
    async with httpx.AsyncClient() as client:
        backends = BackendSet(client)
        try:
            results = await asyncio.gather(*(probe(m, backends) for m in pool.config.models))
        finally:
            await backends.aclose()
    return {m.name: r for m, r in zip(pool.config.models, results, strict=True)}


@click.group(cls=SuggestingGroup)
def pool() -> None:
    """Inspect and check pools (podium doctor checks the whole install).

    \b
    Examples:
      podium pool check --pool my-pool.yaml
      podium pool status --pool openrouter --probe
    """


@pool.command()
@pool_option
def check(pool_ref: str) -> None:
    """Validate the pool file and probe each model's endpoint (exit 1 if any fails).

    \b
    Examples:
      podium pool check                          # the embedded pool: is the GGUF there?
      podium pool check --pool my-pool.yaml      # file valid, keys set, endpoints answer
      PODIUM_POOL=eu podium pool check
    """
    p = load_pool(pool_ref)
    click.echo(f"{p.source}: valid ({len(p.config.models)} models)")
    problems = asyncio.run(probe_all(p))
    for name, problem in problems.items():
        click.echo(f"  {'FAIL' if problem else 'ok  '} {name}{': ' + problem if problem else ''}")
    if any(problems.values()):
        sys.exit(1)


def breaker_rows(p: Pool, probes: dict[str, str | None] | None) -> list[dict[str, Any]]:
    """Per model: endpoint, breaker config, and the state last shared in the breaker file."""
    from ..reliability import BreakerRegistry, breaker_file, endpoint_key

    shared = BreakerRegistry(breaker_file()).load()
    rows = []
    for m in p.config.models:
        key = endpoint_key(m)
        saved = shared.get(key, {})
        left = (saved.get("opened_at") or 0) + m.breaker_open_s - time.time()
        state = saved.get("state", "closed")
        if state == "open" and left <= 0:
            state = "half_open"  # the next call will be the probe
        row = {
            "model": m.name,
            "endpoint": key,
            "threshold": m.breaker_threshold,
            "open_s": m.breaker_open_s,
            "state": state if m.breaker_threshold > 0 else "disabled",
            "seconds_left": round(max(left, 0.0), 1) if state == "open" else 0.0,
            "last_error": saved.get("last_error"),
            "updated_at": saved.get("updated_at"),
        }
        if probes is not None:
            row["probe"] = probes.get(m.name) or "ok"
        rows.append(row)
    return rows


@pool.command()
@pool_option
@click.option("--probe", is_flag=True, help="Also probe each endpoint now (GET /models).")
@click.option("--reset", is_flag=True, help="Forget all shared breaker state first.")
@click.option("--json", "as_json", is_flag=True)
def status(pool_ref: str, probe: bool, reset: bool, as_json: bool) -> None:
    """Circuit breakers per endpoint: config, and the state shared by podium processes.

    \b
    Examples:
      podium pool status --pool openrouter
      podium pool status --pool my-pool.yaml --probe --json
      podium pool status --reset                 # forget all shared breaker state
    """
    from ..reliability import BreakerRegistry, breaker_file
    from ..scrub import scrub_value

    p = load_pool(pool_ref)
    path = breaker_file()
    if reset:
        BreakerRegistry(path).reset()
    rows = scrub_value(
        breaker_rows(p, asyncio.run(probe_all(p)) if probe else None)
    )  # a state file may predate scrubbing
    if as_json:
        click.echo(json.dumps({"pool": p.name, "state_file": str(path) if path else None, "endpoints": rows}, indent=2))
        return
    click.echo(f"pool {p.name}; breaker state shared via {path or '(nowhere: PODIUM_BREAKER_FILE is empty)'}")
    click.echo(
        f"{'model':<22} {'state':<9} {'left s':>6} {'trip':>4} {'open s':>6}  {'probe':<6} endpoint / last error"
    )
    for r in rows:
        probed = r.get("probe", "-")
        flag = probed if probed in ("-", "ok") else "FAIL"
        note = (
            r["endpoint"]
            + (f"  [{r['last_error'][:60]}]" if r["last_error"] else "")
            + (f"  probe: {probed}" if flag == "FAIL" else "")
        )
        click.echo(
            f"{r['model'][:22]:<22} {r['state']:<9} {r['seconds_left']:>6} {r['threshold']:>4} {r['open_s']:>6}  {flag:<6} {note}"
        )
