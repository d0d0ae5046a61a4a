"""The trace record of one model call: the turn a :class:`~podium.reliability.ModelCall` produced,
answered or failed. The engine's turns and the server's pass-through build them here alike."""

from __future__ import annotations

from .pool import ModelSpec
from .reliability import CallContext, Served
from .types import ChatMessage, Role, Turn
from .verdicts import parse_verdict


def answered_turn(
    number: int,
    role: Role,
    served: Served,
    call: CallContext,
    *,
    reason: str,
    messages: list[ChatMessage],
    first_choice: str,
) -> Turn:
    """The turn of a call a model answered (``fallback_from``: ``first_choice`` if a fallback did)."""
    completion, spec = served.completion, served.spec
    turn = Turn(
        turn=number,
        role=role,
        model=spec.name,
        provider=spec.provider_name,
        region=spec.region,
        reason=reason,
        messages=messages,
        output=completion.text,
        **completion.usage.fields(),
        latency_s=completion.latency_s,
        usage_estimated=completion.usage_estimated,
        retries=call.retries,
        attempts=list(call.errors),
        fallback_from=first_choice if served.index > 0 else None,
        deployment=call.deployment[1] if call.deployment and call.deployment[0] == spec.name else None,
        tool_calls=completion.tool_calls,
    )
    if role == Role.VERIFIER:
        turn.verdict, turn.diagnosis = parse_verdict(completion.text)
    return turn


def failed_turn(
    number: int,
    role: Role,
    model: str,
    call: CallContext,
    *,
    reason: str,
    messages: list[ChatMessage] | None = None,
    spec: ModelSpec | None = None,
    note: str | None = None,
) -> Turn:
    """The turn of a call no model completed (or a budget cut short), with the tokens its broken
    streams consumed; ``spec`` (the first choice's) places the failed call's provider and region."""
    errors, splice = [*call.errors, *([note] if note else [])], call.splice
    return Turn(
        turn=number,
        role=role,
        model=model,
        reason=reason,
        messages=messages or [],
        provider=spec.provider_name if spec else None,
        region=spec.region if spec else None,
        error="; ".join(errors) or "no provider available",
        retries=call.retries,
        attempts=errors,
        output=splice.sent,
        **splice.usage.fields(),
        usage_estimated=splice.charged,
    )
