"""``podium serve``: run the OpenAI-compatible server (tiers as models) with uvicorn."""

from __future__ import annotations

import gc
import json
import os
from typing import Any

import click

from ..errors import UsageError, missing_extra
from .helptext import ENVIRONMENT
from .options import pool_option

LOOPBACK = ("127.0.0.1", "localhost", "::1")
WORKER_ENV = "PODIUM_SERVE_WORKER"  # how `--workers N` hands the app's settings to each worker process


def print_new_key(name: str) -> None:
    """Print a fresh API key and the keys-file entry holding its hash."""
    from ..server.auth import hash_key, new_key

    key = new_key()
    click.echo(f"API key for '{name}' (shown once, store it now):\n  {key}\n")
    click.echo("Add this entry under 'keys:' in your keys file:")
    click.echo(
        f"  - name: {name}\n    sha256: {hash_key(key)}\n    policy: {{}}\n    rate_limit: {{requests_per_minute: 600}}"
    )


@click.command(epilog=ENVIRONMENT)
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Interface to bind (anything but loopback needs --keys)."
)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@pool_option
@click.option(
    "--keys",
    "keys_file",
    type=click.Path(dir_okay=False),
    default=None,
    envvar="PODIUM_KEYS",
    help="YAML keys file (hashed keys, policy and rate limit per key). Without it: no auth, loopback only.",
)
@click.option(
    "--tiers",
    "tiers_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML tiers file (default: the shipped tiers).",
)
@click.option(
    "--max-body",
    type=click.IntRange(1024),
    default=4 * 1024 * 1024,
    show_default=True,
    help="Largest request body in bytes.",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(0.1, 3600),
    default=10.0,
    show_default=True,
    help="Seconds a client has to send a whole request head (request line and headers).",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    envvar="PODIUM_WORKERS",
    help="Server processes sharing the port. With PODIUM_REDIS_URL they share rate limits and breakers "
    "(docs/deployment.md); without it each keeps its own.",
)
@click.option("--new-key", metavar="NAME", default=None, help="Print a new API key and its keys-file entry, then exit.")
def serve(
    host: str,
    port: int,
    pool_ref: str,
    keys_file: str | None,
    tiers_file: str | None,
    max_body: int,
    header_timeout: float,
    log_level: str,
    workers: int,
    new_key: str | None,
) -> None:
    """Serve the pool's tiers and models behind an OpenAI-compatible API.

    Needs the server extra: pip install 'podium[server]'. The pool's API keys must be set
    (it refuses to start otherwise). Models served at /v1/chat/completions:

    \b
      podium        fast: up to 3 turns, prompted coordinator, cheapest capable models
      podium-ultra  thorough: up to 8 turns, strongest models, every answer verified
      podium-conductor  a model writes the workflow (docs/conductor.md)
      MODEL         every model of the pool, directly (`podium models --pool P` lists them)
    Tiers are defined in a YAML file: --tiers FILE replaces the shipped one.

    \b
    Examples:
      podium serve                                    # embedded pool on 127.0.0.1:8000
      podium serve --pool eu --port 8080              # needs MISTRAL_API_KEY, SCW_SECRET_KEY
      podium serve --new-key alice >> keys.txt        # prints a key and its keys-file entry
      podium serve --pool eu --host 0.0.0.0 --keys keys.yaml
      PODIUM_REDIS_URL=redis://127.0.0.1:6379/0 podium serve --workers 4 --keys keys.yaml
    Then point any OpenAI client at http://127.0.0.1:8000/v1 with model "podium".
    """
    if new_key:
        print_new_key(new_key)
        return
    if keys_file is None and host not in LOOPBACK:
        raise UsageError(f"refusing to bind {host} without a keys file: pass --keys FILE, or bind 127.0.0.1")
    try:
        import uvicorn
    except ImportError:
        raise missing_extra("uvicorn", "server") from None
    from ..server.http import uvicorn_options

    app = _app(pool_ref, tiers_file, keys_file, max_body, host, port)
    if workers == 1:
        tune_garbage_collector()
        uvicorn.run(app, host=host, port=port, **uvicorn_options(log_level, header_timeout))
        return
    settings = {
        "pool": pool_ref,
        "tiers": tiers_file,
        "keys": keys_file,
        "max_body": max_body,
        "host": host,
        "workers": workers,
    }
    _run_workers(uvicorn, workers, host, port, log_level, header_timeout, settings)


