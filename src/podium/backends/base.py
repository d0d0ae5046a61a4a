"""The backend protocol: one async call over podium's own types, plus its streaming variant."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from ..pool import ModelSpec
from ..types import ChatMessage, Completion, CompletionRequest, StreamDelta


@runtime_checkable
class Backend(Protocol):
    """Talks to one pool model. ``stream`` yields text deltas, then one delta with ``completion``."""

    spec: ModelSpec

    async def complete(self, request: CompletionRequest) -> Completion:
        """Run the request to the end and return the completion with usage and cost."""
        ...

    def stream(self, request: CompletionRequest) -> AsyncIterator[StreamDelta]:
        """Yield the completion as it is produced; the last item carries the full Completion."""
        ...

    async def aclose(self) -> None:
        """Release what the backend holds (connections are usually owned by the caller)."""
        ...


@runtime_checkable
class SupportsCheck(Protocol):
    """A backend that can say, without a chat call, whether its model looks usable."""

    async def check(self) -> str | None:
        """None if the model looks usable (key set, endpoint answers, file present), else what is wrong."""
        ...


async def check_backend(backend: Backend) -> str | None:
    """``backend.check()`` when the backend has one; None (nothing to check) otherwise. A wrapping
    layer (the response cache, reliability layers: an ``inner`` backend) is looked through."""
    while not isinstance(backend, SupportsCheck) and getattr(backend, "inner", None) is not None:
        backend = backend.inner  # type: ignore[attr-defined]
    return await backend.check() if isinstance(backend, SupportsCheck) else None


def estimate_tokens(text: str) -> int:
    """A provider-independent token estimate (about 4 characters a token) for missing usage."""
    return max(1, (len(text) + 3) // 4) if text else 0


def estimate_prompt_tokens(messages: list[ChatMessage]) -> int:
    """Estimated prompt tokens of a chat, with a few tokens of overhead per message."""
    return sum(estimate_tokens(m.content) + 4 for m in messages)


def make_completion(
    spec: ModelSpec,
    request: CompletionRequest,
    text: str,
    started: float,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    finish_reason: str | None = None,
) -> Completion:
    """Build a Completion, estimating usage the provider did not report and pricing it."""
    estimated = prompt_tokens is None or completion_tokens is None
    p = prompt_tokens if prompt_tokens is not None else estimate_prompt_tokens(request.messages)
    c = completion_tokens if completion_tokens is not None else estimate_tokens(text)
    return Completion(
        text=text,
        model=spec.name,
        prompt_tokens=p,
        completion_tokens=c,
        latency_s=time.perf_counter() - started,
        cost_usd=spec.cost(p, c),
        usage_estimated=estimated,
        finish_reason=finish_reason,
    )
