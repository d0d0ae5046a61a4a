"""The batch's JSON columns written without the encoder (lists of string-valued dicts: chat messages)
are the very text ``json.dumps(value, ensure_ascii=False)`` writes, and anything else falls back to it."""

from __future__ import annotations

import enum
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from podium.traces._batch import _encode

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(st.dictionaries(st.text(), st.text(), max_size=3), max_size=4) | JSONISH | st.lists(JSONISH, max_size=3)
)
def test_encode_writes_what_json_dumps_writes(value: Any) -> None:
    assert _encode(value) == json.dumps(value, ensure_ascii=False)


def test_messages_with_escapes_quotes_and_non_ascii() -> None:
    messages = [
        {"role": "user", "content": 'a "quote" \\ back\nslash \x00 é 😀 \u2028'},
        {"role": "system", "content": ""},
    ]
    assert _encode(messages) == json.dumps(messages, ensure_ascii=False)
    assert json.loads(_encode(messages)) == messages


def test_str_enums_and_mixed_lists_fall_back_or_match() -> None:
    class Role(str, enum.Enum):
        USER = "user"

    for value in ([{"role": Role.USER, "content": "x"}], [{"a": "b"}, ["c"]], [{"a": 1}], [{1: "x"}], []):
        assert _encode(value) == json.dumps(value, ensure_ascii=False), value
