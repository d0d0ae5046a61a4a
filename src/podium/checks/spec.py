"""Check specifications (what a grounded verifier tests) and check results.

A :data:`CheckSpec` is a pydantic discriminated union on ``type``; every variant rejects unknown
fields. Parse one from a dict with :func:`parse_check` (errors name the field and the fix).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExactCheck(_Spec):
    """The final answer equals ``answer`` (case, whitespace and trailing punctuation ignored)."""

    type: Literal["exact"] = "exact"
    answer: str


class RegexCheck(_Spec):
    """``pattern`` is found (``re.search``) in the answer. Use ``(?i)`` for case-insensitive."""

    type: Literal["regex"] = "regex"
    pattern: str

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        return value


class NumberCheck(_Spec):
    """The answer's final number (GSM8K ``#### 42``, ``\\boxed{42}``, else the last number) is
    within ``tolerance`` of ``answer``. Commas, ``$`` and ``%`` are ignored."""

    type: Literal["number"] = "number"
    answer: float
    tolerance: float = Field(default=1e-6, ge=0)


class PythonTestsCheck(_Spec):
    """The code in the answer (```python fences, else the raw text) passes ``tests`` (each a Python
    statement, typically an ``assert``), run after ``setup`` in a sandboxed subprocess."""

    type: Literal["python_tests"] = "python_tests"
    tests: list[str] = Field(min_length=1)
    setup: str = ""


CheckSpec = Annotated[ExactCheck | RegexCheck | NumberCheck | PythonTestsCheck, Field(discriminator="type")]
CHECK_ADAPTER: TypeAdapter[ExactCheck | RegexCheck | NumberCheck | PythonTestsCheck] = TypeAdapter(CheckSpec)


def parse_check(data: Any) -> CheckSpec:
    """A CheckSpec from a dict (or an existing spec). Raises pydantic.ValidationError on bad input."""
    if isinstance(data, _Spec):
        return data  # type: ignore[return-value]
    return CHECK_ADAPTER.validate_python(data)


class CheckResult(BaseModel):
    """The outcome of a check.

    ``score`` is the fraction of tests passed (0 or 1 for single-answer checks). ``detail`` is
    what the next worker should read (the failing test and its truncated output). ``contained``
    names what the sandbox stopped, if anything: ``timeout``, ``memory``, ``process_limit``,
    ``file_size``, ``output_truncated``, ``network_blocked``.
    """

    model_config = ConfigDict(extra="forbid")
    passed: bool
    score: float = Field(ge=0.0, le=1.0)
    detail: str = ""
    contained: str | None = None
