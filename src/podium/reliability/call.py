"""The one path every model call of podium takes: engine turns, workflow steps, the coordinator's
own calls and the server's pass-through.

:class:`Layers` builds, once per pool model, the stack ``RetryBackend(GuardBackend(SpliceBackend(raw)))``
over a :class:`~podium.backends.BackendSet`; :class:`ModelCall` is one logical call over a chain
of those stacks (a :class:`FallbackBackend`), streaming or not, and keeps what happened (its
:class:`CallContext`) for the trace even when the call is cancelled midway.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ..backends import Backend, BackendSet
from ..pool import ModelSpec
from ..types import Completion, CompletionRequest
from .breaker import BreakerRegistry, default_breakers
from .context import CallContext, call_scope, closing
from .deployments import DeploymentsBackend, states_for
from .fallback import AllModelsFailed, FallbackBackend, Prepare
from .guard import GuardBackend
from .retry import RetryBackend, RetryPolicy
from .splice import SpliceBackend

TextSink = Callable[[ModelSpec, str], Awaitable[None] | None]


class Layers:
    """The reliable backend of each pool model, built on first use and kept: retries per ``retry``
    (default: each model's ``max_retries``), breakers from ``breakers``, total timeouts per model."""

    def __init__(
        self,
        backends: BackendSet | None = None,
        breakers: BreakerRegistry | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.backends = backends or BackendSet()
        self.breakers = breakers or default_breakers()
        self.retry = retry
        self._stacks: dict[str, Backend] = {}

    def get(self, spec: ModelSpec) -> Backend:
        """``spec``'s stack (rebuilt when the pool's spec of that name changed). A model with
        deployments: a :class:`DeploymentsBackend` over each deployment's own stack."""
        key = spec.name if not spec.deployments else f"{spec.name}|{','.join(d.name or '' for d in spec.deployments)}"
        stack = self._stacks.get(key)
        if stack is None or stack.spec is not spec:
            if spec.deployments:
                parts = [self.get(d) for d in spec.deployment_specs()]
                stack = DeploymentsBackend(spec, parts, states_for(self.backends))
            else:
                raw = self.backends.get(spec)
                stack = RetryBackend(GuardBackend(SpliceBackend(raw), self.breakers), self.retry)
            self._stacks[key] = stack
        return stack

    def chain(self, specs: Sequence[ModelSpec], prepare: Prepare | None = None) -> FallbackBackend:
        """A fallback backend over ``specs``; ``prepare`` adapts the request to each model."""
        return FallbackBackend([self.get(s) for s in specs], prepare)


@dataclass
class Served:
    """Which model answered (``index`` 0: the first choice, else a fallback), with what request."""

    completion: Completion
    spec: ModelSpec
    request: CompletionRequest
    index: int


class ModelCall:
    """One logical call of ``request``: each model of ``specs`` in turn, each with retries, breaker
    and timeout.

    ``prepare`` adapts the request to a model (ContextOverflow: skip it; BudgetExhausted and other
    errors end the call). ``context`` (read it after :meth:`run`, or after a cancellation)
    holds every failed attempt, the retries, and what broken streams consumed.
    """

    def __init__(
        self,
        layers: Layers,
        specs: Sequence[ModelSpec],
        request: CompletionRequest,
        prepare: Prepare | None = None,
        *,
        deadline: float | None = None,
        context: CallContext | None = None,
    ) -> None:
        self.backend = layers.chain(specs, prepare)
        self.request = request
        self.context = context or CallContext()
        if deadline is not None:
            self.context.deadline = deadline

    async def run(self, sink: TextSink | None = None) -> Served | None:
        """The answer, or None when every model failed. With ``sink`` the call streams: new text
        goes to ``sink`` as it arrives, and a broken stream is continued without repeating it."""
        with call_scope(self.context) as call:
            try:
                completion = await (self._complete() if sink is None else self._stream(sink))
            except AllModelsFailed:
                return None
            assert call.spec is not None and call.request is not None and call.index is not None
            return Served(completion, call.spec, call.request, call.index)

    async def _complete(self) -> Completion:
        return await self.backend.complete(self.request)

    async def _stream(self, sink: TextSink) -> Completion:
        final: Completion | None = None
        async with closing(self.backend.stream(self.request)) as deltas:
            async for delta in deltas:
                if delta.completion is not None:
                    final = delta.completion
                elif delta.text:
                    out = sink(self.context.active or self.backend.spec, delta.text)
                    if inspect.isawaitable(out):
                        await out
        if final is None:
            raise AllModelsFailed(self.context.errors)
        return final
