"""How one model call survives a misbehaving provider: total timeouts, retries, circuit breakers,
and splicing a stream that breaks midway onto its retry or fallback.

* :func:`with_retries` retries retryable failures (408/409/429/5xx, timeouts, connection errors,
  malformed payloads) with exponential backoff and jitter. ``Retry-After`` is honoured when it is at
  most ``retry_after_cap_s``; a longer one gives up on this model at once so the engine can fall back.
* :func:`protected` runs one attempt under a total time limit (connect + first byte + body, streams
  included: httpx's own read timeout is per chunk) and through the endpoint's circuit breaker.
* :class:`CircuitBreaker`: ``threshold`` consecutive failed attempts open it for ``open_s`` seconds,
  during which calls fail at once with :class:`CircuitOpen` (the engine goes to the fallback);
  then one half-open probe is let through: success closes it, failure opens it again.
* :class:`BreakerRegistry` holds one breaker per endpoint and, when given a file, shares open
  breakers between processes (``podium pool status`` reads it).
* :func:`call_with_fallbacks`: one logical call over a chain of models (the engine's turns and the
  server's pass-through both use it), each tried through all of the above.
* :class:`StreamSplice`: after a stream broke, the next attempt is asked to *continue* the text the
  caller already received; only new text is emitted (see docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import random
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .backends.base import estimate_prompt_tokens, estimate_tokens
from .errors import BackendError, BackendTimeout, ContextOverflow, EndpointUnavailable
from .pool import ModelSpec
from .scrub import scrub, scrub_value
from .types import ChatMessage, Completion, CompletionRequest

if TYPE_CHECKING:
    from .backends import Backend, BackendSet

T = TypeVar("T")
BREAKER_FILE_ENV = "PODIUM_BREAKER_FILE"
CONTINUE_PROMPT = (
    "Your previous reply was cut off. Continue it exactly where it stops, without repeating anything already written."
)


@dataclass
class RetryPolicy:
    """How often and how patiently to retry one model call."""

    max_retries: int = 2
    base_delay_s: float = 0.25
    max_delay_s: float = 4.0
    retry_after_cap_s: float = 10.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, error: BackendError) -> float | None:
        """Seconds to wait before retry number ``attempt`` (1-based); None: do not retry this model now."""
        if error.retry_after is not None:
            wait = max(error.retry_after, 0.0)
            return wait if wait <= self.retry_after_cap_s else None
        backoff = min(self.base_delay_s * 2 ** (attempt - 1), self.max_delay_s)
        return backoff * (1 - self.jitter + self.jitter * self.rng.random())


@dataclass
class CallReport:
    """What happened across the attempts of one call."""

    retries: int = 0
    errors: list[str] = field(default_factory=list)


async def with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    report: CallReport,
    deadline: float | None = None,
) -> T:
    """Run ``call``; retry retryable BackendErrors per ``policy`` while time remains before ``deadline``."""
    loop = asyncio.get_running_loop()
    attempt = 0
    while True:
        try:
            return await call()
        except BackendError as exc:
            report.errors.append(str(exc))
            attempt += 1
            if not exc.retryable or attempt > policy.max_retries:
                raise
            wait = policy.delay(attempt, exc)
            if wait is None or (deadline is not None and loop.time() + wait >= deadline):
                raise
            report.retries += 1
            await asyncio.sleep(wait)


class CircuitOpen(EndpointUnavailable):
    """The endpoint's circuit breaker is open: the call was not made."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class BreakerState(str, Enum):
    """Closed: calls flow. Open: calls fail at once. Half-open: one probe call is let through."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class CircuitBreaker:
    """Consecutive-failure breaker of one endpoint. ``threshold`` 0 disables it.

    Only retryable failures count (a 4xx means the endpoint is up). Times are wall-clock so
    that an open breaker can be shared with other processes through :class:`BreakerRegistry`.
    """

    key: str
    threshold: int = 5
    open_s: float = 30.0
    clock: Callable[[], float] = time.time
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float | None = None
    last_error: str | None = None
    probing: bool = False
    on_change: Callable[[CircuitBreaker], None] | None = None

    def seconds_left(self) -> float:
        """How long an open breaker stays open."""
        if self.state != BreakerState.OPEN or self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.open_s - self.clock())

    def check(self) -> None:
        """Let a call through, taking the half-open probe slot when due; else raise CircuitOpen."""
        if self.threshold <= 0 or self.state == BreakerState.CLOSED:
            return
        if self.state == BreakerState.OPEN and self.seconds_left() <= 0:
            self._set(BreakerState.HALF_OPEN)
        if self.state == BreakerState.HALF_OPEN and not self.probing:
            self.probing = True
            return
        what = (
            "a half-open probe is in flight"
            if self.state == BreakerState.HALF_OPEN
            else f"{self.seconds_left():.1f}s left"
        )
        raise CircuitOpen(f"circuit open for {self.key} ({what}; last error: {self.last_error})")

    def record(self, error: BackendError | None) -> None:
        """Account one finished attempt: ``None`` or a non-retryable error means the endpoint answered."""
        self.probing = False
        if error is None or not error.retryable:
            self.failures = 0
            if self.state != BreakerState.CLOSED:
                self._set(BreakerState.CLOSED)
            return
        self.failures += 1
        self.last_error = scrub(str(error))[:200]  # it is written to the state file and repeated in later errors
        if self.threshold > 0 and (self.state == BreakerState.HALF_OPEN or self.failures >= self.threshold):
            self.opened_at = self.clock()
            self._set(BreakerState.OPEN)

    def release(self) -> None:
        """An attempt was abandoned (cancelled) without a verdict: free the probe slot."""
        self.probing = False

    def _set(self, state: BreakerState) -> None:
        if state != self.state:
            self.state = state
            if self.on_change is not None:
                self.on_change(self)

    def describe(self) -> dict[str, Any]:
        """The breaker as JSON (what ``podium pool status`` shows)."""
        return {
            "state": self.state.value,
            "failures": self.failures,
            "threshold": self.threshold,
            "open_s": self.open_s,
            "opened_at": self.opened_at,
            "seconds_left": round(self.seconds_left(), 3),
            "last_error": self.last_error,
            "updated_at": self.clock(),
        }


def endpoint_key(spec: ModelSpec) -> str:
    """What one breaker guards: the provider endpoint plus the model served there."""
    where = spec.base_url.rstrip("/") if spec.base_url else spec.backend
    return f"{where}#{spec.model or spec.name}"


class BreakerRegistry:
    """One :class:`CircuitBreaker` per endpoint, optionally mirrored to a JSON file.

    With ``path``, every state change is written there (best effort, atomic replace) and a
    breaker seen open by another process starts open here until its open time has passed.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path) if path else None
        self.clock = clock
        self.breakers: dict[str, CircuitBreaker] = {}
        from .state.breakers import breaker_store

        self.shared = breaker_store()  # PODIUM_REDIS_URL: breakers shared by every replica

    def get(self, spec: ModelSpec) -> CircuitBreaker:
        """The breaker of ``spec``'s endpoint, configured from the spec."""
        key = endpoint_key(spec)
        breaker = self.breakers.get(key)
        if breaker is None:
            breaker = CircuitBreaker(key, spec.breaker_threshold, spec.breaker_open_s, self.clock, on_change=self._save)
            self._seed(breaker)
            self.breakers[key] = breaker
        breaker.threshold, breaker.open_s = spec.breaker_threshold, spec.breaker_open_s
        if self.shared is not None:
            self.shared.sync(breaker)
        return breaker

    def _seed(self, breaker: CircuitBreaker) -> None:
        saved = self.load().get(breaker.key)
        if saved and saved.get("state") in ("open", "half_open") and saved.get("opened_at") is not None:
            breaker.state, breaker.opened_at = BreakerState.OPEN, float(saved["opened_at"])
            breaker.last_error = scrub(str(saved.get("last_error") or "")) or None

    def load(self) -> dict[str, dict[str, Any]]:
        """The shared state file's entries (empty when there is none or it is unreadable)."""
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, breaker: CircuitBreaker) -> None:
        if self.shared is not None:
            self.shared.save(breaker)
        if self.path is None:
            return
        data = self.load()
        data[breaker.key] = {**breaker.describe(), "pid": os.getpid()}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(json.dumps(scrub_value(data), indent=1))
            os.chmod(tmp, 0o600)  # an existing temp file keeps its mode through O_CREAT
            os.replace(tmp, self.path)
        except OSError:
            pass  # breaker sharing is an optimisation; never fail a call over it

    def reset(self) -> None:
        """Forget every breaker, here and in the shared file."""
        self.breakers.clear()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def breaker_file() -> Path | None:
    """Where breaker state is shared: ``$PODIUM_BREAKER_FILE`` (empty: nowhere), else
    ``breakers.json`` in ``$PODIUM_HOME``, else in the platform's user data dir."""
    env = os.environ.get(BREAKER_FILE_ENV)
    if env is not None:
        return Path(env) if env else None
    home = os.environ.get("PODIUM_HOME")
    if home:
        return Path(home) / "breakers.json"
    from platformdirs import user_data_dir

    return Path(user_data_dir("podium")) / "breakers.json"


