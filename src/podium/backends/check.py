"""The ``check`` backend: a pool "model" that is a static check (``check: {type: regex, ...}``).

The engine performs a check model's verifier turns itself (it needs the answer under review, not
a chat); this backend only answers when something asks it to chat, with a clear error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from ..errors import BackendError
from ..pool import ModelSpec
from ..types import Completion, CompletionRequest, StreamDelta


class CheckBackend:
    """Refuses chat calls: a check only verifies, inside a run."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    def _refuse(self) -> BackendError:
        return BackendError(
            f"model '{self.spec.name}' is a check: it only verifies answers inside a run, it cannot chat"
        )

    async def complete(self, request: CompletionRequest) -> Completion:
        raise self._refuse()

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamDelta]:
        raise self._refuse()
        yield StreamDelta()  # pragma: no cover - makes this an async generator

    async def aclose(self) -> None:
        return None
