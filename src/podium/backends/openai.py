"""Any OpenAI-compatible ``/v1/chat/completions`` endpoint (OpenRouter, vLLM, Ollama, llama.cpp server).

Configured by data only: a pool entry with ``backend: openai``, ``base_url``, ``model`` and
``api_key_env``. The httpx client is passed in (shared, pooled); one is made lazily otherwise.
Errors are mapped onto :mod:`podium.errors` with ``retryable`` set by the HTTP status.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Literal

import httpx

from ..errors import BackendError, BackendTimeout, ConfigError, EndpointUnavailable
from ..pool import ModelSpec
from ..scrub import scrub
from ..types import Completion, CompletionRequest, StreamDelta
from ..verdicts import VERDICT_RESPONSE_FORMAT
from ._lean_client import BodyTooLarge, LeanClient, Reply, lean_client, read_limited, read_reply
from .base import make_completion
from .isolation import close_response, isolated, pump

RETRYABLE_STATUS = {408, 409, 429}
MAX_RESPONSE_BYTES = 8 * 1024 * 1024


def _retry_after(value: str) -> float | None:
    """``Retry-After`` in seconds: either delta-seconds or an HTTP date ("" when absent)."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _too_big(url: str) -> BackendError:
    return BackendError(f"response from {url} exceeds {MAX_RESPONSE_BYTES} bytes", retryable=True)


def _status_error(reply: Reply) -> BackendError:
    status = reply.status
    retryable = status in RETRYABLE_STATUS or status >= 500
    body = reply.body.decode(errors="replace")
    return BackendError(
        f"HTTP {status} from {reply.url}: {scrub(body)[:300]}",  # scrubbed before cut: no key half left
        status=status,
        retryable=retryable,
        retry_after=_retry_after(reply.header(b"retry-after")),
    )


class OpenAIBackend:
    """Chat completions over HTTP, streaming via server-sent events."""

    def __init__(self, spec: ModelSpec, client: httpx.AsyncClient | None = None) -> None:
        self.spec = spec
        self._client = client
        self._owns_client = client is None
        self._parsed: tuple[str, httpx.URL] | None = None  # the URL's text and its parse
        self._timeouts: tuple[tuple[float | None, ...], httpx.Timeout] | None = None  # the spec's limits, as httpx's

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = lean_client()
        return self._client

    @property
    def url(self) -> str:
        return self.spec.base_url.rstrip("/") + "/chat/completions"  # type: ignore[union-attr]

    async def check(self) -> str | None:
        """None if the key is set and ``GET {base_url}/models`` answers below HTTP 400, else what is wrong."""
        spec = self.spec
        if spec.api_key_env and not spec.api_key():
            return f"environment variable {spec.api_key_env} is not set"
        url = (spec.base_url or "").rstrip("/") + "/models"
        timeout = httpx.Timeout(5.0, connect=min(spec.connect_timeout_s, 5.0))
        try:
            response = await self.client.get(url, headers=self._headers(), timeout=timeout)
        except httpx.HTTPError as exc:
            return f"cannot reach {url}: {type(exc).__name__}"
        return None if response.status_code < 400 else f"{url} answered HTTP {response.status_code}"

    def _headers(self) -> dict[str, str]:
        key = self.spec.api_key()
        try:
            extra = self.spec.http_headers()  # the pool's headers: (e.g. a data-residency header)
        except ConfigError as exc:
            raise BackendError(str(exc), retryable=False) from None
        return {**extra, "Authorization": f"Bearer {key}"} if key else extra

    def _timeout(self) -> httpx.Timeout:
        spec = self.spec
        limits = (spec.timeout_s, spec.connect_timeout_s, spec.first_byte_timeout_s)
        if self._timeouts is None or self._timeouts[0] != limits:  # made once, not on every call
            read = spec.first_byte_timeout_s or spec.timeout_s
            self._timeouts = (limits, httpx.Timeout(spec.timeout_s, connect=spec.connect_timeout_s, read=read))
        return self._timeouts[1]

    def _body(self, request: CompletionRequest, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.spec.model or self.spec.name,
            "messages": [
                getattr(m, "wire", None) or m.model_dump() for m in request.messages
            ],  # wire: server pass-through
            "max_tokens": request.max_tokens,
            "stream": stream,
            **self.spec.extra_body,
        }
        temperature = request.temperature if request.temperature is not None else self.spec.temperature
        if temperature is not None:
            body["temperature"] = temperature
        if request.stop:
            body["stop"] = request.stop
        if request.response_format:
            body["response_format"] = request.response_format
        body.update(request.passthrough)  # a server pass-through's OpenAI fields (tools, response_format, ...)
        if stream:
            body["stream_options"] = {"include_usage": True}
        if request.structured == "verdict" and self.spec.structured_output:
            body.setdefault("response_format", VERDICT_RESPONSE_FORMAT)
        return body

    def _parsed_url(self) -> httpx.URL:
        url = self.url
        if self._parsed is None or self._parsed[0] != url:
            self._parsed = (url, httpx.URL(url))
        return self._parsed[1]

    async def _send(self, request: CompletionRequest, stream: bool) -> httpx.Response:
        """Send the request; the response's body is still to be read, and must go to :func:`close_response`."""
        client, body, headers = self.client, self._body(request, stream), self._headers()
        if isinstance(client, LeanClient):  # the same request in fewer steps (podium.backends._lean_client)
            return await client.post_json(self._parsed_url(), body, headers, self._timeout())
        http_request = client.build_request("POST", self.url, json=body, headers=headers, timeout=self._timeout())
        return await client.send(http_request, stream=True)

    async def complete(self, request: CompletionRequest) -> Completion:
        started = time.perf_counter()
        client = self.client
        with _mapped_errors(self.url):
            if isinstance(client, LeanClient):  # its cleanup never awaits: no task of its own needed
                body, headers = self._body(request, False), self._headers()
                reply = await client.post_json_read(
                    self._parsed_url(), body, headers, self._timeout(), MAX_RESPONSE_BYTES
                )
            else:  # cancelled at most once: see podium.backends.isolation
                reply = await isolated(self._read(request))
        return self._completion(reply, request, started)

    async def _read(self, request: CompletionRequest) -> Reply:
        return await read_reply(await self._send(request, False), MAX_RESPONSE_BYTES)

    def _completion(self, reply: Reply, request: CompletionRequest, started: float) -> Completion:
        if reply.status >= 400:
            raise _status_error(reply)
        data = _parse_json(reply)
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise BackendError(
                f"unexpected response shape from {self.url}: {scrub(str(data))[:200]}", retryable=True
            ) from None
        usage = data.get("usage") or {}
        completion = make_completion(
            self.spec,
            request,
            text,
            started,
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
            choice.get("finish_reason"),
        )
        if isinstance(choice["message"].get("tool_calls"), list):
            completion.tool_calls = choice["message"]["tool_calls"]
        return with_provider_cost(completion, usage)

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamDelta]:
        async for delta in pump(self._stream(request)):  # read in a task cancelled at most once
            yield delta

    async def _stream(self, request: CompletionRequest) -> AsyncIterator[StreamDelta]:
        started = time.perf_counter()
        parts: list[str] = []
        usage: dict[str, Any] = {}
        finish: str | None = None
        with _mapped_errors(self.url):
            response = await self._send(request, True)
            try:
                if response.status_code >= 400:
                    body = await read_limited(response, MAX_RESPONSE_BYTES)
                    raise _status_error(Reply(response.status_code, response.headers.raw, body, response.request.url))
                async for event in _sse_events(response):
                    usage = event.get("usage") or usage
                    for choice in event.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content") or ""
                        finish = choice.get("finish_reason") or finish
                        if piece:
                            parts.append(piece)
                            yield StreamDelta(text=piece)
            finally:  # every exit: end of stream, error, the consumer closing us, cancellation
                await close_response(response)
        if finish is None:
            raise BackendError(f"stream from {self.url} ended before it finished", retryable=True)
        completion = make_completion(
            self.spec,
            request,
            "".join(parts),
            started,
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
            finish,
        )
        yield StreamDelta(completion=with_provider_cost(completion, usage))

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None


