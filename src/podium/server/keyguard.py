"""What a key may still do: expiry, spend budget and tokens per minute, checked before each request
and charged after each run (see :mod:`podium.server.quotas`)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import time
from asyncio import AbstractEventLoop
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine, Sized
from typing import Any

from ..state.base import SharedState
from ..state.spend import Hold, SpendGate
from ..types import RunResult
from .auth import ApiKey, KeyRing
from .edges import NO_RETRY
from .errors import ApiError
from .quotas import WINDOW_S, SpendLedger, TokenWindow, period_bounds


class KeyGuard:
    """The per-key quotas of one server (its keys file reloaded as it changes)."""

    def __init__(self, ring: KeyRing, read_spend: Callable[[str, float], float]) -> None:
        self.ring = ring
        self.ledger = SpendLedger(read_spend)
        self.window = TokenWindow()
        self.read_spend = read_spend
        self.holds: dict[str, list[Hold]] = {}  # key -> spend holds of its runs in flight here (shared state)
        self.settling: set[asyncio.Task[None]] = set()

    def watch_sighup(self, loop: AbstractEventLoop) -> None:
        """Reload the keys file on SIGHUP (where the platform and thread allow a handler)."""
        if self.ring.path is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError, AttributeError):
                loop.add_signal_handler(signal.SIGHUP, self.ring.reload)

    def expired(self, key: ApiKey) -> None:
        if key.expired():
            raise ApiError(
                401,
                f"API key '{key.name}' expired at {key.expires_at}; ask for a new key",
                type="authentication_error",
                code="key_expired",
                headers=dict(NO_RETRY),
            )

    def admit(self, key: ApiKey) -> None:
        """400 ``budget_exceeded`` when the key's period budget is spent; 429 over its tokens per minute."""
        if self.ring.open:
            return
        budget = key.budget
        if budget is not None:
            spent = self.ledger.spent(key.name, budget)
            if spent >= budget.max_usd:
                _, end = period_bounds(budget.period, time.time())
                reset = {"x-podium-budget-reset": str(int(end))} if end else {}
                raise ApiError(
                    400,
                    f"API key '{key.name}' has spent ${spent:.4f} of its ${budget.max_usd} {budget.period} budget",
                    code="budget_exceeded",
                    headers={**reset, **NO_RETRY},
                )
        tpm = key.rate_limit.tokens_per_minute
        if tpm is not None:
            wait = self.window.wait(key.name, tpm)
            if wait > 0:
                raise tpm_exceeded(key.name, tpm, wait)

    def account(self, key: str, result: RunResult) -> None:
        """Charge a finished run to ``key``: its cost (budget) and all its tokens (TPM)."""
        tokens = result.total_tokens + result.orchestration_prompt_tokens + result.orchestration_completion_tokens
        usd = result.cost_usd + result.orchestration_cost_usd
        if self.holds.get(key):
            self._settle(self.holds[key].pop(0), usd)
        else:
            self.ledger.add(key, usd)
        self.window.add(key, tokens)
        state = self.ring.state
        if state is not None and tokens:  # every replica's tokens in one window
            self._track(state.add(tpm_name(key), float(tokens), WINDOW_S))

    async def aadmit(self, key: ApiKey) -> None:
        """:meth:`admit`; with shared state (``PODIUM_REDIS_URL``) the spend budget is one for every
        replica: the run holds its expected cost until :meth:`account` (or :meth:`release`) settles it,
        and a request finding the rest of the budget held by runs in flight gets a 429 ``budget_busy``."""
        state, budget = self.ring.state, key.budget
        if self.ring.open or state is None:
            return self.admit(key)
        if self.settling:  # this replica's finished runs are counted before the next claim
            await asyncio.gather(*self.settling, return_exceptions=True)
        if budget is None:
            return await self._shared_tpm(state, key)
        now = time.time()
        start, end = period_bounds(budget.period, now)
        hold, claim = await SpendGate(state, self.read_spend).claim(key.name, budget.max_usd, start, end, now)
        if hold is None:
            if claim.committed >= budget.max_usd:
                raise ApiError(
                    400,
                    f"API key '{key.name}' has spent ${claim.committed:.4f} of its ${budget.max_usd} {budget.period} budget",
                    code="budget_exceeded",
                    headers={**({"x-podium-budget-reset": str(int(end))} if end else {}), **NO_RETRY},
                )
            raise ApiError(
                429,
                f"API key '{key.name}': runs in flight may spend the rest of its ${budget.max_usd} budget; retry in 1s",
                type="rate_limit_error",
                code="budget_busy",
                headers={"Retry-After": "1"},
            )
        self.holds.setdefault(key.name, []).append(hold)
        try:
            await self._shared_tpm(state, key)
        except ApiError:
            self.release(key.name)
            raise

    async def _shared_tpm(self, state: SharedState, key: ApiKey) -> None:
        """429 when the key's tokens in the current minute, summed over every replica, reach its limit."""
        tpm = key.rate_limit.tokens_per_minute
        if tpm is None:
            return
        window = await state.reserve(tpm_name(key.name), 0.0, tpm - 0.5, WINDOW_S)  # whole tokens: tpm is over
        if not window.ok:
            raise tpm_exceeded(key.name, tpm, window.retry_s)

    def release(self, key: str) -> None:
        """Give back the spend hold of a request of ``key`` that will not run (refused after admission)."""
        if self.holds.get(key):
            self._settle(self.holds[key].pop(0), None)

    async def release_after(self, key: str, lines: AsyncIterable[Any], settled: Sized) -> AsyncIterator[Any]:
        """A streamed response's ``lines``, releasing ``key``'s spend hold at the end if its run never
        settled it (the client went away first)."""
        try:
            async for line in lines:
                yield line
        finally:
            if not settled:
                self.release(key)

    def _settle(self, hold: Hold, usd: float | None) -> None:
        state = self.ring.state
        if state is not None:
            self._track(SpendGate(state, self.read_spend).settle(hold, usd))

    def _track(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` on the shared state in the background; the next admission waits for it."""
        task = asyncio.get_running_loop().create_task(work)
        self.settling.add(task)
        task.add_done_callback(self.settling.discard)


def tpm_name(key: str) -> str:
    """The shared-state window of a key's tokens per minute."""
    return f"key:{key}:tpm"


def tpm_exceeded(key: str, tpm: int, wait: float) -> ApiError:
    return ApiError(
        429,
        f"API key '{key}' used its {tpm} tokens per minute; retry in {wait:.1f}s",
        type="rate_limit_error",
        code="tokens_per_minute_exceeded",
        headers={"Retry-After": str(max(1, math.ceil(wait)))},
    )
