"""The one scrubber: secrets out of, and well-formed text into, everything that leaves the process.

Every exit applies :func:`scrub_value` (or :func:`scrub` for a lone string) to *values*, before
they are serialized: HTTP responses and errors, SSE events, CLI output, the trace store, the
breaker state file and log records. Scrubbing a value and then serializing it can never break
the serialization (scrubbing serialized JSON can: it may eat the backslash of an escape).

What is a secret, by value and whatever the name of the variable that holds it:

* the value of every environment variable a pool names in ``api_key_env`` (:func:`register_env`
  is called for each pool loaded and each key read);
* the value of any environment variable whose *name* looks like a credential (KEY, TOKEN, ...);
* the value of any environment variable that has a known provider *shape* (below);
* any substring with a known provider shape: ``sk-…``/``sk-ant-…`` (OpenAI, Anthropic, also
  podium's own ``pk-…``), ``AIza…`` (Google), ``gsk_…`` (Groq), ``hf_…`` (Hugging Face), GitHub,
  GitLab, Slack, AWS access key ids, ``xai-…``, ``r8_…``, ``pplx-…``, ``nvapi-…``, 64 hex digits
  (Together, Fireworks-style hex keys), ``Bearer …`` tokens, ``Authorization:`` values and
  ``api_key=…`` / ``api-key: …`` assignments.

Lone UTF-16 surrogates (which cannot be encoded, stored or sent) are replaced by U+FFFD on the
way in (:func:`clean_value` at the request boundary) and again on the way out.

The secret values are cached and rebuilt only when the environment changes (detected by comparing
its raw items with a copy of those the values came from) or a pool registers new names;
:func:`refresh` forces a rebuild.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator
from typing import Any, overload

from pydantic_core import PydanticSerializationError, to_json

from ._secret_shapes import PATTERNS, has_shape, has_trigger, maybe_hex_key

REDACTED = "[REDACTED]"
MIN_SECRET_LEN = 8  # shorter values would redact ordinary words

_SECRET_ENV_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)
_CACHE_MAX_LEN = 64 * 1024  # longer texts are scrubbed without the cache


class _Secrets:
    """The secret values of the environment, cached."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self._seen: tuple[int, dict[Any, Any]] | None = None  # (names, environment) the values came from
        self._values: list[str] = []
        self._regex: re.Pattern[str] | None = None
        self._json_regex: re.Pattern[str] | None = None
        self._name_looks: dict[str, bool] = {}
        self._lock = threading.Lock()

    def register(self, names: Iterable[str | None]) -> None:
        new = {n for n in names if n} - self.names
        if new:
            with self._lock:
                self.names |= new
                self._seen = None

    def _environment(self) -> dict[Any, Any]:
        """The environment's raw items (``os.environ``'s own dict where there is one, not a copy)."""
        raw = getattr(os.environ, "_data", None)
        return raw if isinstance(raw, dict) else dict(os.environ)

    def regex(self) -> re.Pattern[str] | None:
        """One alternation of every secret value (longest first), or None when there is none."""
        now = (len(self.names), self._environment())
        # Compared with a copy of what the values came from: one C-level pass over the raw items,
        # whose values are mostly the very same objects (a hash of them all cost five times as much).
        if now != self._seen:
            with self._lock:
                seen = (now[0], dict(now[1]))
                self._values = self._collect()
                self._regex = re.compile("|".join(map(re.escape, self._values))) if self._values else None
                escaped = [json.dumps(v, ensure_ascii=False)[1:-1] for v in self._values]
                self._json_regex = re.compile("|".join(map(re.escape, escaped))) if escaped else None
                self._seen = seen
        return self._regex

    def json_regex(self) -> re.Pattern[str] | None:
        """:meth:`regex` for the values as they appear inside JSON strings (``ensure_ascii=False``)."""
        self.regex()
        return self._json_regex

    def _collect(self) -> list[str]:
        values = set()
        for name, value in os.environ.items():
            looks = self._name_looks.get(name)
            if looks is None:
                looks = self._name_looks[name] = bool(_SECRET_ENV_NAME.search(name))
            if len(value) >= MIN_SECRET_LEN and (looks or name in self.names or has_shape(value)):
                values.add(value)
        return sorted(values, key=len, reverse=True)

    def refresh(self) -> None:
        self._seen = None