def with_provider_cost(completion: Completion, usage: dict[str, Any]) -> Completion:
    """The provider-reported cost (OpenRouter's ``usage.cost``) over the pool's price table, when present."""
    cost = usage.get("cost")
    if isinstance(cost, int | float) and not isinstance(cost, bool) and cost >= 0:
        completion.cost_usd = float(cost)
    return completion


def _parse_json(reply: Reply) -> dict[str, Any]:
    ctype = reply.header(b"content-type")
    if "json" not in ctype:
        raise BackendError(f"expected JSON from {reply.url}, got content-type '{ctype}'", retryable=True)
    try:
        data = json.loads(reply.body)
    except ValueError:
        raise BackendError(f"malformed JSON from {reply.url}", retryable=True) from None
    if not isinstance(data, dict):
        raise BackendError(f"malformed JSON from {reply.url}: not an object", retryable=True)
    return data


async def _sse_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Parse ``data:`` lines of an SSE stream into JSON objects, stopping at ``[DONE]``."""
    ctype = response.headers.get("content-type", "")
    if "event-stream" not in ctype and "json" not in ctype:
        raise BackendError(f"expected an event stream from {response.request.url}, got '{ctype}'", retryable=True)
    done = False
    async for line in _bounded_lines(response):
        if done or not line.startswith("data:"):
            continue  # after [DONE], read to the end so the connection goes back to the pool
        payload = line[5:].strip()
        if payload == "[DONE]":
            done = True
            continue
        try:
            yield json.loads(payload)
        except ValueError:
            raise BackendError(
                f"malformed SSE event from {response.request.url}: {scrub(payload)[:100]}", retryable=True
            ) from None


async def _bounded_lines(response: httpx.Response) -> AsyncIterator[str]:
    """Lines of a streamed body, refused once the stream exceeds MAX_RESPONSE_BYTES characters."""
    pending: list[str] = []  # pieces of the current line (kept apart: a huge line must not be re-copied)
    total = 0
    async for text in response.aiter_text():
        total += len(text)
        if total > MAX_RESPONSE_BYTES:
            raise BackendError(f"stream from {response.request.url} exceeds {MAX_RESPONSE_BYTES} bytes", retryable=True)
        if "\n" not in text:
            pending.append(text)
            continue
        first, *rest = text.split("\n")
        lines, pending = ["".join([*pending, first]), *rest[:-1]], [rest[-1]]
        for line in lines:
            yield line.rstrip("\r")
    if "".join(pending):
        yield "".join(pending)


class _mapped_errors:
    """Turn httpx exceptions into podium's BackendError family."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if exc is None or isinstance(exc, BackendError):
            return False
        if isinstance(exc, BodyTooLarge):
            raise _too_big(self.url) from None
        if isinstance(exc, httpx.TimeoutException):
            raise BackendTimeout(f"timeout calling {self.url}: {type(exc).__name__}") from None
        if isinstance(exc, (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
            raise EndpointUnavailable(f"cannot reach {self.url}: {type(exc).__name__}: {exc}") from None
        if isinstance(exc, httpx.HTTPError):
            raise BackendError(f"HTTP error calling {self.url}: {exc}", retryable=True) from None
        return False
