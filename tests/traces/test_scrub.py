"""The one scrubber (podium.scrub): key shapes and planted values whatever the variable's name, values
never serialized text (so JSON stays JSON), lone surrogates, the cache, and log records."""

from __future__ import annotations

import json
import logging

import pytest

from podium.pool import parse_pool
from podium.scrub import REDACTED, clean_text, install_log_scrubbing, refresh, scrub, scrub_value

# one key of every common provider shape (made up, right length and alphabet)
SHAPES = {
    "openai": "sk-proj-Qw3rTy8uIo9pAs7dFg6hJk5lZx4cVb3nM2",
    "anthropic": "sk-ant-api03-Zx9cV8bN7mQ6wE5rT4yU3iO2pA1sD0fG",
    "google": "AIzaSyD3xk4Lm5Np6Qr7St8Uv9Wx0Yz1Ab2Cd3E",
    "groq": "gsk_8fK2mN4pQ6rS8tU0vW2xY4zA6bC8dE0fG2hJ4",
    "huggingface": "hf_QwErTyUiOpAsDfGhJkLzXcVbNm1234567",
    "hex64": "9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c0b2d4f6e8a1c3e5b7d9f0a2c4e6b8d0f",
    "xai": "xai-Q1w2E3r4T5y6U7i8O9p0AsDfGhJkL",
    "github": "ghp_1a2B3c4D5e6F7g8H9i0JkLmNoPqRsTuVwX",
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_every_provider_shape_is_scrubbed_by_value(name: str) -> None:
    key = SHAPES[name]
    out = scrub(f"upstream said: invalid key {key}, try again")
    assert key not in out and REDACTED in out
    assert key[:12] not in out


def test_bearer_and_assignments() -> None:
    out = scrub('Authorization: Bearer abcdefghijklmnop123 {"api_key": "x9y8z7w6v5u4"} ?api-key=Zz0123456789&x=1')
    for secret in ("abcdefghijklmnop123", "x9y8z7w6v5u4", "Zz0123456789"):
        assert secret not in out


def test_values_of_pool_key_variables_are_secrets_whatever_their_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    value = "plain-looking-value-0042"  # no provider shape, and the variable's name says nothing
    monkeypatch.setenv("UPSTREAM_SETTING_Q", value)
    assert scrub(f"echo {value}") == f"echo {value}"
    parse_pool(
        "name: p\nmodels:\n  - {name: m, backend: openai, base_url: 'http://127.0.0.1:9/v1', api_key_env: UPSTREAM_SETTING_Q}\n",
        "p",
    )
    assert scrub(f"echo {value}") == f"echo {REDACTED}"


def test_shaped_values_in_innocent_variables_are_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    odd = "Qq1-AIzaSyD3xk4Lm5Np6Qr7St8Uv9Wx0Yz1Ab2Cd3E"  # contains a shape: the whole value goes
    monkeypatch.setenv("BUILD_COLOUR", odd)
    assert odd[:4] not in scrub(f"v={odd}")


def test_cache_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", "first-token-value-1")
    assert REDACTED in scrub("first-token-value-1")
    monkeypatch.setenv("MY_SERVICE_TOKEN", "second-token-value-2")
    refresh()  # changed in place: same number of variables
    assert scrub("second-token-value-2") == REDACTED


def test_a_value_changed_in_place_is_a_secret_without_a_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_OTHER_TOKEN", "first-token-value-3")
    assert scrub("first-token-value-3") == REDACTED
    monkeypatch.setenv("MY_OTHER_TOKEN", "second-token-value-4")  # same variables, one value new
    assert scrub("second-token-value-4") == REDACTED
    assert scrub("first-token-value-3") == "first-token-value-3"  # no longer in the environment


@pytest.mark.parametrize(
    "text", ['api_key=x\\"', 'Authorization: Bearer abcdefgh12345678\\"}', 'say "hi" \\\\ api-key: "k\\"']
)
def test_scrubbing_values_never_breaks_json(text: str) -> None:
    value = {"exclude_models": [text], "nested": [{"error": text}]}
    encoded = json.dumps(scrub_value(value))
    assert json.loads(encoded)["nested"][0]["error"] == scrub(text)  # parses, and holds the scrubbed value


def test_lone_surrogates_become_replacement_characters() -> None:
    assert clean_text("what is \ud800?") == "what is \ufffd?"
    assert clean_text("\ud83d\ude00") == "\U0001f600"  # a valid pair is joined, not replaced
    assert scrub_value({"q": "x\udcff"}) == {"q": "x\ufffd"}
    json.dumps(scrub_value(["\udfff"]), ensure_ascii=False).encode("utf-8")  # encodable now


def test_log_records_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    install_log_scrubbing()
    key = SHAPES["groq"]
    with caplog.at_level(logging.INFO, logger="podium.test"):
        logging.getLogger("podium.test").info("upstream said %s", key)
        try:
            raise ValueError(f"bad key {key}")
        except ValueError:
            logging.getLogger("podium.test").exception("failed")
    assert key not in caplog.text and REDACTED in caplog.text
