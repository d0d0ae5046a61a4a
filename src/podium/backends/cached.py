"""Response caches: the same (model, messages, parameters) is answered from memory.

Two uses share :func:`cache_key`:

- **Serving** (opt-in, :class:`ResponseCachingBackend`): a pool model with ``cache: true`` (or
  ``cache: {ttl_s: 600, max_entries: 5000}``) keeps an exact-match cache with a TTL and an LRU size
  bound; a request's ``cache`` field overrides it (True: use a cache even where the pool has none,
  with the defaults; False: bypass). A hit costs nothing: the completion comes back with
  ``cached=True``, zero tokens and zero cost. Meant for deterministic calls (temperature 0): for a
  sampled model the first reply stands for every identical call until it expires.
- **Training rollouts** (:class:`CachingBackendSet`, ``podium train live``), where many candidate
  coordinators replay the same turns. A hit returns the stored completion (with its original tokens
  and cost, so rewards still see what the call costs) but spends nothing: the set counts only the
  misses it paid for.

With ``PODIUM_REDIS_URL`` set, the serving cache lives in Redis (:class:`podium.state.caches.RedisLRU`):
every replica answers from the same entries, with the same TTL and size bound (LRU across replicas).
While Redis is unreachable each replica uses its own in-process cache (a warning, and
``podium_shared_state_fallbacks`` counts it), never an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from ..pool import ModelSpec, ResponseCacheSpec
from ..types import Completion, CompletionRequest, StreamDelta
from . import Backend, BackendSet

if TYPE_CHECKING:
    from ..state.caches import RedisLRU


def cache_key(spec: ModelSpec, request: CompletionRequest) -> str:
    """A digest of the model and everything about the call that can change its reply."""
    sampling = {
        "temperature": request.temperature if request.temperature is not None else spec.temperature,
        "max_tokens": request.max_tokens,
        "stop": request.stop,
        "extra": spec.extra_body,
        "structured": request.structured,
        "response_format": request.response_format,
    }
    if request.passthrough:  # the server's forwarded OpenAI fields (tools, ...); absent: keys as before
        sampling["passthrough"] = request.passthrough
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


class ResponseCache:
    """Completions by key, each for ``ttl_s`` seconds, at most ``max_entries`` (least recently used evicted)."""

    def __init__(
        self,
        spec: ResponseCacheSpec,
        clock: Callable[[], float] = time.monotonic,
        shared: RedisLRU | None = None,
        space: str = "",
    ) -> None:
        self.spec, self.clock = spec, clock
        self.entries: OrderedDict[str, tuple[float, Completion]] = OrderedDict()
        self.hits = self.misses = 0
        self.shared, self.space = shared, space or "_requests"

    async def aget(self, key: str) -> Completion | None:
        """:meth:`get` from the shared cache when there is one (the local cache while Redis is down)."""
        if self.shared is not None:
            raw = await self.shared.get(self.space, key)
            if raw is not False:
                hit = None if raw is None else Completion.model_validate_json(str(raw))
                self.hits += hit is not None
                self.misses += hit is None
                return hit
        return self.get(key)

    async def aput(self, key: str, completion: Completion) -> None:
        """:meth:`put` into the shared cache when there is one (the local cache while Redis is down)."""
        if self.shared is not None:
            value = completion.model_dump_json()
            if await self.shared.put(self.space, key, value, self.spec.ttl_s, self.spec.max_entries):
                return
        self.put(key, completion)

    def get(self, key: str) -> Completion | None:
        entry = self.entries.get(key)
        if entry is not None and self.clock() - entry[0] > self.spec.ttl_s:
            del self.entries[key]
            entry = None
        if entry is None:
            self.misses += 1
            return None
        self.entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def put(self, key: str, completion: Completion) -> None:
        self.entries[key] = (self.clock(), completion)
        self.entries.move_to_end(key)
        while len(self.entries) > self.spec.max_entries:
            self.entries.popitem(last=False)


class ResponseCachingBackend:
    """Wraps a pool model's backend with its opt-in response cache (:class:`ResponseCache`).

    ``cache`` is the pool model's cache (None: the model has none); a request with ``cache=True``
    uses ``fallback()``'s cache instead, ``cache=False`` bypasses both. Only complete replies are
    stored (a stream that breaks stores nothing).
    """

    def __init__(
        self, inner: Backend, spec: ModelSpec, cache: ResponseCache | None, fallback: Callable[[], ResponseCache]
    ) -> None:
        self.inner, self.spec, self.cache, self.fallback = inner, spec, cache, fallback

    def __getattr__(self, name: str) -> Any:  # everything else is the wrapped backend's
        return getattr(self.inner, name)

    def _cache_for(self, request: CompletionRequest) -> ResponseCache | None:
        if request.cache is False:
            return None
        return self.cache if self.cache is not None or request.cache is None else self.fallback()

    @staticmethod
    def _hit(completion: Completion) -> Completion:
        return completion.model_copy(
            update={"cached": True, "latency_s": 0.0, "cost_usd": 0.0, "prompt_tokens": 0, "completion_tokens": 0}
        )

    async def complete(self, request: CompletionRequest) -> Completion:
        cache = self._cache_for(request)
        if cache is None:
            return await self.inner.complete(request)
        key = cache_key(self.spec, request)
        hit = await cache.aget(key)
        if hit is not None:
            return self._hit(hit)
        completion = await self.inner.complete(request)
        await cache.aput(key, completion)
        return completion

    def stream(self, request: CompletionRequest) -> AsyncIterator[StreamDelta]:
        cache = self._cache_for(request)
        return self.inner.stream(request) if cache is None else self._stream_cached(request, cache)

    async def _stream_cached(self, request: CompletionRequest, cache: ResponseCache) -> AsyncIterator[StreamDelta]:
        key = cache_key(self.spec, request)
        hit = await cache.aget(key)
        if hit is not None:
            if hit.text:
                yield StreamDelta(text=hit.text)
            yield StreamDelta(completion=self._hit(hit))
            return
        deltas = self.inner.stream(request)
        try:
            async for delta in deltas:
                if delta.completion is not None:
                    await cache.aput(key, delta.completion)
                yield delta
        finally:  # an abandoned stream closes the upstream one
            close = getattr(deltas, "aclose", None)
            if close is not None:
                await close()

    async def aclose(self) -> None:
        await self.inner.aclose()


def with_response_cache(backend: Backend, spec: ModelSpec, caches: dict[str, Any]) -> Backend:
    """``backend`` behind the response cache (the pool model's own where it opts in; requests with
    ``cache=True`` share ``caches[""]``, made with the defaults on first use)."""
    url = os.environ.get("PODIUM_REDIS_URL", "").strip()
    if url and "\0redis" not in caches:
        from ..state.caches import RedisLRU

        caches["\0redis"] = RedisLRU(url)  # one client per backend set (one event loop)
    shared = caches.get("\0redis")
    if spec.cache is not None:
        caches.setdefault(spec.name, ResponseCache(spec.cache, shared=shared, space=spec.name))

    def fallback() -> ResponseCache:
        return caches.setdefault("", ResponseCache(ResponseCacheSpec(), shared=shared))  # type: ignore[no-any-return]

    return ResponseCachingBackend(backend, spec, caches.get(spec.name), fallback)


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

    def __init__(self, *args: Any, max_calls: int | None = None, max_usd: float | None = None, **kwargs: Any) -> None:
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
