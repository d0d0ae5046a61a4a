"""One model answers once: the single-model baseline every benchmark compares against."""

from __future__ import annotations

from ..types import Decision, Role
from .base import RunState


class FixedCoordinator:
    """Sends the query to one worker model (``model``, else the pool's default worker) and stops."""

    def __init__(self, model: str | None = None) -> None:
        self.model = model
        self.name = f"fixed:{model}" if model else "fixed"

    async def decide(self, state: RunState) -> Decision:
        model = self.model or state.pool.default_for(Role.WORKER)
        return Decision(role=Role.WORKER, model=model, reason="single-model baseline", stop_after=True)