_SECRETS = _Secrets()


_PINNED = threading.local()
_UNSET = object()


@contextlib.contextmanager
def secrets_pinned(patterns: tuple[re.Pattern[str], re.Pattern[str]] | object | None = _UNSET) -> Iterator[None]:
    """Within this block, in this thread, the environment's secrets are looked up once (not once per
    :func:`scrub` call): for code that scrubs many values in a row, such as storing a batch of runs.

    ``patterns``: use these instead (another process's :func:`secrets_pattern`, compiled: the plain
    and the JSON-escaped alternation; None: no secrets); a nested block without them keeps the outer
    block's."""
    previous = getattr(_PINNED, "regex", _UNSET), getattr(_PINNED, "json_regex", _UNSET)
    if patterns is not _UNSET:
        _PINNED.regex, _PINNED.json_regex = patterns if isinstance(patterns, tuple) else (None, None)
    elif previous[0] is _UNSET:
        _PINNED.regex, _PINNED.json_regex = _SECRETS.regex(), _SECRETS.json_regex()
    try:
        yield
    finally:
        _PINNED.regex, _PINNED.json_regex = previous


def _env_regex() -> re.Pattern[str] | None:
    pinned = getattr(_PINNED, "regex", _UNSET)
    return _SECRETS.regex() if pinned is _UNSET else pinned  # type: ignore[return-value]


def secrets_pattern() -> tuple[str, str] | None:
    """The sources of the current secret alternations, plain and JSON-escaped (None when there is no
    secret), for podium's own trace writer process: it scrubs with the secrets of the process that
    submitted the runs."""
    regex, json_regex = _SECRETS.regex(), _SECRETS.json_regex()
    return (regex.pattern, json_regex.pattern) if regex is not None and json_regex is not None else None


def register_env(names: Iterable[str | None]) -> None:
    """Treat the values of these environment variables as secrets (a pool's ``api_key_env`` names)."""
    _SECRETS.register(names)


def refresh() -> None:
    """Forget the cached secret values (after changing a variable in place)."""
    _SECRETS.refresh()


