"""podium.scrub.dumps_scrubbed (every JSON body the server sends): the same text as serializing
scrub_value's output, for values with and without secrets, and the walk skipped only when clean."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import podium.scrub as scrub_module
from podium._secret_shapes import literal_trie
from podium.scrub import REDACTED, dumps_scrubbed, refresh, scrub_value

ODD_SECRET = 'quote"back\\slash\ttab-secret-9'  # JSON escapes three of its characters
PLAIN_SECRET = "plain-secret-value-7731"

VALUES: list[Any] = [
    {"id": "chatcmpl-1", "choices": [{"message": {"content": "the answer is 391"}}], "usage": {"n": 1.5}},
    {"content": f"the key is {PLAIN_SECRET}!"},
    {"content": f"escaped {ODD_SECRET} inside"},
    {f"{PLAIN_SECRET}": "a secret as a dict key"},
    ["sk-proj-Qw3rTy8uIo9pAs7dFg6hJk5lZx4cVb3nM2", 1, None, True],
    {"h": "9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c0b2d4f6e8a1c3e5b7d9f0a2c4e6b8d0f"},
    {"auth": 'Authorization: Bearer abcdefghijklmnop123 {"api_key": "x9y8z7w6v5u4"}'},
    {"lone": "bad \ud800 surrogate", "ok": "naïve ünïcode ✓"},
    {"nested": [{"deep": ["text", {"k": "gsk_8fK2mN4pQ6rS8tU0vW2xY4zA6bC8dE0fG2hJ4"}]}]},
    "just a string",
    {"short": "sk-1"},
    {"tuple": ("a", "b")},
]


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_API_TOKEN", PLAIN_SECRET)
    monkeypatch.setenv("OTHER_SECRET", ODD_SECRET)
    refresh()
    yield
    refresh()


def reference(value: Any, **dumps: Any) -> str:
    return json.dumps(scrub_value(value), ensure_ascii=False, **dumps)


@pytest.mark.parametrize("index", range(len(VALUES)))
def test_same_text_as_scrubbing_then_serializing(secrets_env: None, index: int) -> None:
    value = VALUES[index]
    assert dumps_scrubbed(value) == reference(value)
    assert dumps_scrubbed(value, separators=(",", ":")) == reference(value, separators=(",", ":"))


def test_secrets_never_reach_the_text(secrets_env: None) -> None:
    text = dumps_scrubbed({"a": f"x {PLAIN_SECRET} y", "b": f"x {ODD_SECRET} y", "c": [PLAIN_SECRET]})
    assert PLAIN_SECRET not in text and "back\\\\slash" not in text and text.count(REDACTED) == 3


def test_clean_values_skip_the_walk(secrets_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    walked: list[Any] = []
    real = scrub_module._scrub_value

    def spy(value: Any, regex: Any) -> Any:
        walked.append(value)
        return real(value, regex)

    monkeypatch.setattr(scrub_module, "_scrub_value", spy)
    dumps_scrubbed(VALUES[0])
    assert walked == []  # nothing that scrubbing could change: serialized once, no walk
    dumps_scrubbed(VALUES[1])
    assert walked  # a secret in it: walked and scrubbed


def test_invalid_json_values_behave_as_before() -> None:
    with pytest.raises(ValueError):
        dumps_scrubbed({"x": float("nan")}, allow_nan=False)
    with pytest.raises(ValueError):
        reference({"x": float("nan")}, allow_nan=False)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
pieces = st.sampled_from(
    [PLAIN_SECRET, ODD_SECRET, "Bearer abcdefgh12345678", "sk-abcdefghijklmnop1234", "api_key=zz99", "\ud83d", "0" * 64]
)


@settings(max_examples=300, deadline=None)
@given(json_values, st.lists(pieces, max_size=3), st.text(max_size=20))
def test_any_value_gives_the_reference_text(value: Any, planted: list[str], prefix: str) -> None:
    import os

    os.environ["SOME_API_TOKEN"], os.environ["OTHER_SECRET"] = PLAIN_SECRET, ODD_SECRET
    try:
        refresh()
        value = {"v": value, "planted": [prefix + p for p in planted]}
        assert dumps_scrubbed(value) == reference(value)
    finally:
        del os.environ["SOME_API_TOKEN"], os.environ["OTHER_SECRET"]
        refresh()


@pytest.mark.parametrize("index", [i for i, (t, _) in enumerate(scrub_module.PATTERNS) if t])
def test_every_pattern_match_contains_one_of_its_triggers(index: int) -> None:
    """The triggers are a pre-filter: a text without any of them must never match the pattern."""
    triggers, pattern = scrub_module.PATTERNS[index]

    @settings(max_examples=200, deadline=None)
    @given(st.from_regex(pattern))
    def check(text: str) -> None:
        match = pattern.search(text)
        assert match is not None
        assert any(t in match.group(0).lower() for t in triggers), (text, triggers)

    check()


@pytest.mark.parametrize("words", [["ab", "abc", "b"], ["x"], ["a-b", "a.b", "a"], ["same", "same"]])
def test_literal_trie_matches_each_word_and_nothing_shorter(words: list[str]) -> None:
    trie = re.compile(literal_trie(words))
    for word in words:
        assert trie.fullmatch(word)
        assert not trie.fullmatch(word[:-1]) or word[:-1] in words
    assert not trie.search("zzz")
