"""What a key may still do: expiry, spend budget and tokens per minute, checked before each request
and charged after each run (see :mod:`podium.server.quotas`)."""

from __future__ import annotations

import contextlib
import math
import signal
import time
from asyncio import AbstractEventLoop
from collections.abc import Callable

from ..types import RunResult
from .auth import ApiKey, KeyRing
from .edges import NO_RETRY
from .errors import ApiError
from .quotas import SpendLedger, TokenWindow, period_bounds


class KeyGuard:
    """The per-key quotas of one server (its keys file reloaded as it changes)."""

    def __init__(self, ring: KeyRing, read_spend: Callable[[str, float], float]) -> None:
        self.ring = ring
        self.ledger = SpendLedger(read_spend)
        self.window = TokenWindow()

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
                raise ApiError(
                    429,
                    f"API key '{key.name}' used its {tpm} tokens per minute; retry in {wait:.1f}s",
                    type="rate_limit_error",
                    code="tokens_per_minute_exceeded",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )

    def account(self, key: str, result: RunResult) -> None:
        """Charge a finished run to ``key``: its cost (budget) and all its tokens (TPM)."""
        tokens = result.total_tokens + result.orchestration_prompt_tokens + result.orchestration_completion_tokens
        self.ledger.add(key, result.cost_usd + result.orchestration_cost_usd)
        self.window.add(key, tokens)
