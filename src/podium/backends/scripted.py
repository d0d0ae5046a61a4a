"""A deterministic backend for tests and demos: canned replies in order, or a Python function.

Pool entry::

    - name: echo
      backend: scripted
      replies: ["PLAN: ...", "42", "ACCEPT"]      # cycled
    - name: fn
      backend: scripted
      function: mypkg.fakes:reply                # (CompletionRequest) -> str, sync or async

A reply may start with ``!error`` (raise a non-retryable BackendError), ``!retryable``
(raise a retryable one) or ``!sleep SECONDS`` followed by a newline and the text.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

from ..errors import BackendError, ConfigError
from ..pool import ModelSpec
from ..types import Completion, CompletionRequest, StreamDelta
from .base import estimate_prompt_tokens, estimate_tokens, make_completion

ReplyFn = Callable[[CompletionRequest], object]
CALLS_KEPT = 1000  # the most recent requests kept for inspection (tests); older ones are dropped


def _load_function(ref: str, model: str) -> ReplyFn:
    module_name, _, attr = ref.partition(":")
    try:
        fn: ReplyFn = getattr(importlib.import_module(module_name), attr)
        return fn
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(
            f"model '{model}': function '{ref}' cannot be imported ({exc}); use 'module:callable'"
        ) from None


class ScriptedBackend:
    """Replies from a list (cycled) or from a function of the request."""

    def __init__(self, spec: ModelSpec, function: ReplyFn | None = None) -> None:
        self.spec = spec
        self.calls: deque[CompletionRequest] = deque(maxlen=CALLS_KEPT)  # bounded: a long run must not grow
        self.n_calls = 0
        self._fn = function or (_load_function(spec.function, spec.name) if spec.function else None)
        self._replies = list(spec.replies or [])
        if self._fn is None and not self._replies:
            self._replies = [f"({spec.name}) ok"]

    async def _reply(self, request: CompletionRequest) -> str:
        self.calls.append(request)
        self.n_calls += 1
        if self._fn is not None:
            out = self._fn(request)
            return await out if inspect.isawaitable(out) else str(out)
        return self._replies[(self.n_calls - 1) % len(self._replies)]

    async def _apply_directives(self, text: str) -> str:
        while text.startswith("!"):
            head, _, text = text.partition("\n")
            word, _, arg = head.partition(" ")
            if word == "!sleep":
                await asyncio.sleep(float(arg))
            elif word in ("!error", "!retryable"):
                raise BackendError(
                    arg or f"scripted failure of {self.spec.name}",
                    status=500 if word == "!retryable" else 400,
                    retryable=word == "!retryable",
                )
        return text

    async def complete(self, request: CompletionRequest) -> Completion:
        started = time.perf_counter()
        text = await self._apply_directives(await self._reply(request))
        # A scripted model counts its own usage, so its turns are not flagged as estimated.
        p, c = estimate_prompt_tokens(request.messages), estimate_tokens(text)
        return make_completion(self.spec, request, text, started, p, c, finish_reason="stop")

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamDelta]:
        completion = await self.complete(request)
        for piece in _chunks(completion.text):
            yield StreamDelta(text=piece)
        yield StreamDelta(completion=completion)

    async def aclose(self) -> None:
        return None


def _chunks(text: str, size: int = 8) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]
