"""A client's message as podium passes it on (``Message.to_chat``): the view podium accounts for and
the wire form an OpenAI upstream gets. Plain messages take a shortcut; it must give what the general
path gives (the text view of :func:`podium.server.compat.text_view` and the message's own dump)."""

from __future__ import annotations

from typing import Any

import pytest

from podium.server.compat import WireMessage, text_view
from podium.server.schemas import Message


def general(message: Message) -> WireMessage:
    """``to_chat`` by the general path, for any message."""
    calls = [c.model_dump() for c in message.tool_calls or []]
    view = text_view(message.role, message.text(), calls, message.tool_call_id)
    wire = message.model_dump(exclude_none=True)
    if message.role == "developer":
        wire["role"] = "system"
    return WireMessage(role=view.role, content=view.content, wire=wire)


CALL = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}
MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": "What is 17 * 23?"},
    {"role": "system", "content": "Be brief."},
    {"role": "developer", "content": "Be brief."},
    {"role": "assistant", "content": ""},
    {"role": "user", "content": "  "},
    {"role": "user", "content": "hi", "name": "ada"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "assistant", "content": "let me add", "tool_calls": [CALL]},
    {"role": "tool", "content": "2", "tool_call_id": "c1"},
    {"role": "assistant", "content": "no", "refusal": "I cannot"},
    {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "text", "text": " here"}]},
    {"role": "user"},
]


@pytest.mark.parametrize("data", MESSAGES, ids=lambda d: f"{d['role']}-{sorted(d)}")
def test_to_chat_gives_what_the_general_path_gives(data: dict[str, Any]) -> None:
    message = Message.model_validate(data)
    got, want = message.to_chat(), general(message)
    assert isinstance(got, WireMessage)
    assert (got.role, got.content, got.wire) == (want.role, want.content, want.wire)
    assert got.model_dump() == want.model_dump()  # what a trace stores: the wire form stays out


def test_a_developer_message_goes_out_as_system() -> None:
    chat = Message(role="developer", content="Be brief.").to_chat()
    assert (chat.role, chat.wire) == ("system", {"role": "system", "content": "Be brief."})