def _app(pool_ref: str, tiers_file: str | None, keys_file: str | None, max_body: int, host: str, port: int) -> Any:
    """The server's app, after checking the pool can serve; says on stderr what it serves and where."""
    from ..pool import load_pool
    from ..preflight import check_pool
    from ..server.app import create_app
    from ..server.traces import Traces, server_writer

    check_pool(load_pool(pool_ref))  # refuse to start rather than answer 502 to every request
    traces = Traces(writer=server_writer())
    app = create_app(pool_ref, tiers=tiers_file, keys=keys_file, max_body_bytes=max_body, hosts=(host,), traces=traces)
    if keys_file is None:
        click.echo(f"podium serve: no --keys file, so no authentication: binding {host} only (local use).", err=True)
    tiers = ", ".join(app.state.service.tiers)
    click.echo(
        f"podium serve: pool '{app.state.service.pool.name}', tiers {tiers}; traces: {app.state.traces.location}",
        err=True,
    )
    click.echo(f"podium serve: OpenAI base_url http://{host}:{port}/v1", err=True)
    return app


def _run_workers(
    uvicorn: Any,
    workers: int,
    host: str,
    port: int,
    log_level: str,
    header_timeout: float,
    settings: dict[str, Any],
) -> None:
    """Serve with several worker processes, each building its app from the settings left in the environment."""
    from ..server.http import uvicorn_options
    from ..state import redis_url

    if not redis_url():
        click.echo(
            f"podium serve: {workers} workers without PODIUM_REDIS_URL: each keeps its own rate limits and breakers",
            err=True,
        )
    os.environ[WORKER_ENV] = json.dumps({**settings, "header_timeout": header_timeout})
    options = {**uvicorn_options(log_level, header_timeout), "http": "podium.cli.serve:WorkerProtocol"}
    uvicorn.run("podium.cli.serve:worker_app", factory=True, workers=workers, host=host, port=port, **options)


def worker_app() -> Any:
    """The app of one ``--workers`` process, built from the settings ``serve`` left in the environment."""
    from ..server.app import create_app
    from ..server.traces import Traces, server_writer

    settings = json.loads(os.environ[WORKER_ENV])
    app = create_app(
        settings["pool"],
        tiers=settings["tiers"],
        keys=settings["keys"],
        max_body_bytes=settings["max_body"],
        hosts=(settings["host"],),
        traces=Traces(writer=server_writer(settings["workers"])),
    )
    tune_garbage_collector()
    return app


def tune_garbage_collector() -> None:
    """Keep the garbage collector's passes off what a server process keeps anyway.

    - What was built before serving (modules, pydantic schemas, the pool, the app) is frozen: full
      collections walked all of it every few hundred requests, about 90 ms each, 0.15 ms per
      request at 50 clients. Garbage is collected first; frozen objects are still freed by
      reference counting.
    - The middle generation is collected 10× less often: a request's objects are promoted to it while
      the request is in flight and are freed by reference counting soon after, so its collections
      mostly walked live requests (≈ 55 µs per request).
    - The young generation is collected 10× less often too (every 7,000 allocations, not 700): each
      pass walks the objects of the requests in flight, which stay about as many however rarely it
      runs; the event loop's CPU per request fell 3% (30,000: no better).

    Measured in docs/performance.md, sessions 7 and 11."""
    gc.collect()
    gc.freeze()
    _, _, old = gc.get_threshold()
    gc.set_threshold(7000, 100, old)


def __getattr__(name: str) -> Any:
    # uvicorn imports the worker's protocol class by name: a class made at run time cannot cross processes
    if name == "WorkerProtocol":
        from ..server.http import uvicorn_options

        timeout = float(json.loads(os.environ.get(WORKER_ENV, "{}")).get("header_timeout", 10.0))
        return uvicorn_options("info", timeout)["http"]
    raise AttributeError(name)
