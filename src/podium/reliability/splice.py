"""Splicing a stream that broke midway onto its retry or fallback (see docs/reliability.md).

After a stream broke, the next attempt is asked to *continue* the text the caller already received;
only new text is emitted. :class:`SpliceBackend` is the innermost layer: it runs each streaming
attempt through the :class:`StreamSplice` of the logical call in progress.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from ..backends.base import Backend, estimate_prompt_tokens, estimate_tokens
from ..errors import BackendError
from ..pool import ModelSpec
from ..types import ChatMessage, Completion, CompletionRequest, StreamDelta, Usage
from .context import call_scope, closing

CONTINUE_PROMPT = (
    "Your previous reply was cut off. Continue it exactly where it stops, without repeating anything already written."
)


class StreamSplice:
    """The streamed text of one logical call across its attempts (retries and fallbacks).

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
        self.usage = Usage()

    @property
    def prompt_tokens(self) -> int:
        return self.usage.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self.usage.completion_tokens

    @property
    def cost_usd(self) -> float:
        return self.usage.cost_usd

    @property
    def charged(self) -> bool:
        """Whether broken attempts consumed tokens that the trace must count."""
        return self.usage.total_tokens > 0

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
        self.usage.incr(Usage(prompt_tokens=p, completion_tokens=c, cost_usd=spec.cost(p, c)))

    def finish(self, completion: Completion) -> Completion:
        """The final completion: the text the caller received, usage including broken attempts."""
        if not self.charged and completion.text == self.sent:
            return completion
        total = completion.usage + self.usage
        return completion.model_copy(
            update={
                "text": self.sent,
                **total.fields(),
                "usage_estimated": completion.usage_estimated or self.charged,
            }
        )


class SpliceBackend:
    """The innermost layer: each streaming attempt continues the text the call already delivered
    (the splice of the call in progress, or a fresh one). Non-streaming calls pass through."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.spec = inner.spec

    async def complete(self, request: CompletionRequest) -> Completion:
        return await self.inner.complete(request)

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamDelta]:
        with call_scope() as call:
            splice = call.splice
            request, finished = splice.request_for(request), False
            try:
                async with closing(self.inner.stream(request)) as deltas:
                    async for delta in deltas:
                        if delta.completion is not None:
                            finished, final = True, splice.finish(delta.completion)
                            yield delta if final is delta.completion else StreamDelta(completion=final)
                            return
                        if text := splice.feed(delta.text):  # as received, unless a repeated prefix was cut
                            yield delta if text == delta.text else StreamDelta(text=text)
                raise BackendError(f"stream from {self.spec.name} ended without a final chunk", retryable=True)
            except BaseException:
                if not finished:  # closed after its final chunk: nothing broke
                    splice.failed(self.spec, request)
                raise

    async def aclose(self) -> None:
        await self.inner.aclose()
