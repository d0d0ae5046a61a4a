"""What the layers of one logical call share: its deadline, every failed attempt, the retries, and
the stream splice that carries the text the caller already received across attempts.

A logical call (one turn, one pass-through) crosses several layers and attempts: the fallback
layer tries each model, the retry layer repeats attempts, the guard layer records each attempt's
failure, the splice layer continues a broken stream. They meet on one :class:`CallContext`, made
current for the duration of the call (a context variable, so concurrent calls in other tasks
never see each other's), and read back by whoever started the call, even if it was cancelled.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, cast

from ..pool import ModelSpec
from ..types import CompletionRequest, StreamDelta

if TYPE_CHECKING:
    from .splice import StreamSplice


def _new_splice() -> StreamSplice:
    from .splice import StreamSplice  # splice.py builds on this module

    return StreamSplice()


@dataclass
class CallContext:
    """One logical call across its models and attempts.

    ``errors``: every failed attempt as ``"model: error"``, retries included. ``retries``: how many
    times an attempt was repeated. ``splice``: the streamed text and what broken streams consumed.
    ``deadline``: the loop time (``asyncio`` clock) after which no retry starts. Once a model
    answered, ``index`` / ``spec`` / ``request`` say which (``index`` 0: the first choice).
    """

    deadline: float | None = None
    errors: list[str] = field(default_factory=list)
    retries: int = 0
    _splice: StreamSplice | None = field(default=None, repr=False)  # made on first use: most calls never stream
    index: int | None = None
    spec: ModelSpec | None = None
    request: CompletionRequest | None = None
    active: ModelSpec | None = None  # the model being tried now (whose text a stream delivers)
    deployment: tuple[str, str] | None = None  # (model, deployment name) of the deployment that answered

    @property
    def splice(self) -> StreamSplice:
        """The streamed text and what broken streams consumed (made on first use)."""
        if self._splice is None:
            self._splice = _new_splice()
        return self._splice

    @property
    def consumed(self) -> bool:
        """Whether the call got as far as a model: an attempt failed or a broken stream was charged."""
        return bool(self.errors) or (self._splice is not None and self._splice.charged)


_current: ContextVar[CallContext | None] = ContextVar("podium_call", default=None)


def current_call() -> CallContext | None:
    """The context of the logical call in progress in this task, if any."""
    return _current.get()


class call_scope:  # used as a function: ``with call_scope() as call:``
    """Make ``context`` current (a fresh one if None), unless a call is already in progress: a layer
    called by another layer joins the outer call instead of starting its own. (A class rather than a
    ``contextmanager`` generator: every model call enters two of these.)"""

    __slots__ = ("context", "token")

    def __init__(self, context: CallContext | None = None) -> None:
        self.context = context
        self.token: Token[CallContext | None] | None = None

    def __enter__(self) -> CallContext:
        active = _current.get()
        if active is not None and self.context is None:
            return active
        ctx = self.context or CallContext()
        self.token = _current.set(ctx)
        return ctx

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.token is not None:
            try:
                _current.reset(self.token)
            except ValueError:  # an abandoned stream finalized by the event loop runs in another context
                pass


def closing(stream: AsyncIterator[StreamDelta]) -> aclosing[AsyncGenerator[StreamDelta, None]]:
    """``aclosing`` for a backend's stream: every backend's ``stream`` is an async generator, so a
    layer that stops early (or is cancelled) closes the one below at once, not at garbage collection."""
    return aclosing(cast(AsyncGenerator[StreamDelta, None], stream))
