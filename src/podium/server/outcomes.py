"""Which failures a client may retry, and budgets that cannot pay for a single call.

A run that produced no answer has already been through podium's own retries, backoff, circuit
breakers and fallbacks, so a client retrying it only executes the same failing orchestration
again (the ``openai`` SDK retries a 502 twice by default: three runs per call). Every such error
therefore carries ``x-should-retry: false``. A budget (``podium.max_cost_usd`` /
``max_tokens``) too small for any call is the client's to change: a 400 ``budget_exceeded``,
refused before anything runs when the first call's worst case is known not to fit, and after the
run otherwise.
"""

from __future__ import annotations

import math
from typing import Any

from ..backends.base import estimate_tokens
from ..pool import ModelSpec, Pool
from ..types import Role, RunResult, RunStatus
from .edges import NO_RETRY
from .errors import ApiError

PROMPT_OVERHEAD_TOKENS = 4  # the engine's per-message overhead: a worker's prompt has at least one message


def budget_error(message: str, headers: dict[str, str] | None = None) -> ApiError:
    """A 400 ``budget_exceeded`` that SDKs do not retry."""
    return ApiError(400, message, param="podium", code="budget_exceeded", headers={**(headers or {}), **NO_RETRY})


def check_budget_fits(view: Pool, query: str, max_cost_usd: float | None, max_tokens: int | None) -> None:
    """Refuse (400 ``budget_exceeded``) a tier budget that cannot fit one worker call.

    The rule mirrors the engine's (:meth:`podium.coordinators.base.RunState.size_call`): a call is
    made only if its worst case, the prompt plus the model's full ``max_tokens`` at its prices,
    fits what is left. The prompt is estimated from the task alone, so this check never refuses a
    budget the engine would accept; the engine still refuses the rest, answered after the run.
    """
    workers = [view.get(n) for n in view.candidates(Role.WORKER)]
    if not workers:
        return
    prompt = estimate_tokens(query) + PROMPT_OVERHEAD_TOKENS
    if max_tokens is not None and prompt >= max_tokens:
        raise budget_error(
            f"podium.max_tokens {max_tokens} cannot fit any call: the task alone is about {prompt} tokens"
        )
    if max_cost_usd is not None:

        def worst(m: ModelSpec) -> float:
            completion = min(m.max_tokens, max(1, m.context_window - prompt))
            if max_tokens is not None:
                completion = min(completion, max_tokens - prompt)
            return m.cost(prompt, completion)

        cheapest = min(workers, key=worst)
        if worst(cheapest) > max_cost_usd:
            raise budget_error(
                f"max_cost_usd ${max_cost_usd} cannot fit any call: the cheapest allowed worker "
                f"({cheapest.name}) may cost ${worst(cheapest):.6f} for one answer; raise podium.max_cost_usd"
            )


def check_context_fits(view: Pool, query: str) -> None:
    """400 ``context_length_exceeded`` when the task alone cannot fit any allowed worker's context
    window (the engine's rule: prompt plus one completion token; the pass-through checks its own)."""
    workers = [view.get(n) for n in view.candidates(Role.WORKER)]
    prompt = estimate_tokens(query) + PROMPT_OVERHEAD_TOKENS
    if workers and all(prompt + 1 > m.context_window for m in workers):
        widest = max(workers, key=lambda m: m.context_window)
        raise ApiError(
            400,
            f"the conversation (about {prompt} tokens) does not fit the context window of any allowed worker "
            f"(the largest: {widest.name}, {widest.context_window} tokens); shorten it",
            param="messages",
            code="context_length_exceeded",
            headers=dict(NO_RETRY),
        )


def breakers_wait(breakers: list[Any]) -> float | None:
    """Seconds until the first of ``breakers`` lets a call through, if every one of them is open."""
    waits = []
    for breaker in breakers:
        if getattr(getattr(breaker, "state", None), "value", None) != "open":
            return None
        waits.append(float(breaker.seconds_left()))
    return min(waits) if waits else None


def failed_run_error(result: RunResult, headers: dict[str, str], breakers_open_s: float | None = None) -> ApiError:
    """The error for a finished run without an answer: 400 ``budget_exceeded`` when a budget ran out
    before any answer; 503 with ``Retry-After`` when every endpoint it could use has its circuit
    open (a retry after that can help); else 502 ``run_failed``, not worth a client retry."""
    if result.status == RunStatus.BUDGET_EXHAUSTED:
        return budget_error(f"the budget ran out before any answer: {result.reason}", headers)
    if breakers_open_s is not None:
        return ApiError(
            503,
            f"every endpoint this request may use is failing (circuit open); retry in {breakers_open_s:.0f}s: "
            f"{result.reason}",
            type="upstream_error",
            code="upstream_unavailable",
            headers={**headers, "Retry-After": str(max(1, math.ceil(breakers_open_s)))},
        )
    return ApiError(
        502,
        f"the run produced no answer: {result.reason}",
        type="upstream_error",
        code="run_failed",
        headers={**headers, **NO_RETRY},
    )
