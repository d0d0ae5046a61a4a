"""Cost and identity other tools can read: which model answered, what it cost, whether it was a fallback.

A non-streamed response says it three ways: the body's ``model`` (for a pass-through, the pool
model that answered, a fallback included, as OpenRouter does), ``usage.cost`` (OpenRouter's
field, which LiteLLM reads, next to podium's ``cost_usd``), and headers:

- ``x-podium-served-model``: the model that wrote the answer (a tier: its last worker);
- ``x-podium-cost-usd``: the whole run's cost, the coordinator's included; the same figure as
  ``x-litellm-response-cost``, which LiteLLM's SDK takes as the response cost for any provider;
- ``x-podium-fallback``: ``FROM->TO`` when a fallback answered;
- ``x-podium-deployment``: the name of the deployment that answered (a model with ``deployments:``).
"""

from __future__ import annotations

from ..types import Role, RunResult, Turn


def served_turn(result: RunResult) -> Turn | None:
    """The turn whose output is the answer: the last worker turn without an error."""
    return next((t for t in reversed(result.turns) if t.role == Role.WORKER and not t.error), None)


def served_model(result: RunResult) -> str | None:
    """The pool model whose output is the answer: the last worker turn without an error."""
    turn = served_turn(result)
    return turn.model if turn else None


def identity_headers(result: RunResult) -> dict[str, str]:
    """The served model, total cost and fallback of a finished run, as response headers."""
    cost = f"{result.cost_usd + result.orchestration_cost_usd:.8f}"
    headers = {"x-podium-cost-usd": cost, "x-litellm-response-cost": cost}
    served = served_turn(result)
    if served is not None:
        headers["x-podium-served-model"] = served.model
        if served.deployment:
            headers["x-podium-deployment"] = served.deployment
    fallback = next((t for t in result.turns if t.fallback_from and not t.error), None)
    if fallback is not None:
        headers["x-podium-fallback"] = f"{fallback.fallback_from}->{fallback.model}"
    return headers