_default: BreakerRegistry | None = None


def default_breakers() -> BreakerRegistry:
    """The process-wide registry engines use unless given their own (rebuilt if its file moved)."""
    global _default
    path = breaker_file()
    if _default is None or _default.path != path:
        _default = BreakerRegistry(path)
    return _default


async def within(timeout_s: float | None, call: Callable[[], Awaitable[T]]) -> T:
    """Run ``call`` under a total time limit, raising BackendTimeout (retryable) when it runs out."""
    if timeout_s is None:
        return await call()
    try:
        async with asyncio.timeout(timeout_s) as scope:
            return await call()
    except TimeoutError:
        if scope.expired():
            raise BackendTimeout(f"no complete answer within {timeout_s}s (total timeout)") from None
        raise


async def protected(breaker: CircuitBreaker, timeout_s: float | None, call: Callable[[], Awaitable[T]]) -> T:
    """One attempt through ``breaker`` under a total timeout; the outcome is recorded on the breaker."""
    breaker.check()
    try:
        result = await within(timeout_s, call)
    except BackendError as exc:
        breaker.record(exc)
        if breaker.state == BreakerState.OPEN:
            exc.retryable = False  # this failure opened the circuit: go to the fallback, do not retry here
        raise
    except BaseException:
        breaker.release()
        raise
    breaker.record(None)
    return result


