"""One spend budget across replicas: runs in flight hold their expected cost until they settle.

A key's spend in its period is one counter in the shared state, seeded from the trace store (the
truth: it survives restarts) the first time a replica needs it and re-read from there every
:data:`RESEED_S`. Checking ``spent < budget`` before a run and adding its cost after is not enough
across replicas (or concurrent requests): every replica would let through the runs in flight at
once. So each admitted run first *claims* a hold of its expected cost (the key's last run's cost;
all that is left of the budget while no run has been priced yet), atomically with the check
``committed + held < budget``, and settles it with its real cost when it ends. A request that finds
the budget held by runs in flight gets a 429 (retry shortly: the budget may still be there), one
that finds it spent a 400. Holds expire after :data:`HOLD_TTL_S`, so a run that never settles (its
process died) cannot block the key for longer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from .base import Claim, SharedState

RESEED_S = 3600.0  # the counter is re-read from the trace store at least this often
HOLD_TTL_S = 600.0  # a hold no run settled (a replica died mid-run) lapses after this


@dataclass(frozen=True)
class Hold:
    """A granted hold, to settle (or release) when its run ends."""

    name: str
    id: str
    amount: float


class SpendGate:
    """Claims and settles spend holds in ``state``; ``read_spend(key, since)`` reads the trace store."""

    def __init__(self, state: SharedState, read_spend: Callable[[str, float], float]) -> None:
        self.state, self.read_spend = state, read_spend

    async def claim(
        self, key: str, limit: float, start: float, end: float | None, now: float
    ) -> tuple[Hold | None, Claim]:
        """Hold the expected cost of one run of ``key`` in the period [``start``, ``end``); the hold is
        None when ``committed + held`` already reaches ``limit``."""
        name = f"spend:{key}:{int(start)}"
        hold_id = uuid.uuid4().hex
        for _ in range(3):
            claim = await self.state.claim(name, hold_id, limit, HOLD_TTL_S)
            if claim is not None:
                return (Hold(name, hold_id, claim.amount) if claim.ok else None), claim
            spent = await asyncio.to_thread(self.read_spend, key, start)
            ttl = RESEED_S if end is None else max(1.0, min(RESEED_S, end - now + 1.0))
            await self.state.seed(name, spent, ttl)
        raise RuntimeError(f"spend counter {name} could not be seeded")  # pragma: no cover - seed then claim

    async def settle(self, hold: Hold, usd: float | None) -> None:
        """End ``hold``: commit the run's cost ``usd`` (None: the run never happened, commit nothing)."""
        await self.state.settle(hold.name, hold.id, usd)
