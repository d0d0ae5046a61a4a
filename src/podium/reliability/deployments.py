"""Routing one model name over its deployments: a backend over the deployments' backends.

:class:`DeploymentsBackend` is what :class:`~podium.reliability.Layers` builds for a pool model
with ``deployments:`` (each deployment has its own retry, breaker and timeout stack, its breaker
keyed by its own endpoint). Per call it orders the deployments by the model's ``routing``:

- ``simple-shuffle`` (default): a random order, weighted by ``weight`` (seed: ``routing_seed``);
- ``least-busy``: fewest calls in flight (ties: fewest calls so far);
- ``latency``: lowest moving average latency (a call's duration; a stream's time to first text);
  deployments not measured yet first;
- ``cost``: cheapest for this request (prompt estimate and ``max_tokens`` at its prices).

A deployment at its ``rpm`` (calls started in the last 60 s) or ``tpm`` (tokens of calls finished
in the last 60 s) is skipped; a failing one falls to the next. When every deployment is over its
limit the call raises :class:`DeploymentsBusy` (``retry_after``: when the first frees up), so a
fallback chain moves to its next model and the server answers 429. Counters live in one
:class:`DeploymentStates` per :class:`~podium.backends.BackendSet`. With ``PODIUM_REDIS_URL`` the
rpm and tpm windows are also counted in the shared state (:mod:`podium.state`, fixed 60 s windows
keyed by ``MODEL@DEPLOYMENT``), so replicas together get each deployment's limits; Redis
unreachable: each replica counts on its own (a warning, never a failed call).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from ..backends import BackendSet
from ..backends.base import Backend, estimate_prompt_tokens
from ..deployments import DeploymentSpec, deployment_name
from ..errors import BackendError
from ..pool import ModelSpec
from ..state import SharedState, open_state, redis_url
from ..types import Completion, CompletionRequest, StreamDelta
from .context import call_scope, closing

log = logging.getLogger("podium.deployments")
WINDOW_S = 60.0
EWMA = 0.3  # weight of the newest latency in the moving average


class DeploymentsBusy(BackendError):
    """Every deployment of a model is over its rpm/tpm limit; ``retry_after``: seconds until one frees."""

    def __init__(self, model: str, wait: float) -> None:
        super().__init__(
            f"{model}: every deployment is over its rpm/tpm limit (one frees in {wait:.1f}s)",
            status=429,
            retryable=True,
            retry_after=wait,
        )


@dataclass
class DeploymentState:
    """One deployment's counters (in this process)."""

    in_flight: int = 0
    calls: int = 0
    latency_s: float | None = None
    started: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    blocked_until: float = 0.0  # the shared state refused a call until then (other replicas' calls)

    def prune(self, now: float) -> None:
        while self.started and self.started[0] <= now - WINDOW_S:
            self.started.popleft()
        while self.tokens and self.tokens[0][0] <= now - WINDOW_S:
            self.tokens.popleft()

    def wait(self, limits: DeploymentSpec, now: float) -> float:
        """0 if a call may start now, else seconds until the rpm/tpm window lets one through."""
        self.prune(now)
        waits = [0.0, self.blocked_until - now]
        if limits.rpm is not None and len(self.started) >= limits.rpm:
            waits.append(self.started[len(self.started) - limits.rpm] + WINDOW_S - now)
        if limits.tpm is not None:
            used = sum(n for _, n in self.tokens)
            for at, n in self.tokens:
                if used < limits.tpm:
                    break
                waits.append(at + WINDOW_S - now)
                used -= n
        return max(waits)

    def observe(self, latency_s: float) -> None:
        self.latency_s = latency_s if self.latency_s is None else (1 - EWMA) * self.latency_s + EWMA * latency_s


class DeploymentStates:
    """The counters of every deployment, by deployment spec name; ``clock`` is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._states: dict[str, DeploymentState] = {}
        self._shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[str, SharedState]] = (
            weakref.WeakKeyDictionary()
        )

    def get(self, name: str) -> DeploymentState:
        return self._states.setdefault(name, DeploymentState())

    def shared(self) -> SharedState | None:
        """The replicas' shared state when ``PODIUM_REDIS_URL`` is set (one per event loop), else None."""
        url = redis_url()
        if url is None:
            return None
        loop = asyncio.get_running_loop()
        found = self._shared.get(loop)
        if found is None or found[0] != url:
            try:
                found = (url, open_state(url))
            except Exception as exc:  # e.g. the redis extra missing: count in this process, say so
                log.warning("deployments: shared state unavailable (%s); rpm/tpm count per replica", exc)
                return None
            self._shared[loop] = found
        return found[1]


_STATES: weakref.WeakKeyDictionary[BackendSet, DeploymentStates] = weakref.WeakKeyDictionary()


def states_for(backends: BackendSet) -> DeploymentStates:
    """The deployment counters shared by everything that uses ``backends`` (engines, the server)."""
    if backends not in _STATES:
        _STATES[backends] = DeploymentStates()
    return _STATES[backends]


def busy_wait(specs: Sequence[ModelSpec], states: DeploymentStates) -> float | None:
    """Seconds until one of ``specs`` can take a call, when every one is a model whose deployments
    are all over their limits; None when one can take it now."""
    now = states.clock()
    waits = []
    for spec in specs:
        if not spec.deployments:
            return None
        wait = min(states.get(d.name).wait(limit, now) for d, limit in zip(spec.deployment_specs(), spec.deployments))
        if wait <= 0:
            return None
        waits.append(wait)
    return min(waits) if waits else None


