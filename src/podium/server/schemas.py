"""The OpenAI chat-completions wire format as pydantic models, plus podium's ``podium`` extension.

Requests reject unknown fields (a typo gets a 400, not silence). Responses carry the standard
fields the official ``openai`` client validates, and podium's extras (``usage.orchestration_*``,
a top-level ``podium`` object) that the client keeps as extra attributes.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ..ids import random_hex
from ..pool import Policy
from ..scrub import clean_value
from ..types import ChatMessage
from .compat import WireMessage, text_view
from .routing import ProviderPreferences

MAX_TOKENS_LIMIT = 1_000_000
MAX_STOP_SEQUENCES = 4  # as OpenAI's API: a string or a list of at most 4


class TextPart(BaseModel):
    """A text content part."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ImageUrl(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(BaseModel):
    """An image content part: forwarded to a pass-through model, refused by tiers."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ToolFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    arguments: str = ""


class ToolCall(BaseModel):
    """A tool call an assistant message made (sent back by clients in the conversation)."""

    model_config = ConfigDict(extra="forbid")
    id: str
    type: Literal["function"] = "function"
    function: ToolFunction


class Message(BaseModel):
    """A chat message as clients send it (``developer`` is treated as ``system``)."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text if isinstance(p, TextPart) else "[image]" for p in self.content)

    def _plain(self) -> bool:
        """No field but ``role`` and ``content`` set (its wire form is those two)."""
        return self.name is None and self.tool_calls is None and self.tool_call_id is None and self.refusal is None

    def has_images(self) -> bool:
        return isinstance(self.content, list) and any(isinstance(p, ImagePart) for p in self.content)

    def to_chat(self) -> ChatMessage:
        """The text view podium accounts for, carrying the message as sent for an OpenAI upstream."""
        content = self.content
        if type(content) is str and self.role != "tool" and self._plain():  # most messages: the view is the text
            role = "system" if self.role == "developer" else self.role
            return WireMessage(role=role, content=content, wire={"role": role, "content": content})
        view = text_view(self.role, self.text(), [c.model_dump() for c in self.tool_calls or []], self.tool_call_id)
        wire = self.model_dump(exclude_none=True)
        if self.role == "developer":
            wire["role"] = "system"
        return WireMessage(role=view.role, content=view.content, wire=wire)


class ResponseFormat(BaseModel):
    """``response_format``: ``text``, ``json_object`` or ``json_schema`` (forwarded as sent)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class ToolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    """One function tool a pass-through model may call."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: ToolSpec


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class UsageOptions(BaseModel):
    """OpenRouter's ``usage: {include: true}`` (LiteLLM's ``openrouter/`` models always send it): a
    stream then ends with a usage chunk, cost included, as with ``stream_options.include_usage``."""

    model_config = ConfigDict(extra="forbid")
    include: bool | None = None


class PodiumOptions(Policy):
    """The ``podium`` body field: narrows the key's policy and the tier's budget for one request."""

    model_config = ConfigDict(extra="forbid")
    max_turns: int | None = Field(default=None, ge=1, le=100)
    max_cost_usd: float | None = Field(default=None, gt=0)  # 0 would refuse every call: a client error, not a 502
    max_tokens: int | None = Field(default=None, ge=1, le=100_000_000)
    deadline_s: float | None = Field(default=None, gt=0, le=3600)
    cost_weight: float | None = Field(
        default=None, ge=0, le=1
    )  # learned tiers: 0 = quality … 1 = cost (podium.learned.knob)

    def policy(self) -> Policy:
        """Only the model restrictions."""
        return Policy.model_validate(self.model_dump(include=set(Policy.model_fields)))


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions`` body."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=256)
    messages: list[Message] = Field(min_length=1, max_length=1000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=128)  # n > 1: a 400 that says so (podium.server.compat)
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: int | None = None
    user: str | None = Field(default=None, max_length=256)
    # accepted and ignored (named in the response's podium.ignored)
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = Field(default=None, max_length=32)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    logit_bias: dict[str, float] | None = None
    prediction: dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    # forwarded to a pass-through model (tiers: see podium.server.compat)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    reasoning_effort: str | None = Field(default=None, max_length=32)
    # OpenRouter's routing fields (podium.server.routing)
    models: list[str] | None = Field(default=None, min_length=1, max_length=16)
    provider: ProviderPreferences | None = None
    route: Literal["fallback"] | None = None
    usage: UsageOptions | None = None  # OpenRouter's usage accounting: streams end with usage
    podium: PodiumOptions | None = None

    @model_validator(mode="before")
    @classmethod
    def _clean_text(cls, data: Any, info: ValidationInfo) -> Any:
        """Lone surrogates (valid JSON escapes, invalid text) become U+FFFD at the boundary, so the
        run can be sent upstream, answered and stored like any other. A caller that has checked the
        raw body cannot hold one (:func:`may_hold_surrogates`) passes ``context={"clean_text": False}``."""
        if info.context is not None and info.context.get("clean_text") is False:
            return data
        return clean_value(data)

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and len(value) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        return value

    @property
    def completion_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage) or bool(
            self.usage and self.usage.include
        )


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def may_hold_surrogates(body: bytes) -> bool:
    """Whether ``json.loads(body)`` can give a string with a lone surrogate: from a ``\\uD800``-style
    escape, or (``json.loads`` decodes bytes with ``surrogatepass``) from encoded surrogates, which
    need bytes over 127 in UTF-8, -16 and -32 alike. A body with NUL bytes may be UTF-16 or -32 (how
    ``json.loads`` tells them), whose escapes the search below would not see. False: every string
    ``json.loads`` gives is clean already."""
    return not body.isascii() or b"\x00" in body or _SURROGATE_ESCAPE.search(body) is not None


class Usage(BaseModel):
    """OpenAI usage plus the orchestration's own tokens, counted apart."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    orchestration_input_tokens: int = 0
    orchestration_output_tokens: int = 0
    orchestration_total_tokens: int = 0
    cost_usd: float = 0.0
    orchestration_cost_usd: float = 0.0
    cost: float | None = None  # OpenRouter's name, read by LiteLLM: the whole run, orchestration included
    estimated: bool = False  # some token counts are estimates (4 characters a token), not provider-reported

    @model_validator(mode="after")
    def _total_cost(self) -> Usage:
        if self.cost is None:
            self.cost = round(self.cost_usd + self.orchestration_cost_usd, 8)
        return self


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: None = None
    tool_calls: list[dict[str, Any]] | None = None


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: Literal["stop", "length", "tool_calls"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    """A non-streaming response."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None
    podium: dict[str, Any] = Field(default_factory=dict)


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # each with its ``index``, as OpenAI streams them


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length", "tool_calls"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streaming response."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
    podium: dict[str, Any] | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str
    context_length: int | None = None  # OpenRouter's names, read by LiteLLM and other clients
    pricing: dict[str, str] | None = None
    podium: dict[str, Any] = Field(default_factory=dict)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx body: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorBody


def completion_id() -> str:
    return f"chatcmpl-{random_hex(24)}"
