"""A response cache for repeated rollouts: the same (model, messages, sampling) is called once.

Used by ``podium train live``, where many candidate coordinators replay the same turns. A hit
returns the stored completion (with its original tokens and cost, so rewards still see what the
call costs) but spends nothing: :class:`CachingBackendSet` counts only the misses it paid for.
Deterministic replay means a sampled model's first reply stands for all later identical calls.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator

from ..pool import ModelSpec
from ..types import Completion, CompletionRequest, StreamDelta
from . import Backend, BackendSet


def cache_key(spec: ModelSpec, request: CompletionRequest) -> str:
    """A digest of the model and everything about the call that can change its reply."""
    sampling = {
        "temperature": request.temperature if request.temperature is not None else spec.temperature,
        "max_tokens": request.max_tokens,
        "stop": request.stop,
        "extra": spec.extra_body,
    }
    payload = json.dumps(
        {
            "model": [spec.name, spec.backend, spec.model],
            "messages": [m.model_dump() for m in request.messages],
            "sampling": sampling,
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class CachedBackend:
    """Wraps one backend; identical requests after the first are served from ``store``."""

    def __init__(self, inner: Backend, spec: ModelSpec, owner: CachingBackendSet) -> None:
        self.inner, self.spec, self.owner = inner, spec, owner

    async def complete(self, request: CompletionRequest) -> Completion:
        key = cache_key(self.spec, request)
        hit = self.owner.store.get(key)
        if hit is not None:
            self.owner.hits += 1
            return hit.model_copy(update={"latency_s": 0.0})
        self.owner.before_call(self.spec)
        completion = await self.inner.complete(request)
        self.owner.store[key] = completion
        self.owner.spent_usd += completion.cost_usd
        return completion

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamDelta]:
        completion = await self.complete(request)
        if completion.text:
            yield StreamDelta(text=completion.text)
        yield StreamDelta(completion=completion)

    async def aclose(self) -> None:
        await self.inner.aclose()


class CacheBudgetExceeded(RuntimeError):
    """The training budget (paid calls or USD) is spent; raised before a new paid call."""


class CachingBackendSet(BackendSet):
    """A :class:`BackendSet` whose backends share one response cache and one spending budget."""

    def __init__(self, *args, max_calls: int | None = None, max_usd: float | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.store: dict[str, Completion] = {}
        self.hits = self.misses = 0
        self.spent_usd = 0.0
        self.max_calls, self.max_usd = max_calls, max_usd
        self._wrapped: dict[str, CachedBackend] = {}

    def get(self, spec: ModelSpec) -> Backend:
        if spec.name not in self._wrapped:
            self._wrapped[spec.name] = CachedBackend(super().get(spec), spec, self)
        return self._wrapped[spec.name]

    @property
    def exhausted(self) -> str | None:
        """Which budget is spent, or None."""
        if self.max_calls is not None and self.misses >= self.max_calls:
            return f"max_calls: {self.misses} paid calls of {self.max_calls}"
        if self.max_usd is not None and self.spent_usd >= self.max_usd:
            return f"max_usd: ${self.spent_usd:.6f} of ${self.max_usd}"
        return None

    def before_call(self, spec: ModelSpec) -> None:
        reason = self.exhausted
        if reason:
            raise CacheBudgetExceeded(f"training budget spent ({reason})")
        self.misses += 1  # counted before the call, so concurrent calls cannot overshoot the budget
