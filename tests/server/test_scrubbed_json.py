"""Every JSON body the server sends (:class:`podium.server.middleware.ScrubbedJSON`): written by
pydantic-core when it is plain JSON, else as Starlette writes it with the secrets scrubbed; the
values are the same either way."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from podium.scrub import REDACTED, dumps_scrubbed, refresh
from podium.server.middleware import ScrubbedJSON

ANSWER: dict[str, Any] = {
    "id": "chatcmpl-0123456789abcdef01234567",
    "object": "chat.completion",
    "created": 1764633600,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": 'é ✓ \x00\n"q" \u2028'}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 20, "completion_tokens": 8, "cost": 1.2e-05, "tiny": 5e-324, "big": 1e300},
    "podium": {"trace_id": "r-1", "models": ["m"], "none": None, "flag": True, "neg": -0.0, 7: (1, 2)},
}


def starlette_way(content: Any) -> bytes:
    """What the server sent before: json.dumps with the secrets scrubbed, as Starlette's settings."""
    return dumps_scrubbed(content, allow_nan=False, indent=None, separators=(",", ":")).encode("utf-8")


def rendered(content: Any) -> bytes:
    return bytes(ScrubbedJSON(content).body)


def test_a_plain_body_holds_the_same_values_compact_and_utf8() -> None:
    body = rendered(ANSWER)
    assert json.loads(body) == json.loads(starlette_way(ANSWER))
    assert b", " not in body and b": " not in body  # compact, as Starlette's
    assert "é ✓".encode() in body  # not \\u-escaped


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_number_is_refused_as_before(value: float) -> None:
    with pytest.raises(ValueError):
        rendered({"usage": {"cost": value}})


def test_a_text_that_says_nan_is_sent_as_it_is() -> None:
    content = {"content": "NaN and -Infinity are not numbers"}
    assert json.loads(rendered(content)) == content


def test_a_lone_surrogate_is_replaced_as_before() -> None:
    content = {"content": "bad \ud800 half"}
    assert rendered(content) == starlette_way(content)
    assert json.loads(rendered(content))["content"] == "bad \ufffd half"


def test_secrets_are_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_UPSTREAM_TOKEN", "value-of-the-upstream-token-42")
    refresh()
    content = {"error": {"message": "upstream said: value-of-the-upstream-token-42 is wrong"}}
    body = rendered(content)
    assert b"value-of-the-upstream-token-42" not in body and REDACTED.encode() in body
    assert body == starlette_way(content)