def clean_text(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD (valid pairs are joined), so it can be encoded."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def clean_value(value: Any) -> Any:
    """:func:`clean_text` applied to every string in a JSON-like value (dict keys included)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_value(k): clean_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_value(v) for v in value]
    return value


@overload
def scrub(text: str, secrets: list[str] | None = None) -> str: ...
@overload
def scrub(text: None, secrets: list[str] | None = None) -> None: ...
@overload
def scrub(text: str | None, secrets: list[str] | None = None) -> str | None: ...
def scrub(text: str | None, secrets: list[str] | None = None) -> str | None:
    """``text`` cleaned (:func:`clean_text`) with secrets replaced by ``[REDACTED]``.

    ``secrets``: literal values to remove instead of the environment's (tests).
    """
    if not text:
        return text
    if secrets is not None:
        text = clean_text(text)
        for value in sorted(secrets, key=len, reverse=True):
            text = text.replace(value, REDACTED)
        return _scrub_patterns(text)
    return _scrub(text, _env_regex())


def _scrub(text: str, regex: re.Pattern[str] | None) -> str:
    """:func:`scrub` with the environment's secret alternation already looked up (once per value)."""
    text = clean_text(text)
    if len(text) < MIN_SECRET_LEN:  # shorter than any secret value and any pattern's match
        return text
    if regex is not None:
        text = regex.sub(REDACTED, text)
    return _scrub_patterns(text)


def _scrub_patterns(text: str) -> str:
    """The key-shaped patterns. Pure, so memoized: a run repeats its texts (the query in every
    turn's prompt, the same system prompts in every run), and each is then scanned once."""
    return _scrub_patterns_cached(text) if len(text) <= _CACHE_MAX_LEN else _scrub_patterns_uncached(text)


def _scrub_patterns_uncached(text: str) -> str:
    lower = text.lower()
    hex_key = maybe_hex_key(text)
    for triggers, pattern in PATTERNS:
        if any(t in lower for t in triggers) if triggers else hex_key:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


_scrub_patterns_cached = functools.lru_cache(maxsize=4096)(_scrub_patterns_uncached)


def scrub_value(value: Any) -> Any:
    """:func:`scrub` applied to every string of a JSON-like value (dicts, lists, tuples; keys too).

    Pydantic models are dumped to JSON-like values first. Other values pass unchanged. The
    environment's secrets are looked up once per call, not once per string.
    """
    return _scrub_value(value, _env_regex())


def _scrub_value(value: Any, regex: re.Pattern[str] | None) -> Any:
    if isinstance(value, str):
        return _scrub(value, regex) if value else value
    if isinstance(value, dict):
        return {_scrub_value(k, regex): _scrub_value(v, regex) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub_value(v, regex) for v in value]
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        return _scrub_value(dump(mode="json"), regex)
    return value


def dumps_scrubbed(value: Any, **dumps: Any) -> str:
    """``json.dumps(scrub_value(value), ensure_ascii=False, **dumps)``, cheaper when nothing needs scrubbing.

    The value is serialized first, and the text searched once for what scrubbing any of its strings
    could change: a secret value (in its JSON-escaped form), a pattern's trigger substring, a
    64-hex-digit run, a lone surrogate. JSON escapes character by character, so whatever a string
    holds is in the text too; found (or a value that is not plain JSON), the value is scrubbed as
    :func:`scrub_value` does and serialized again. So the result is always the same text, and the
    walk over every string happens only for values that may hold a secret.
    """
    try:
        text = json.dumps(value, ensure_ascii=False, **dumps)
    except (TypeError, ValueError):
        text = None
    if text is not None and not _may_need_scrub(text):
        return text
    return json.dumps(_scrub_value(value, _env_regex()), ensure_ascii=False, **dumps)


_COMPACT: dict[str, Any] = {"allow_nan": False, "separators": (",", ":")}  # Starlette's JSONResponse settings


def compact_json_scrubbed(value: Any) -> bytes:
    """``dumps_scrubbed(value, allow_nan=False, separators=(",", ":"))`` as UTF-8, the same values,
    written by pydantic-core when the value is plain JSON (2 µs for an answer where json.dumps takes
    12); a float may be spelled otherwise (``0.000012`` for ``1.2e-05``). The rest goes the
    json.dumps way: a lone surrogate or a value JSON cannot hold (pydantic-core raises), a
    non-finite float (json.dumps refuses it), a text to scrub (the same search as
    :func:`dumps_scrubbed`'s)."""
    try:
        raw: bytes | None = to_json(value, inf_nan_mode="constants")
    except (PydanticSerializationError, ValueError, TypeError):
        raw = None
    if raw is None or b"NaN" in raw or b"Infinity" in raw:  # also a non-finite float (or a text that says so)
        return dumps_scrubbed(value, **_COMPACT).encode()
    if _may_need_scrub(raw.decode()):
        return json.dumps(_scrub_value(value, _env_regex()), ensure_ascii=False, **_COMPACT).encode()
    return raw


def _may_need_scrub(text: str) -> bool:
    """Whether scrubbing the strings serialized in ``text`` could change any of them."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: clean_text replaces it
            return True
    pinned = getattr(_PINNED, "json_regex", _UNSET)
    secrets: re.Pattern[str] | None = _SECRETS.json_regex() if pinned is _UNSET else pinned  # type: ignore[assignment]
    if secrets is not None and any(value in text for value in alternatives(secrets.pattern)):
        return True
    return has_trigger(text.lower()) or maybe_hex_key(text)


@functools.lru_cache(maxsize=16)
def alternatives(pattern: str) -> tuple[str, ...]:
    """The literals of an alternation of :func:`re.escape`'d strings (the secrets'): ``value in text``
    for each finds what the regex finds, far faster once the values start with different characters
    (the regex engine then tries its matcher at every position)."""
    values, current, escaped = [], [], False
    for char in pattern:
        if escaped:
            current.append(char)  # re.escape escapes a character by a backslash before it, nothing else
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "|":
            values.append("".join(current))
            current = []
        else:
            current.append(char)
    values.append("".join(current))
    return tuple(values)


# --- logs --------------------------------------------------------------------------------------

_installed = False


def install_log_scrubbing() -> None:
    """Scrub every log record of this process (message, arguments and traceback) when it is made.

    Done with a record factory, so records of every logger (uvicorn's included) are covered,
    whatever handler writes them. Idempotent.
    """
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to logging's own error path
            return record
        record.msg, record.args = scrub(message), None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
