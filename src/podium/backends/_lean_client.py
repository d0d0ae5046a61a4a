"""The httpx client podium's upstream calls use: :class:`LeanClient` on :class:`LeanTransport`.

:meth:`LeanClient.post_json` sends podium's JSON posts in fewer steps: the same bytes on the wire,
without httpx's per-request auth, redirect, hook and URL-merging steps when none of them would do
anything. :meth:`LeanClient.post_json_read` goes further for a call whose whole body is wanted at
once (every non-streamed completion): the request head is written once per URL and header set and
reused with each body's length, the response is read to its end on the connection, and no httpx
``Request`` or ``Response`` is built. What comes back is a :class:`Reply`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import httpx

from podium.backends._lean_http import BodyTooLarge, Origin, request_head
from podium.backends.isolation import close_response, isolated
from podium.backends.transport import HTTPTOOLS, LeanTransport

_httpx_log = logging.getLogger("httpx")
__all__ = ["BodyTooLarge", "LeanClient", "Reply", "lean_client", "read_limited", "read_reply"]


@dataclass(slots=True)
class Reply:
    """A response read to its end: status, raw headers (as received), body and the URL asked."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    url: httpx.URL

    def header(self, name: bytes) -> str:
        """The value of the header ``name`` (lower case), its values joined by ", " as httpx joins them; "" if absent."""
        values = [v.decode("latin-1") for n, v in self.headers if n.lower() == name]
        return ", ".join(values)


@dataclass(slots=True, frozen=True)
class _Plan:
    """One URL and header set, prepared once: httpx's headers for it, and the request head as bytes
    around the Content-Length value (None when the caller sets the framing itself)."""

    url: httpx.URL
    headers: httpx.Headers | None
    origin: Origin
    head: tuple[bytes, bytes] | None
    close: bool


def _plan(url: httpx.URL, merged: httpx.Headers) -> _Plan:
    scheme = url.raw_scheme
    origin = (scheme, url.host, url.port or (443 if scheme == b"https" else 80))
    if "content-length" in merged or "transfer-encoding" in merged:
        return _Plan(url, None, origin, None, False)
    template = httpx.Request("POST", url, json=0, headers=merged).headers  # Content-Length: 1, replaced per body
    head: tuple[bytes, bytes] | None = None
    close = False
    if scheme in (b"http", b"https"):
        whole, _, _, close = request_head(httpx.Request("POST", url, headers=template))  # checked once, here
        marker = whole.index(b"\r\n", whole.lower().index(b"\r\ncontent-length: ") + 2)
        head = (whole[: marker - 1], whole[marker:])  # the value "1" cut out
    return _Plan(url, template, origin, head, close)


class LeanClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` on :class:`LeanTransport` that posts JSON in fewer steps (:meth:`post_json`,
    :meth:`post_json_read`)."""

    def __init__(self, *, transport: LeanTransport, **kwargs: Any) -> None:
        super().__init__(transport=transport, **kwargs)
        self.lean = transport
        # Mounted transports (proxies passed as ``mounts``) or a non-default encoding: every request
        # takes httpx's own path. (An httpx without these attributes: the same.)
        self._plain = not getattr(self, "_mounts", True) and getattr(self, "_default_encoding", None) == "utf-8"
        self._plans: dict[tuple[Any, ...], _Plan] = {}

    def _direct(self) -> bool:
        """Whether a post can skip httpx's client steps: none of them would do anything."""
        return (
            self._plain
            and not self.is_closed
            and self.auth is None
            and not self.params
            and not self.follow_redirects
            and not any(self.event_hooks.values())
            and not len(self.cookies.jar)
        )

    def _plan_for(self, url: httpx.URL, headers: dict[str, str]) -> _Plan:
        """The plan for a post of ``headers`` to ``url`` (Host first, then the client's and the call's
        headers, then Content-Length and Content-Type, as httpx's ``Request(json=...)`` orders them)."""
        key = (id(url), tuple(headers.items()), tuple(self.headers.raw))
        hit = self._plans.get(key)
        if hit is not None and hit.url is url:
            return hit
        merged = httpx.Headers(self.headers)
        merged.update(headers)
        plan = _plan(url, merged)
        if len(self._plans) >= 64:  # bounded: URLs and header sets are few (one per backend)
            self._plans.clear()
        self._plans[key] = plan
        return plan

    async def post_json(
        self, url: httpx.URL, body: Any, headers: dict[str, str], timeout: httpx.Timeout
    ) -> httpx.Response:
        """``send(build_request("POST", url, json=body, headers=headers, timeout=timeout), stream=True)``.

        The same request (headers, cookies, body bytes) and the same response, without the client's
        steps that have nothing to do for podium's upstream calls (no auth flow, redirects, hooks,
        query parameters or proxies: checked on each call, and otherwise httpx's own path is taken).
        """
        plan = self._plan_for(url, headers) if self._direct() else None
        if plan is None or plan.headers is None:  # client steps to run, or the caller's own framing
            request = self.build_request("POST", url, json=body, headers=headers, timeout=timeout)
            return await self.send(request, stream=True)
        content = _json_bytes(body)
        filled = httpx.Headers(plan.headers)
        filled["Content-Length"] = str(len(content))
        extensions = {"timeout": timeout.as_dict()}
        request = httpx.Request("POST", url, headers=filled, stream=httpx.ByteStream(content), extensions=extensions)
        request.read()
        response = await self.lean.handle_async_request(request)
        response.request = request
        if "set-cookie" in response.headers or "set-cookie2" in response.headers:
            self.cookies.extract_cookies(response)
        _log(url, response.status_code, response.reason_phrase)
        return response

    async def post_json_read(
        self, url: httpx.URL, body: Any, headers: dict[str, str], timeout: httpx.Timeout, limit: int
    ) -> Reply:
        """:meth:`post_json`, its body read to the end (:class:`BodyTooLarge` past ``limit`` bytes), closed.

        On the direct path nothing here awaits in a cleanup (see :meth:`LeanTransport.exchange`), so
        it runs in the caller's task; otherwise httpx's path runs in an :func:`isolated` task.
        """
        plan = self._plan_for(url, headers) if self._direct() else None
        if plan is None or plan.head is None:
            return await isolated(self._read_via_httpx(url, body, headers, timeout, limit))
        content = _json_bytes(body)
        prefix, suffix = plan.head
        data = b"%b%d%b%b" % (prefix, len(content), suffix, content)
        status, reason, raw, payload = await self.lean.exchange(plan.origin, data, plan.close, timeout.as_dict(), limit)
        if any(n.lower() in (b"set-cookie", b"set-cookie2") for n, _ in raw):  # rare: httpx's objects, for its jar
            request = httpx.Request("POST", url, headers=plan.headers)
            self.cookies.extract_cookies(httpx.Response(status, headers=raw, request=request))
        _log(url, status, reason.decode("ascii", "replace"))
        return Reply(status, raw, payload, url)

    async def _read_via_httpx(
        self, url: httpx.URL, body: Any, headers: dict[str, str], timeout: httpx.Timeout, limit: int
    ) -> Reply:
        return await read_reply(await self.post_json(url, body, headers, timeout), limit)


async def read_limited(response: httpx.Response, limit: int) -> bytes:
    """The body of ``response``, refused (:class:`BodyTooLarge`) once it is, or says it is, over ``limit`` bytes."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"over {limit} bytes")
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_reply(response: httpx.Response, limit: int) -> Reply:
    """``response`` read (:func:`read_limited`) and closed (:func:`close_response`, whatever happens)."""
    try:
        body = await read_limited(response, limit)
    finally:
        await close_response(response)
    return Reply(response.status_code, response.headers.raw, body, response.request.url)


def _json_bytes(body: Any) -> bytes:
    """The body as httpx's ``json=`` writes it."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _log(url: httpx.URL, status: int, reason: str) -> None:
    if _httpx_log.isEnabledFor(logging.INFO):  # httpx's own line for each request
        _httpx_log.info('HTTP Request: %s %s "%s %d %s"', "POST", url, "HTTP/1.1", status, reason)


def _environment_proxies() -> bool:
    names = ("http_proxy", "https_proxy", "all_proxy")
    return any(os.environ.get(n) or os.environ.get(n.upper()) for n in names)


def lean_client(*, max_connections: int = 256, max_keepalive_connections: int = 64, **kwargs: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` on :class:`LeanTransport` (other keyword arguments go to the client).

    ``PODIUM_HTTP_TRANSPORT=httpcore`` gives httpx's default transport instead (same limits), to
    compare the two or to rule this one out; so does a proxy in the environment (``HTTP_PROXY``,
    ``HTTPS_PROXY``, ``ALL_PROXY``, unless ``trust_env=False``), which only that transport honours,
    and an install without httptools (a dependency of podium, also brought by uvicorn[standard]).
    """
    if (
        not HTTPTOOLS
        or os.environ.get("PODIUM_HTTP_TRANSPORT", "lean") == "httpcore"
        or (kwargs.get("trust_env", True) and _environment_proxies())
    ):  # httpx mounts HTTP(S)_PROXY only on a transport it builds itself
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_keepalive_connections)
        return httpx.AsyncClient(limits=limits, **kwargs)
    transport = LeanTransport(max_connections=max_connections, max_keepalive_connections=max_keepalive_connections)
    return LeanClient(transport=transport, **kwargs)