class StreamSplice:
    """The streamed text of one turn across its attempts (retries and fallbacks).

    ``sent`` is what the caller received. An attempt after a broken stream is asked to continue
    ``sent`` (:meth:`request_for`); if it restarts from the beginning instead, the repeated prefix
    is held back (:meth:`feed`). Tokens of broken attempts are estimated and added to the final
    completion, flagged ``usage_estimated`` (:meth:`failed`, :meth:`finish`).
    """

    def __init__(self) -> None:
        self.sent = ""
        self.base = ""
        self.raw = ""
        self.decided = True
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost_usd = 0.0

    @property
    def charged(self) -> bool:
        """Whether broken attempts consumed tokens that the trace must count."""
        return self.prompt_tokens + self.completion_tokens > 0

    def request_for(self, request: CompletionRequest) -> CompletionRequest:
        """Start an attempt: the request itself, or a request to continue what was already sent."""
        self.base, self.raw, self.decided = self.sent, "", not self.sent
        if not self.sent:
            return request
        extra = [ChatMessage(role="assistant", content=self.sent), ChatMessage(role="user", content=CONTINUE_PROMPT)]
        return request.model_copy(update={"messages": [*request.messages, *extra]})

    def feed(self, text: str) -> str:
        """Take a received piece; return the part the caller has not seen yet (maybe empty)."""
        self.raw += text
        if self.decided:
            self.sent += text
            return text
        if self.base.startswith(self.raw):
            return ""  # so far a word-for-word restart: hold it back
        self.decided = True
        new = self.raw[len(self.base) :] if self.raw.startswith(self.base) else self.raw
        self.sent += new
        return new

    def failed(self, spec: ModelSpec, request: CompletionRequest) -> None:
        """The attempt broke; if it produced text, account its (estimated) tokens and cost."""
        if not self.raw:
            return
        p, c = estimate_prompt_tokens(request.messages), estimate_tokens(self.raw)
        self.prompt_tokens += p
        self.completion_tokens += c
        self.cost_usd += spec.cost(p, c)

    def finish(self, completion: Completion) -> Completion:
        """The final completion: the text the caller received, usage including broken attempts."""
        if not self.charged and completion.text == self.sent:
            return completion
        return completion.model_copy(
            update={
                "text": self.sent,
                "prompt_tokens": completion.prompt_tokens + self.prompt_tokens,
                "completion_tokens": completion.completion_tokens + self.completion_tokens,
                "cost_usd": completion.cost_usd + self.cost_usd,
                "usage_estimated": completion.usage_estimated or self.charged,
            }
        )


