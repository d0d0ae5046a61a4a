"""The OpenAI request surface beyond plain chat: which fields are forwarded, ignored or refused.

| field | pass-through model | tier |
|---|---|---|
| ``tools``, ``tool_choice``, ``parallel_tool_calls`` | forwarded; ``tool_calls`` come back | given to every worker call; a worker's tool calls end the run and come back |
| ``response_format`` (``json_object`` / ``json_schema``) | forwarded | given to every worker call, and an instruction added to the task (the verifier sees it) |
| ``reasoning_effort`` | forwarded | ignored (noted) |
| tool-role messages, assistant ``tool_calls`` | forwarded as sent | shown in the transcript as text |
| image parts (``image_url``) | forwarded as sent | 400 ``unsupported_on_tier`` |
| ``metadata``, ``store``, ``service_tier``, ``logprobs``, ``top_logprobs``, ``logit_bias``, ``user``, ``seed``, ``top_p``, penalties | accepted and ignored; named in ``podium.ignored`` | same |
| OpenRouter's ``usage: {include: true}`` | a stream ends with a usage chunk (as ``stream_options.include_usage``); plain answers always carry usage | same |
| ``n`` > 1 | ``n`` runs in parallel, one choice each (not streamed) | same |
| ``modalities`` other than text, ``audio`` | 400 | 400 |

Forwarded messages keep their OpenAI form (:class:`WireMessage`), while podium's accounting,
context-window checks and traces see their text.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ..types import ChatMessage
from .errors import ApiError, bad_request

if TYPE_CHECKING:
    from .schemas import ChatCompletionRequest

IGNORED = (
    "metadata",
    "store",
    "service_tier",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "user",
    "seed",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "prediction",
)
FORWARDED = ("tools", "tool_choice", "parallel_tool_calls", "response_format", "reasoning_effort")
TO_TIER_WORKERS = ("tools", "tool_choice", "parallel_tool_calls", "response_format")
MAX_N = 8  # n parallel runs per request: each is a whole run (and costs one)


class WireMessage(ChatMessage):
    """A chat message as podium sees it (``role``, ``content`` text; what traces store) that an OpenAI
    backend sends in its original form (``wire``: tool roles, ``tool_calls``, image parts)."""

    wire: dict[str, Any] = Field(exclude=True)  # never in traces: tool payloads and images stay out of the store


def text_view(role: str, text: str, tool_calls: list[dict[str, Any]] | None, tool_call_id: str | None) -> ChatMessage:
    """The text a tier, the token estimate and the trace see for one message."""
    if role == "tool":
        return ChatMessage(role="user", content=f"[tool result {tool_call_id or ''}]\n{text}")
    calls = "".join(
        f"\n[called tool {c.get('function', {}).get('name', '?')}({c.get('function', {}).get('arguments', '')})]"
        for c in tool_calls or []
    )
    mapped = "system" if role == "developer" else role
    return ChatMessage(role=mapped, content=text + calls)  # type: ignore[arg-type]


def ignored_fields(request: ChatCompletionRequest, tier: bool) -> list[str]:
    """The fields this request set that podium accepts without acting on them (``podium.ignored``)."""
    names = [f for f in IGNORED if getattr(request, f) is not None]
    if tier and request.reasoning_effort is not None:
        names.append("reasoning_effort")
    return names


def check_request(request: ChatCompletionRequest, tier: bool) -> None:
    """400 for what podium cannot honour: audio, images on a tier, n > 1 streamed or above :data:`MAX_N`."""
    n = request.n or 1
    if n > 1 and request.stream:
        raise bad_request(
            "n > 1 is supported without streaming only; send stream: false or n separate requests",
            param="n",
            code="unsupported_value",
        )
    if n > MAX_N:
        raise bad_request(f"n is at most {MAX_N} (each choice is a whole run)", param="n", code="unsupported_value")
    if (request.modalities and set(request.modalities) != {"text"}) or request.audio is not None:
        raise bad_request("only text output is supported (modalities: ['text'])", param="modalities")
    if tier and any(m.has_images() for m in request.messages):
        raise unsupported_on_tier("messages", request.model, "image parts")


def worker_fields(request: ChatCompletionRequest) -> dict[str, Any]:
    """What a tier's worker calls send as is: the tools and the response format."""
    return upstream_fields(request, TO_TIER_WORKERS)


def unsupported_on_tier(param: str, model: str, what: str | None = None) -> ApiError:
    return ApiError(
        400,
        f"{what or param} are supported on pass-through models only, not on tier '{model}'; "
        "call a pool model by name (GET /v1/models)",
        param=param,
        code="unsupported_on_tier",
    )


def upstream_fields(request: ChatCompletionRequest, names: tuple[str, ...] = FORWARDED) -> dict[str, Any]:
    """The request fields a pass-through forwards to its model (a tier: its workers), as sent."""
    if all(getattr(request, name) is None for name in names):
        return {}  # most requests: nothing to dump (the dump with include= costs 3 µs)
    out = request.model_dump(include=set(names), exclude_none=True)
    if out.get("response_format", {}).get("type") == "text":
        del out["response_format"]
    return out


def format_instruction(response_format: dict[str, Any] | None) -> str:
    """What a tier adds to its task for ``response_format`` ("" for none or plain text)."""
    kind = (response_format or {}).get("type")
    if kind == "json_object":
        return "\n\nAnswer with one JSON object only, no other text."
    if kind == "json_schema":
        schema = (response_format or {}).get("json_schema", {}).get("schema", {})
        return (
            "\n\nAnswer with one JSON object only, no other text, that validates against this JSON schema:\n"
            + json.dumps(schema, sort_keys=True)
        )
    return ""
