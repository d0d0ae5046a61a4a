"""The turn loop (TRINITY): each turn a coordinator picks a role and a model, the model acts on the
transcript, and the run ends at a verifier's ACCEPT or when a budget runs out.

Every run returns a :class:`RunResult`; runtime failures become a status, never an exception.
:meth:`Engine.iter` is the one way to run: an async iterator of the run's events
(:mod:`podium.events`), which a CLI shows, a server streams and a store persists;
:meth:`Engine.run` and :func:`ask` are thin wrappers over it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import ValidationError

from .backends import BackendSet
from .checks import CheckSpec, parse_check
from .coordinators import get_coordinator
from .coordinators.base import Coordinator
from .errors import UsageError
from .events import (
    EngineRun,
    Event,
    EventHandler,
    RunFinished,
    TurnDelta,
    TurnFinished,
    TurnStarted,
)
from .pool import Policy, Pool, load_pool
from .preflight import check_coordinator
from .reliability import BreakerRegistry, Layers, RetryPolicy, default_breakers
from .turn_loop import CHECK_MODEL, MAX_FALLBACKS, TurnLoop
from .types import Budget, Role, RunResult

__all__ = [
    "CHECK_MODEL",
    "MAX_FALLBACKS",
    "Engine",
    "EngineRun",
    "Event",
    "EventHandler",
    "RunFinished",
    "TurnDelta",
    "TurnFinished",
    "TurnStarted",
    "aask",
    "ask",
]


class Engine:
    """Runs queries over a pool with a coordinator.

    ``backends`` shares clients and model instances across runs; ``on_event`` receives every
    event of every run (per-run handlers can be passed to :meth:`run` too).
    """

    def __init__(
        self,
        pool: Pool,
        coordinator: Coordinator | str = "rules",
        *,
        backends: BackendSet | None = None,
        retry: RetryPolicy | None = None,
        on_event: EventHandler | None = None,
        breakers: BreakerRegistry | None = None,
    ) -> None:
        self.pool = pool
        self.coordinator = get_coordinator(coordinator) if isinstance(coordinator, str) else coordinator
        self.backends = backends or BackendSet()
        self.retry = retry
        self.breakers = breakers or default_breakers()  # per-endpoint circuit breakers, shared across runs
        self.layers = Layers(self.backends, self.breakers, retry)  # every model call's reliable path
        self.handlers: list[EventHandler] = [on_event] if on_event else []

    def iter(
        self,
        query: str,
        *,
        budget: Budget | None = None,
        policy: Policy | None = None,
        on_event: EventHandler | None = None,
        stream: bool = False,
        check: CheckSpec | dict[str, Any] | None = None,
        cache: bool | None = None,
        worker_fields: dict[str, Any] | None = None,
    ) -> EngineRun:
        """Orchestrate ``query``, as an async iterator of its events (see :mod:`podium.events`)::

            async with engine.iter(query) as run:
                async for event in run:
                    ...
            run.result

        Raises UsageError (bad query, impossible policy) at once, before anything is sent; a run
        left before its end stops, with status ``failed`` and reason ``interrupted``. With
        ``stream`` workers' text arrives as :class:`TurnDelta` events; with ``check`` (a
        :data:`podium.checks.CheckSpec`) every verifier turn runs the check instead of a model:
        ACCEPT when it passes, else REVISE with the failing test as diagnosis (in a workflow, its
        top-level verifier steps, and a final step choosing among answers takes the first that passes:
        :mod:`podium.workflows.grounded`). ``cache`` sets the
        model calls' response cache (backends/cached.py): True use it, False bypass it, None (default)
        as each pool model says. ``worker_fields`` (OpenAI fields such as ``tools``, ``response_format``)
        go to every worker call, as sent; a worker that answers with tool calls ends the run (turn loop
        only).
        """
        if not query or not query.strip():
            raise UsageError("the question is empty; pass a question as an argument or on stdin")
        pool = self.pool.restrict(policy) if policy else self.pool
        pool.default_for(Role.WORKER)  # PolicyError now, before any data leaves
        check_coordinator(pool, self.coordinator)  # ConfigError: fixed:MODEL or a head naming no pool model
        parsed = _parse_check(check)
        limits = budget or pool.config.budget
        handlers = [*self.handlers, *([on_event] if on_event else [])]
        if not getattr(self.coordinator, "plans_workflows", False):
            return EngineRun(
                lambda feed: TurnLoop(
                    self, pool, query, limits, [*handlers, feed], stream, parsed, cache, worker_fields
                ).execute()
            )
        from .workflows.runner import WorkflowRun  # conductor / topology:NAME / workflow:PATH

        return EngineRun(
            lambda feed: WorkflowRun(self, pool, query, limits, [*handlers, feed], stream, parsed).execute()
        )

    async def run(
        self,
        query: str,
        *,
        budget: Budget | None = None,
        policy: Policy | None = None,
        on_event: EventHandler | None = None,
        stream: bool = False,
        check: CheckSpec | dict[str, Any] | None = None,
        cache: bool | None = None,
        worker_fields: dict[str, Any] | None = None,
    ) -> RunResult:
        """Orchestrate ``query`` to an answer (:meth:`iter`, run to its end). Raises only UsageError."""
        run = self.iter(
            query,
            budget=budget,
            policy=policy,
            on_event=on_event,
            stream=stream,
            check=check,
            cache=cache,
            worker_fields=worker_fields,
        )
        return await run.to_end()

    async def aclose(self) -> None:
        """Close the backends (HTTP connections)."""
        await self.backends.aclose()


def _parse_check(check: CheckSpec | dict[str, Any] | None) -> CheckSpec | None:
    try:
        return parse_check(check) if check is not None else None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"][1:])) or "type"
        raise UsageError(f"bad check {check!r}: {where}: {first['msg']} (see docs/checks.md)") from None


async def aask(
    query: str,
    pool: str | Pool = "embedded",
    coordinator: str | Coordinator = "rules",
    *,
    check: CheckSpec | dict[str, Any] | None = None,
    **budget: Any,
) -> RunResult:
    """Run one query on a pool (a shipped name, a path, or a Pool) and close everything after.
    ``check`` grades the answer instead of a verifier model (see :meth:`Engine.iter`)."""
    engine = Engine(load_pool(pool) if isinstance(pool, str) else pool, coordinator)
    try:
        return await engine.run(query, budget=Budget(**budget), check=check)
    finally:
        await engine.aclose()


def ask(
    query: str,
    pool: str | Pool = "embedded",
    coordinator: str | Coordinator = "rules",
    *,
    check: CheckSpec | dict[str, Any] | None = None,
    **budget: Any,
) -> RunResult:
    """Synchronous :func:`aask`, for scripts. Inside a running event loop (async code, Jupyter)
    it raises UsageError: use ``await podium.aask(...)``, ``await engine.run(...)`` or ``engine.iter``."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(aask(query, pool, coordinator, check=check, **budget))
    raise UsageError(
        "podium.ask() blocks, so it cannot run inside a running event loop; in async code use "
        "`await podium.aask(...)`, `await engine.run(...)` or `async with engine.iter(...) as run:`"
    )