async def _shared_wait(shared: SharedState, name: str, limits: DeploymentSpec) -> float:
    """0 with the call counted in the replicas' shared rpm window, else seconds until it may start."""
    key = f"deployment:{name}"
    if limits.tpm is not None:  # tokens are whole: a total of tpm or more is over (amount 0 takes nothing)
        tokens = await shared.reserve(f"{key}:tpm", 0.0, limits.tpm - 0.5, WINDOW_S)
        if not tokens.ok:
            return max(tokens.retry_s, 0.001)
    if limits.rpm is not None:
        calls = await shared.reserve(f"{key}:rpm", 1.0, float(limits.rpm), WINDOW_S)
        if not calls.ok:
            return max(calls.retry_s, 0.001)
    return 0.0


class DeploymentsBackend:
    """One pool model over its deployments' backends (``backends[i]`` serves ``spec.deployments[i]``)."""

    def __init__(self, spec: ModelSpec, backends: Sequence[Backend], states: DeploymentStates) -> None:
        self.spec = spec
        self.backends = list(backends)
        self.states = states
        self.rng = random.Random(spec.routing_seed)

    def order(self, request: CompletionRequest) -> list[int]:
        """The deployments' indices in the order this call tries them."""
        indices = list(range(len(self.backends)))
        states = [self.states.get(b.spec.name) for b in self.backends]
        strategy = self.spec.routing
        if strategy == "least-busy":
            return sorted(indices, key=lambda i: (states[i].in_flight, states[i].calls))
        if strategy == "latency":
            return sorted(indices, key=lambda i: (states[i].latency_s is not None, states[i].latency_s or 0.0))
        if strategy == "cost":
            prompt = estimate_prompt_tokens(request.messages)
            completion = request.max_tokens or 0
            return sorted(
                indices,
                key=lambda i: self.backends[i].spec.cost(prompt, completion or self.backends[i].spec.max_tokens),
            )
        weights = [d.weight for d in self.spec.deployments]
        out: list[int] = []
        while indices:
            pick = self.rng.choices(indices, weights=[weights[i] for i in indices])[0]
            indices.remove(pick)
            out.append(pick)
        return out

    async def _admit(self, index: int) -> DeploymentState | None:
        """The deployment's state with the call counted as started, or None when it is over its limit."""
        name, limits = self.backends[index].spec.name, self.spec.deployments[index]
        state = self.states.get(name)
        now = self.states.clock()
        if state.wait(limits, now) > 0:
            return None
        shared = self.states.shared() if limits.rpm is not None or limits.tpm is not None else None
        if shared is not None:
            wait = await _shared_wait(shared, name, limits)
            if wait > 0:
                state.blocked_until = now + wait
                return None
        state.started.append(now)
        state.in_flight += 1
        state.calls += 1
        return state

    async def _finish(self, index: int, state: DeploymentState, completion: Completion | None) -> None:
        state.in_flight -= 1
        if completion is None:
            return
        used = completion.prompt_tokens + completion.completion_tokens
        state.tokens.append((self.states.clock(), used))
        shared = self.states.shared() if self.spec.deployments[index].tpm is not None else None
        if shared is not None:
            await shared.add(f"deployment:{self.backends[index].spec.name}:tpm", used, WINDOW_S)

    def _busy(self) -> DeploymentsBusy:
        now = self.states.clock()
        wait = min(self.states.get(b.spec.name).wait(d, now) for b, d in zip(self.backends, self.spec.deployments))
        return DeploymentsBusy(self.spec.name, max(wait, 0.0))

    def _named(self, completion: Completion) -> Completion:
        return completion.model_copy(update={"model": self.spec.name})  # the model's name, as for any model

    async def complete(self, request: CompletionRequest) -> Completion:
        with call_scope() as call:
            tried = False
            for index in self.order(request):
                state = await self._admit(index)
                if state is None:
                    continue
                tried = True
                started, completion = time.perf_counter(), None
                try:
                    completion = await self.backends[index].complete(request)
                except BackendError:
                    continue
                finally:
                    await self._finish(index, state, completion)
                state.observe(time.perf_counter() - started)
                call.deployment = (self.spec.name, deployment_name(self.spec, index))
                return self._named(completion)
            error = BackendError(f"{self.spec.name}: every deployment failed") if tried else self._busy()
            call.errors.append(str(error))
            raise error

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamDelta]:
        with call_scope() as call:
            tried = False
            for index in self.order(request):
                state = await self._admit(index)
                if state is None:
                    continue
                tried = True
                started, completion, first = time.perf_counter(), None, True
                try:
                    async with closing(self.backends[index].stream(request)) as deltas:
                        async for delta in deltas:
                            if first and (delta.text or delta.completion is not None):
                                state.observe(time.perf_counter() - started)
                                first = False
                            if delta.completion is not None:
                                completion = delta.completion
                                call.deployment = (self.spec.name, deployment_name(self.spec, index))
                                delta = StreamDelta(completion=self._named(completion))
                            yield delta
                except BackendError:
                    continue
                finally:
                    await self._finish(index, state, completion)
                return
            error = BackendError(f"{self.spec.name}: every deployment failed") if tried else self._busy()
            call.errors.append(str(error))
            raise error

    async def aclose(self) -> None:
        for backend in self.backends:
            await backend.aclose()