TextSink = Callable[[ModelSpec, str], Awaitable[None] | None]


@dataclass
class Attempts:
    """One logical call across its models: every failed attempt, the retries, what broken streams consumed."""

    errors: list[str] = field(default_factory=list)
    retries: int = 0
    splice: StreamSplice = field(default_factory=StreamSplice)


@dataclass
class Served:
    """Which model answered (``index`` 0: the first choice, else a fallback), with what request."""

    completion: Completion
    spec: ModelSpec
    request: CompletionRequest
    index: int


async def call_with_fallbacks(
    specs: list[ModelSpec],
    make_request: Callable[[ModelSpec], CompletionRequest],
    backends: BackendSet,
    breakers: BreakerRegistry,
    attempts: Attempts,
    *,
    retry: RetryPolicy | None = None,
    deadline: float | None = None,
    sink: TextSink | None = None,
) -> Served | None:
    """Try each model in turn (retries, breaker, total timeout each); None when all of them failed.

    With ``sink`` the call streams: new text goes to ``sink`` as it arrives, and a stream that breaks
    is continued on the next attempt without repeating what ``sink`` already got.
    """
    for index, spec in enumerate(specs):
        try:
            request = make_request(spec)
        except ContextOverflow as exc:  # this model cannot take the prompt: the next one may
            attempts.errors.append(f"{spec.name}: {exc}")
            continue
        backend, report = backends.get(spec), CallReport()
        if sink is None:
            once = lambda: backend.complete(request)  # noqa: E731
        else:
            once = lambda: stream_once(backend, request, sink, attempts.splice)  # noqa: E731
        try:
            completion = await with_retries(
                lambda: protected(breakers.get(spec), spec.timeout_s, once),
                retry or RetryPolicy(max_retries=spec.max_retries),
                report,
                deadline,
            )
        except BackendError:
            continue
        finally:
            attempts.errors.extend(f"{spec.name}: {e}" for e in report.errors)  # every failed attempt, retries included
            attempts.retries += report.retries
        return Served(completion, spec, request, index)
    return None


async def stream_once(backend: Backend, request: CompletionRequest, sink: TextSink, splice: StreamSplice) -> Completion:
    """One streaming attempt; after a broken one, the model is asked to continue the text already sent."""
    request = splice.request_for(request)
    try:
        async with aclosing(backend.stream(request)) as deltas:
            async for delta in deltas:
                if delta.completion is not None:
                    return splice.finish(delta.completion)
                if text := splice.feed(delta.text):
                    out = sink(backend.spec, text)
                    if inspect.isawaitable(out):
                        await out
        raise BackendError(f"stream from {backend.spec.name} ended without a final chunk", retryable=True)
    except BaseException:
        splice.failed(backend.spec, request)
        raise
